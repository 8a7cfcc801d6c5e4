"""How well an image's detections match the layout it was drawn from: counts, relations and boxes.

STAND-IN for ``eval.scores.score_layout_image`` (being written on the eval branch): same signature
``(detections, layout) -> {"count_acc", "spatial_acc", "box_iou50", "mean_iou"}``. At merge, the lead
swaps :func:`score_layout_image` for the eval one (``agent.loop`` imports it from here only) and keeps
:func:`image_failures`, which words the same checks for the report and the re-planning feedback.

- ``count_acc``: the fraction of the prompt's object groups (:func:`layout.parse.parse_prompt`) whose
  detected count is exactly the asked one. A detection counts for a group of its kind only when its
  color (if the detector reports one) is the group's or the group names none: a purple circle is
  not one of "two red circles".
- ``spatial_acc``: the fraction of the prompt's relations that hold between the detected boxes
  (:func:`layout.relations.requirement_failures`, the planner's own predicates); 1.0 without relations.
- ``box_iou50`` / ``mean_iou``: each planned box is matched to at most one detection of its kind
  of a fitting color (as above), greedy by IoU; the fraction matched with IoU >= 0.5, and the mean IoU of the planned boxes (0 for a box with no match).
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.detect import Detection
from eval.shapes.detector import box_iou
from layout.parse import COLORS, parse_prompt
from layout.relations import requirement_failures
from layout.schema import Layout, LayoutObject
from layout.spec import PromptSpec

#: IoU at which a planned box counts as drawn.
IOU_HIT = 0.5


def color_fits(color: str | None, phrase: str) -> bool:
    """A detected ``color`` fits ``phrase`` when the phrase names no color or names this one."""
    named = [word for word in phrase.lower().split() if word in COLORS]
    return color is None or not named or color in named


def detections_to_layout(detections: Sequence[Detection], prompt: str) -> Layout:
    """The detected objects as a :class:`~layout.schema.Layout` of ``prompt``, so the layout predicates apply."""
    objects = [LayoutObject(name=d.name, phrase=d.phrase, box=d.box) for d in detections]
    return Layout(prompt=prompt, objects=tuple(objects))


def match_boxes(detections: Sequence[Detection], layout: Layout) -> list[tuple[int | None, float]]:
    """Per planned object: ``(index of its detection or None, IoU)``; one detection serves one object."""
    pairs = []
    for i, obj in enumerate(layout.objects):
        for j, det in enumerate(detections):
            if det.name == obj.name and color_fits(det.color, obj.phrase):
                pairs.append((box_iou(obj.box, det.box), i, j))
    pairs.sort(reverse=True)
    matched: list[tuple[int | None, float]] = [(None, 0.0)] * len(layout.objects)
    used_objects, used_detections = set(), set()
    for iou, i, j in pairs:
        if i in used_objects or j in used_detections or iou <= 0:
            continue
        matched[i] = (j, iou)
        used_objects.add(i)
        used_detections.add(j)
    return matched


def _spec_checks(detections: Sequence[Detection], layout: Layout) -> tuple[PromptSpec, list[tuple[tuple, str]], list[Detection]]:
    """The prompt's spec, what the fitting detections break of it, and the detections of a wrong color."""
    spec = parse_prompt(layout.prompt)
    groups = {}
    for object_spec in spec.objects:
        groups.setdefault(object_spec.name, []).append(object_spec.phrase)
    fits = [any(color_fits(d.color, phrase) for phrase in groups.get(d.name, [""])) for d in detections]
    fitting = [d for d, ok in zip(detections, fits) if ok]
    wrong_color = [d for d, ok in zip(detections, fits) if not ok]
    return spec, requirement_failures(spec, detections_to_layout(fitting, layout.prompt)), wrong_color


def score_layout_image(detections: Sequence[Detection], layout: Layout) -> dict[str, float]:
    """``{"count_acc", "spatial_acc", "box_iou50", "mean_iou"}`` of ``detections`` against ``layout`` (module docstring)."""
    spec, failures, _ = _spec_checks(detections, layout)
    keys = {key for key, _ in failures}
    groups = len(spec.objects)
    relations = len(spec.relations)
    count_acc = sum(("count", g) not in keys for g in range(groups)) / groups if groups else 1.0
    spatial_acc = sum(("relation", r) not in keys for r in range(relations)) / relations if relations else 1.0
    ious = [iou for _, iou in match_boxes(detections, layout)]
    return {
        "count_acc": float(count_acc),
        "spatial_acc": float(spatial_acc),
        "box_iou50": float(sum(iou >= IOU_HIT for iou in ious) / len(ious)) if ious else 1.0,
        "mean_iou": float(sum(ious) / len(ious)) if ious else 1.0,
    }


def image_failures(detections: Sequence[Detection], layout: Layout) -> list[str]:
    """What the image gets wrong, in words: broken counts and relations, then planned boxes not drawn."""
    _, failures, wrong_color = _spec_checks(detections, layout)
    words = [message.replace("the layout has", "the image has") for key, message in failures if key[0] in ("count", "relation")]
    words += [f"the image shows {d.phrase}, a color the prompt does not ask for" for d in wrong_color]
    for obj, (index, iou) in zip(layout.objects, match_boxes(detections, layout)):
        if iou < IOU_HIT:
            box = [round(v, 2) for v in obj.box]
            found = f"no {obj.name} of a fitting color was found" if index is None else f"the closest overlaps it by IoU {iou:.2f}"
            words.append(f"'{obj.phrase}' planned at {box} was not drawn there ({found})")
    return words


__all__ = ["IOU_HIT", "detections_to_layout", "image_failures", "match_boxes", "score_layout_image"]
