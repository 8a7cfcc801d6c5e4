"""Box helpers shared by detectors and scorers: IoU, non-maximum suppression, pixel conversions.

Boxes are xyxy tuples; detections carry them normalized to [0, 1] (y down) and :func:`to_pixels`
scales them where a rule counts pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scenewright.eval.detection import Detection

Box = tuple[float, float, float, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when either has no area)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def to_pixels(box: Sequence[float], image_size: int | tuple[int, int]) -> Box:
    """A normalized xyxy box in pixels of an ``image_size`` (side, or (width, height)) image."""
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def by_score(detections: Sequence[Detection]) -> list[Detection]:
    """Detections sorted by descending confidence (stable: equal scores keep their order)."""
    return sorted(detections, key=lambda d: -d.score)


def nms(detections: Sequence[Detection], threshold: float, *, class_aware: bool = False) -> list[Detection]:
    """Greedy non-maximum suppression (LMD ``utils/eval/eval.py`` ``nms``): keep boxes with IoU < threshold to every kept one."""
    kept: list[Detection] = []
    for d in by_score(detections):
        if all(box_iou(d.box, k.box) < threshold for k in kept if not class_aware or k.name == d.name):
            kept.append(d)
    return kept


def detection_region(detection: Detection, height: int, width: int) -> np.ndarray:
    """The detection's (H, W) bool region: its mask when it has one, else its box."""
    if detection.mask is not None:
        mask = np.asarray(detection.mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"detection mask of '{detection.name}' has shape {mask.shape}, the image is {(height, width)}")
        return mask
    x0, y0, x1, y1 = to_pixels(detection.box, (width, height))
    region = np.zeros((height, width), dtype=bool)
    region[int(y0) : int(math.ceil(y1)), int(x0) : int(math.ceil(x1))] = True
    return region
