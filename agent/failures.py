"""What an image gets wrong, in words: for ``report.json`` and for the planner's re-plan feedback.

The numbers come from :func:`scenewright.eval.scores.score_layout_image`; this words the same checks (counts and
relations by :func:`scenewright.layout.relations.requirement_failures` on the detections that fit the layout, wrong
colors, planned boxes not drawn) so that an LLM planner can be told what to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from scenewright.eval.detection import Detection
from scenewright.eval.scores import detections_layout, fitting_detections, planned_matches
from scenewright.layout.parse import parse_prompt
from scenewright.layout.relations import requirement_failures
from scenewright.layout.schema import Layout

#: IoU at which a planned box counts as drawn (the scores' ``box_iou50``).
IOU_HIT = 0.5


def image_failures(detections: Sequence[Detection], layout: Layout) -> list[str]:
    """Broken counts and relations, detections of a color the prompt does not ask for, planned boxes not drawn."""
    fitting = fitting_detections(detections, layout)
    failures = requirement_failures(parse_prompt(layout.prompt), detections_layout(fitting, layout.prompt))
    words = [message.replace("the layout has", "the image has") for key, message in failures if key[0] in ("count", "relation")]
    fitting_ids = {id(d) for d in fitting}
    words += [f"the image shows {d.phrase}, a color the prompt does not ask for" for d in detections if id(d) not in fitting_ids]
    matched = {i: iou for i, _, iou in planned_matches(detections, layout)}
    for i, obj in enumerate(layout.objects):
        iou = matched.get(i, 0.0)
        if iou < IOU_HIT:
            box = [round(v, 2) for v in obj.box]
            found = f"no {obj.name} of a fitting color was found" if i not in matched else f"the closest overlaps it by IoU {iou:.2f}"
            words.append(f"'{obj.phrase}' planned at {box} was not drawn there ({found})")
    return words


__all__ = ["IOU_HIT", "image_failures"]
