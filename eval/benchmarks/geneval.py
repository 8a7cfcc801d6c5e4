"""GenEval (Ghosh et al. 2023) image rules: ``evaluate_image`` / ``evaluate`` of its ``evaluate_images.py``.

Boxes are scaled to ``image_size`` pixels because GenEval's IoU counts the +1 pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from scenewright.eval.boxes import by_score, to_pixels
from scenewright.eval.detection import Detection
from scenewright.eval.suites import BenchItem

GENEVAL_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")


def _geneval_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """GenEval ``compute_iou`` on pixel boxes (areas count the +1 pixel)."""
    area = lambda box: max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)  # noqa: E731
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def geneval_relative_position(a: Sequence[float], b: Sequence[float], *, position_threshold: float = 0.1) -> set[str]:
    """GenEval ``relative_position``: A's relations to B by centre offset, shrunk by threshold x (size A + size B) per axis."""
    center_a = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    center_b = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    dims = np.abs(np.array([a[2] - a[0], a[3] - a[1]])) + np.abs(np.array([b[2] - b[0], b[3] - b[1]]))
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def geneval_kept(
    detections: Sequence[Detection],
    tag: str,
    *,
    threshold: float = 0.3,
    counting_threshold: float = 0.9,
    max_objects: int = 16,
    nms_threshold: float = 1.0,
    image_size: int | tuple[int, int] = 512,
) -> dict[str, list[Detection]]:
    """GenEval ``evaluate_image``: per class, detections above the confidence (0.9 for counting), best first, NMS'd."""
    confidence = counting_threshold if tag == "counting" else threshold
    by_class: dict[str, list[Detection]] = {}
    for d in by_score(detections):
        if d.score > confidence:
            by_class.setdefault(d.name, []).append(d)
    kept: dict[str, list[Detection]] = {}
    for name, found in by_class.items():
        order, chosen = found[:max_objects], []
        while order:
            best = order.pop(0)
            chosen.append(best)
            if nms_threshold != 1:
                pb = to_pixels(best.box, image_size)
                order = [d for d in order if _geneval_iou(pb, to_pixels(d.box, image_size)) < nms_threshold]
        kept[name] = chosen
    return kept


def geneval_correct(
    detections: Sequence[Detection],
    metadata: Mapping,
    *,
    threshold: float = 0.3,
    counting_threshold: float = 0.9,
    max_objects: int = 16,
    nms_threshold: float = 1.0,
    position_threshold: float = 0.1,
    image_size: int | tuple[int, int] = 512,
) -> tuple[bool | None, str]:
    """GenEval ``evaluate``: each include clause found count times (color, position on the most confident), no exclude clause met.

    Colors are the detections' ``color`` (GenEval classifies crops with CLIP; a detector or
    :meth:`scenewright.eval.clip_score.ClipScorer.color_detections` fills them in). Returns ``(None, reason)`` when a clause needs a color
    that the detections do not carry: the detector cannot judge it.
    """
    for field_name in ("tag", "include"):
        if field_name not in metadata:
            raise ValueError(f"GenEval metadata needs {field_name!r} (see evaluation_metadata.jsonl), got keys {sorted(metadata)}")
    objects = geneval_kept(
        detections, metadata["tag"], threshold=threshold, counting_threshold=counting_threshold,
        max_objects=max_objects, nms_threshold=nms_threshold, image_size=image_size,
    )  # fmt: skip
    correct, reasons, groups = True, [], []
    for req in metadata["include"]:
        name, count = req["class"], req["count"]
        found = objects.get(name, [])[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = [d.color for d in found]
                if any(c is None for c in colors):
                    return None, f"color of {name} not judged: the detections carry no color"
                if colors.count(req["color"]) < count:
                    correct = matched = False
                    reasons.append(f"expected {req['color']} {name}>={count}, found {colors.count(req['color'])} {req['color']}")
            if "position" in req and matched:
                relation, target = req["position"]
                if groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for d in found:
                        for t in groups[target]:
                            rels = geneval_relative_position(
                                to_pixels(d.box, image_size), to_pixels(t.box, image_size), position_threshold=position_threshold
                            )
                            if relation not in rels:
                                correct = matched = False
                                reasons.append(f"expected {name} {relation} target, found {' and '.join(sorted(rels))} target")
                                break
                        if not matched:
                            break
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        if len(objects.get(req["class"], [])) >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {len(objects[req['class']])}")
    return correct, "\n".join(reasons)


# ----------------------------------------------------------------------------- bench scorer
def geneval_scores(item: BenchItem, image, detections: list[Detection]) -> dict:
    """GenEval on one bench image: 1.0 / 0.0, None when a color clause cannot be judged."""
    correct, _reason = geneval_correct(detections, item.info["metadata"], image_size=(image.height, image.width))
    return {"geneval": None if correct is None else float(correct)}
