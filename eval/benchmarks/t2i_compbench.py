"""T2I-CompBench (Huang et al. 2023) image rules: UniDet 2D-spatial and numeracy scores.

Boxes are scaled to ``image_size`` pixels where a rule has a pixel constant (the 150 px distance,
+1 pixel areas).
"""

from __future__ import annotations

from collections.abc import Sequence

from scenewright.eval.boxes import Box, to_pixels
from scenewright.eval.detection import Detection
from scenewright.eval.suites import BenchItem
from scenewright.layout.parse import parse_prompt

T2I_SPATIAL_WORDS = ("on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of", "on the top of", "on top of")
_T2I_PERSON = ("girl", "boy", "man", "woman")


def t2i_spatial_locality(prompt: str) -> str | None:
    """T2I-CompBench's locality word: the first of :data:`T2I_SPATIAL_WORDS` found in the prompt."""
    return next((word for word in T2I_SPATIAL_WORDS if word in prompt), None)


def t2i_position_score(locality: str | None, a: Sequence[float], b: Sequence[float], *, iou_threshold: float = 0.1, distance_threshold: float = 150) -> float:
    """T2I-CompBench ``determine_position`` on pixel boxes: 1 when A is placed right, iou_threshold / IoU when they overlap more.

    'on top of' is in T2I-CompBench's vocabulary but not in this function, so it scores 0, as there.
    """
    dx = (b[0] + b[2]) / 2 - (a[0] + a[2]) / 2
    dy = (b[1] + b[3]) / 2 - (a[1] + a[3]) / 2
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    overlap = 1.0 if iou < iou_threshold else iou_threshold / iou
    if locality in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    if locality == "on the right of":
        return overlap if dx < 0 and abs(dx) > abs(dy) else 0.0
    if locality == "on the left of":
        return overlap if dx > 0 and abs(dx) > abs(dy) else 0.0
    if locality == "on the bottom of":
        return overlap if dy < 0 and abs(dy) > abs(dx) else 0.0
    if locality == "on the top of":
        return overlap if dy > 0 and abs(dy) > abs(dx) else 0.0
    return 0.0


def t2i_spatial_score(
    detections: Sequence[Detection], obj1: str, obj2: str, locality: str | None, *, image_size: int | tuple[int, int] = 512
) -> float:
    """T2I-CompBench 2D-spatial (``UniDet_eval/2D_spatial_eval.py``): 0.25 x each found object's confidence + position / 2; < 0.5 -> 0."""
    obj1 = "person" if obj1 in _T2I_PERSON else obj1
    obj2 = "person" if obj2 in _T2I_PERSON else obj2
    names = [d.name for d in detections]
    if obj1 in names and obj2 in names:
        d1, d2 = detections[names.index(obj1)], detections[names.index(obj2)]
        position = t2i_position_score(locality, to_pixels(d1.box, image_size), to_pixels(d2.box, image_size))
        score = 0.25 * d1.score + 0.25 * d2.score + position / 2
    elif obj1 in names:
        score = 0.25 * detections[names.index(obj1)].score
    elif obj2 in names:
        score = 0.25 * detections[names.index(obj2)].score
    else:
        score = 0.0
    return 0.0 if score < 0.5 else score


def _t2i_same_box(a: Sequence[float], b: Sequence[float]) -> bool:
    """T2I-CompBench numeracy ``calculate_iou``: IoU > 0.9 or either box 90% inside the other (+1 pixel areas)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter) > 0.9 or inter / area_a > 0.9 or inter / area_b > 0.9


_T2I_ALIASES = {"boy": "person", "girl": "person", "man": "person", "woman": "person", "ship": "boat", "telivision": "tv",
                "goldfish": "fish", "painting": "picture"}  # fmt: skip


def t2i_numeracy_score(
    detections: Sequence[Detection], objects: Sequence[tuple[str, int]], *, image_size: int | tuple[int, int] = 512
) -> float:
    """T2I-CompBench numeracy (``UniDet_eval/numeracy_eval.py``): per object 0.5 if present + 0.5 if its de-duplicated count is exact."""
    if not objects:
        raise ValueError("`objects` is empty; give the prompt's (object, count) pairs")
    names: list[str] = []
    boxes: list[Box] = []
    for d in detections:  # drop a box that repeats a kept box of the same kind
        box = to_pixels(d.box, image_size)
        if not any(n == d.name and _t2i_same_box(box, b) for n, b in zip(names, boxes)):
            names.append(d.name)
            boxes.append(box)
    weight, score = 1.0 / len(objects), 0.0
    for name, count in objects:
        name = _T2I_ALIASES.get(name, name)
        if name not in names:  # T2I-CompBench renames detections whose class contains the asked word
            names = [name if name in n else n for n in names]
        if name in names:
            score += 0.5 * weight
            if names.count(name) == count:
                score += 0.5 * weight
    return score


# ----------------------------------------------------------------------------- bench scorers
def t2i_spatial_scores(item: BenchItem, image, detections: list[Detection]) -> dict:
    """T2I-CompBench 2D-spatial on one bench image, the two objects and the locality read from its prompt."""
    objects = parse_prompt(item.prompt).objects
    if len(objects) < 2:
        return {"t2i_spatial": None}  # the parser did not find the two objects: cannot judge
    score = t2i_spatial_score(detections, objects[0].name, objects[1].name, t2i_spatial_locality(item.prompt),
                              image_size=(image.height, image.width))  # fmt: skip
    return {"t2i_spatial": score}


def t2i_numeracy_scores(item: BenchItem, image, detections: list[Detection]) -> dict:
    """T2I-CompBench numeracy on one bench image, the (object, count) pairs read from its prompt."""
    objects = [(o.name, o.count) for o in parse_prompt(item.prompt).objects]
    if not objects:
        return {"t2i_numeracy": None}
    return {"t2i_numeracy": t2i_numeracy_score(detections, objects, image_size=(image.height, image.width))}
