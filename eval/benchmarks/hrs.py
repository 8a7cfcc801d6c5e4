"""HRS-Bench (Bakr et al. 2023) image rules: counting, spatial, size and hue-based color, as its scripts judge them.

Boxes are the detections' normalized xyxy boxes (y down); HRS compares box edges and areas, so no
pixel scale is needed except for the color rule, which reads the image's pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from scenewright.eval.boxes import Box, detection_region
from scenewright.eval.detection import Detection
from scenewright.eval.suites import BenchItem


def _image_array(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array of a PIL image or array."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim != 3 or array.shape[2] < 3:
        raise ValueError(f"`image` must be RGB (H, W, 3), got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)
    return array[..., :3]


def opencv_hue(image) -> np.ndarray:
    """Per-pixel hue on OpenCV's 8-bit scale (0..179, degrees / 2), as ``cv2.cvtColor(..., COLOR_BGR2HSV)[..., 0]``."""
    rgb = _image_array(image).astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    diff = v - rgb.min(axis=-1)
    safe = np.where(diff == 0, 1.0, diff)
    hue = np.where(v == r, 60 * (g - b) / safe, np.where(v == g, 120 + 60 * (b - r) / safe, 240 + 60 * (r - g) / safe))
    hue = np.where(diff == 0, 0.0, hue % 360)
    return np.round(hue / 2) % 180



def hrs_counting_counts(detections: Sequence[Detection], expected: Mapping[str, int]) -> tuple[int, int, int]:
    """HRS counting (``calc_counting_acc.py`` ``cal_acc``): (TP, FP, FN) with TP = min(gt, pred) per object kind."""
    tp = fp = fn = 0
    for name, gt in expected.items():
        pred = sum(d.name == name for d in detections)
        tp += min(gt, pred)
        fp += max(pred - gt, 0)
        fn += max(gt - pred, 0)
    return tp, fp, fn


def hrs_counting_prf(counts: Iterable[tuple[int, int, int]]) -> dict[str, float]:
    """HRS counting precision, recall and F1 pooled over images (0 where nothing was predicted or expected)."""
    tp = fp = fn = 0
    for a, b, c in counts:
        tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


_HRS_ABOVE = ("on", "above", "over")
_HRS_BELOW = ("below", "beneath", "under")
_HRS_BETWEEN = ("between", "among", "in the middle of")
_HRS_BIGGER = ("larger", "bigger")
_HRS_SMALLER = ("smaller",)


def _hrs_relation(relation: str, a: Sequence[float], b: Sequence[float]) -> bool:
    """HRS ``_check_right/left/above/below`` on xyxy boxes: by box EDGES, not centres."""
    if relation == "on the right of":
        return a[2] > b[2]
    if relation == "on the left of":
        return a[0] < b[0]
    if relation in _HRS_ABOVE:
        return a[1] < b[1] or a[3] < b[3]
    if relation in _HRS_BELOW:
        return a[3] > b[3] or a[1] > b[1]
    known = ["on the right of", "on the left of", *_HRS_ABOVE, *_HRS_BELOW, *_HRS_BETWEEN]
    raise ValueError(f"HRS spatial relation {relation!r} is unknown; use one of {known}")


def _hrs_between(a: Sequence[float], b: Sequence[float], c: Sequence[float]) -> bool:
    """HRS ``_check_between``: a between b and c horizontally or vertically."""
    return (
        (_hrs_relation("on the right of", a, b) and _hrs_relation("on the left of", a, c))
        or (_hrs_relation("on the left of", a, b) and _hrs_relation("on the right of", a, c))
        or (_hrs_relation("below", a, b) and _hrs_relation("above", a, c))
        or (_hrs_relation("above", a, b) and _hrs_relation("below", a, c))
    )


def _hrs_boxes(detections: Sequence[Detection], objects: Sequence[str]) -> dict[int, Box] | None:
    """HRS ``_sort_pred_obj``: the box of each asked object (the LAST detection of its kind wins); None if one is missing."""
    boxes: dict[int, Box] = {}
    for d in detections:
        if d.name in objects:
            boxes[list(objects).index(d.name)] = d.box
    return boxes if len(boxes) == len(objects) else None


def hrs_spatial_correct(detections: Sequence[Detection], objects: Sequence[str], relations: Sequence[str]) -> bool:
    """HRS spatial (``calc_spatial_relation_acc.py``): every object present, relations by box edges per level (2/3/4 objects)."""
    if not 2 <= len(objects) <= 4 or not 1 <= len(relations) <= 2:
        raise ValueError(f"HRS spatial prompts have 2-4 objects and 1-2 relations, got {len(objects)} and {len(relations)}")
    boxes = _hrs_boxes(detections, objects)
    if boxes is None:
        return False
    between = relations[0] in _HRS_BETWEEN
    if len(objects) == 2:  # easy: obj1 rel obj2
        return _hrs_relation(relations[0], boxes[0], boxes[1])
    if len(objects) == 3:  # medium: obj1 rel1 obj2 and rel2 obj3, or obj1 between obj2 and obj3
        if between:
            return _hrs_between(boxes[0], boxes[1], boxes[2])
        return _hrs_relation(relations[0], boxes[0], boxes[1]) and _hrs_relation(relations[-1], boxes[0], boxes[2])
    # hard: obj1 and obj2 rel1 obj3 and rel2 obj4 (HRS's code indexes objects 3 and 4 here, one past
    # the four it has, which raises; the prompts, "a person and airplane beneath a car and on the right
    # of a cat", say objects 2 and 3), or obj1 and obj2 between obj3 and obj4.
    if between:
        return _hrs_between(boxes[0], boxes[2], boxes[3]) and _hrs_between(boxes[1], boxes[2], boxes[3])
    return all(_hrs_relation(relations[0], boxes[i], boxes[2]) for i in (0, 1)) and all(
        _hrs_relation(relations[-1], boxes[i], boxes[3]) for i in (0, 1)
    )


def _hrs_size(relation: str, a: Sequence[float], b: Sequence[float]) -> bool:
    """HRS ``_check_large/_check_small``: by box area."""
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    if relation in _HRS_BIGGER:
        return area_a > area_b
    if relation in _HRS_SMALLER:
        return area_a < area_b
    raise ValueError(f"HRS size relation {relation!r} is unknown; use one of {[*_HRS_BIGGER, *_HRS_SMALLER]}")


def hrs_size_correct(detections: Sequence[Detection], objects: Sequence[str], relations: Sequence[str]) -> bool:
    """HRS size (``calc_size_comp_acc.py``): every object present, obj1 bigger/smaller than the others by box area."""
    if not 2 <= len(objects) <= 4 or not 1 <= len(relations) <= 2:
        raise ValueError(f"HRS size prompts have 2-4 objects and 1-2 relations, got {len(objects)} and {len(relations)}")
    boxes = _hrs_boxes(detections, objects)
    if boxes is None:
        return False
    if len(objects) == 2:
        return _hrs_size(relations[0], boxes[0], boxes[1])
    if len(objects) == 3:
        return _hrs_size(relations[0], boxes[0], boxes[1]) and _hrs_size(relations[-1], boxes[0], boxes[2])
    return (
        _hrs_size(relations[0], boxes[0], boxes[1])
        and _hrs_size(relations[0], boxes[0], boxes[2])
        and _hrs_size(relations[-1], boxes[0], boxes[3])
    )


def hrs_hue_color(hue: float) -> str:
    """HRS ``detect_color_hue_based``: OpenCV hue (0..179) -> red/orange/yellow/green/blue (NaN gives red, as there)."""
    for bound, color in ((15, "red"), (22, "orange"), (39, "yellow"), (78, "green"), (131, "blue")):
        if hue < bound:
            return color
    return "red"


def hrs_region_color(image, detection: Detection) -> str:
    """HRS color of one detection: mean OpenCV hue of its mask (or box) pixels whose hue is non-zero, binned."""
    hue = opencv_hue(image)
    values = hue[detection_region(detection, *hue.shape)]
    nonzero = values[values != 0]  # HRS divides by np.count_nonzero of the masked hue
    return hrs_hue_color(float(nonzero.mean()) if nonzero.size else float("nan"))


def hrs_color_correct(image, detections: Sequence[Detection], objects: Sequence[str], colors: Sequence[str]) -> list[bool]:
    """HRS color (``hue_based_color_classifier.py``): per asked object, whether some detection of its kind has its hue color."""
    if len(objects) != len(colors):
        raise ValueError(f"`objects` and `colors` must have the same length, got {len(objects)} and {len(colors)}")
    out = []
    for name, color in zip(objects, colors):
        out.append(any(hrs_region_color(image, d) == color for d in detections if d.name == name))
    return out


# ----------------------------------------------------------------------------- bench scorers
def hrs_spatial_scores(item: BenchItem, image, detections: list[Detection]) -> dict:
    """HRS spatial on one bench image: 1.0 when every relation holds by HRS's rules, else 0.0."""
    return {"hrs_spatial": float(hrs_spatial_correct(detections, item.info["objects"], item.info["relations"]))}


def hrs_counting_scores(item: BenchItem, image, detections: list[Detection]) -> dict:
    """HRS counting on one bench image: its TP / FP / FN (the report pools them into P / R / F1)."""
    tp, fp, fn = hrs_counting_counts(detections, item.info["expected"])
    return {"hrs_tp": tp, "hrs_fp": fp, "hrs_fn": fn}  # pooled into precision / recall / F1 by the report
