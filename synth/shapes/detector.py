"""The exact detector of the shapes world: color segmentation, connected components, shape templates.

1. Each pixel takes its nearest color among the palette and the white background, if it lies
   within ``color_threshold`` (RGB Euclidean) of it; other pixels (blurred edges, stray hues)
   stay unassigned.
2. Pixels of one palette color are grouped into 8-connected components (label propagation in
   numpy; scipy is not a dependency). World objects are >= 1 pixel apart, so components never merge.
3. A component's shape is the world template (circle, square, triangle, star) rendered into the
   component's box that best overlaps it; the overlap (IoU) is the detection's score. Components
   smaller than ``min_area`` or scoring below ``min_score`` are noise, not objects, and so is a
   component smaller than the world's smallest object that touches an object of another color: world
   objects never touch, and a generated object's edge may drift in hue (a yellow square's corners
   orange), which a viewer sees as that square's fringe, not as a second object.

On rendered scenes this recovers every object exactly (tests/test_shapes_detector.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from scenewright.eval.detection import Detection
from scenewright.synth.shapes.world import BACKGROUND_RGB, CANVAS, COLORS, PALETTE, SHAPES, SIZE_RANGE, shape_mask_at

#: Palette colors first, then the background: row k of this table is color label k.
_COLOR_TABLE = np.array([PALETTE[c] for c in COLORS] + [BACKGROUND_RGB], dtype=np.float32)  # (7, 3)
_BACKGROUND_LABEL = len(COLORS)
_UNASSIGNED = -1
#: The 8-neighbourhood, as (dy, dx) shifts.
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def to_rgb_array(image) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, an (H, W, 3) uint8 array or a (3, H, W) float tensor in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if hasattr(image, "detach"):  # torch.Tensor
        tensor = image.detach().cpu()
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"image tensor must be (3, H, W) in [0, 1], got shape {tuple(tensor.shape)}; index one sample of a batch")
        if not tensor.is_floating_point():
            raise ValueError(f"image tensor must be float in [0, 1], got {tensor.dtype}; divide uint8 tensors by 255")
        array = tensor.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        return np.ascontiguousarray(array)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array must be (H, W, 3), got shape {array.shape}; drop the alpha channel or batch axis")
    if array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8 in [0, 255], got {array.dtype}; use (x * 255).round().astype(np.uint8)")
    return array


def color_labels(image: np.ndarray, color_threshold: float = 60.0) -> np.ndarray:
    """(H, W) int labels: k for palette color ``COLORS[k]``, len(COLORS) for background, -1 for neither."""
    pixels = image.astype(np.float32)[:, :, None, :]  # (H, W, 1, 3)
    distances = np.linalg.norm(pixels - _COLOR_TABLE, axis=-1)  # (H, W, 7)
    nearest = distances.argmin(axis=-1)
    close = np.take_along_axis(distances, nearest[..., None], axis=-1)[..., 0] <= color_threshold
    return np.where(close, nearest, _UNASSIGNED)


def _shift(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``array`` moved by (dy, dx): out[y, x] = array[y - dy, x - dx], ``fill`` where that leaves the image."""
    out = np.full_like(array, fill)
    height, width = array.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = array[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def _grown(mask: np.ndarray) -> np.ndarray:
    """``mask`` and its 8-neighbours."""
    grown = mask.copy()
    for dy, dx in _NEIGHBOURS:
        grown |= _shift(mask, dy, dx, False)
    return grown


def connected_components(labels: np.ndarray) -> np.ndarray:
    """(H, W) int component ids (8-connected, same label), -1 where ``labels`` < 0 or is background.

    Min-label propagation: every pixel repeatedly takes the smallest id among its same-label
    neighbours until nothing changes (iterations ~ the longest path inside a component).
    """
    height, width = labels.shape
    foreground = (labels >= 0) & (labels != _BACKGROUND_LABEL)
    sentinel = height * width
    ids = np.where(foreground, np.arange(height * width).reshape(height, width), sentinel)
    same = [(dy, dx, foreground & (_shift(labels, dy, dx, -2) == labels)) for dy, dx in _NEIGHBOURS]
    while True:
        smallest = ids
        for dy, dx, linked in same:
            smallest = np.where(linked, np.minimum(smallest, _shift(ids, dy, dx, sentinel)), smallest)
        if np.array_equal(smallest, ids):
            break
        ids = smallest
    return np.where(foreground, ids, -1)


#: Height / width of each shape's box in the world renderer (a star is 2 sin 72 wide, 1 + cos 36 tall).
_ASPECT = {"circle": 1.0, "square": 1.0, "triangle": 1.0, "star": (1 + np.cos(np.pi / 5)) / (2 * np.sin(2 * np.pi / 5))}


def _template_iou(component: np.ndarray, shape: str, rows: np.ndarray, cols: np.ndarray) -> float:
    """Best IoU of ``component`` with ``shape`` rendered (world renderer) to fit the component's pixel box.

    Rasterizing keeps only pixels whose centres are inside, so a shape's pixel box is up to
    ~2 pixels smaller than its side (thin star points): a few sides around the box are tried.
    """
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = component[top:bottom, left:right]
    x, y = np.meshgrid(np.arange(left, right) + 0.5, np.arange(top, bottom) + 0.5, indexing="xy")
    box_w, box_h = right - left, bottom - top
    cx, cy = (left + right) / 2, (top + bottom) / 2
    area = np.count_nonzero(crop)
    best = 0.0
    # A generated shape may be stretched: fit its width and, separately, its height.
    for base in {float(box_w), box_h / _ASPECT[shape]}:
        for side in (base, base + 1.0, base + 2.0):
            template = shape_mask_at(shape, cx, cy, side, x, y)
            inter = np.count_nonzero(template & crop)
            # Template pixels outside the crop cannot overlap the component: count them via the full area.
            union = area + _template_area(shape, cx, cy, side) - inter
            best = max(best, inter / union)
    return best


def _template_area(shape: str, cx: float, cy: float, side: float) -> int:
    """Pixel count of the rendered template, on a grid around it (it may spill past the component's box)."""
    reach = int(np.ceil(side / 2)) + 2
    left, top = int(np.floor(cx)) - reach, int(np.floor(cy)) - reach
    x, y = np.meshgrid(np.arange(left, left + 2 * reach + 1) + 0.5, np.arange(top, top + 2 * reach + 1) + 0.5, indexing="xy")
    return int(np.count_nonzero(shape_mask_at(shape, cx, cy, side, x, y)))


#: Pixels of the world's smallest object on its canvas (a small star, 12 px: 54).
_SMALLEST_OBJECT_AREA = min(_template_area(shape, CANVAS / 2, CANVAS / 2, SIZE_RANGE["small"][0]) for shape in SHAPES)


def detect(
    image,
    color_threshold: float = 60.0,
    min_area: int | None = None,
    min_score: float = 0.5,
    fringe_area: int | None = None,
) -> list[Detection]:
    """Objects in a shapes-world image (PIL / (H, W, 3) uint8 / (3, H, W) float tensor), largest first.

    ``fringe_area`` (default: the world's smallest object, scaled to the image; 0 turns it off): a smaller
    component touching a component at least this large is a fringe of that object (module docstring, 3).
    """
    if color_threshold <= 0:
        raise ValueError(f"color_threshold={color_threshold!r} must be > 0 (RGB distance, e.g. 60)")
    if not 0 <= min_score <= 1:
        raise ValueError(f"min_score={min_score!r} must be in [0, 1] (template IoU)")
    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    scale = height * width / CANVAS**2
    if min_area is None:  # 6 pixels on the 64x64 canvas; the smallest world object (a small star) covers 54
        min_area = max(1, round(6 * scale))
    if fringe_area is None:
        fringe_area = round(_SMALLEST_OBJECT_AREA * scale)
    labels = color_labels(rgb, color_threshold)
    components = connected_components(labels)
    detections = []
    ids, areas = np.unique(components[components >= 0], return_counts=True)
    objects = set(ids[areas >= fringe_area].tolist())
    for component_id, area in zip(ids, areas):
        if area < min_area:
            continue
        mask = components == component_id
        if area < fringe_area and objects & set(np.unique(components[_grown(mask)]).tolist()):
            continue  # a hue fringe on another object's edge
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        scores = {shape: _template_iou(mask, shape, rows, cols) for shape in SHAPES}
        shape = max(scores, key=scores.get)
        if scores[shape] < min_score:
            continue
        color = COLORS[int(labels.flat[component_id])]
        box = (cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height)
        detections.append(Detection(name=shape, color=color, box=box, score=float(scores[shape]), mask=mask))
    detections.sort(key=lambda d: -int(d.mask.sum()))
    return detections


def background_clean(image, detections: list[Detection] | None = None, color_threshold: float = 60.0) -> float:
    """Fraction of non-object pixels that are background-colored (1.0 = clean canvas).

    Object pixels are the detections' masks grown by one pixel (blurred edges of a generated
    object are not dirt). Color floods are not objects (they fail the shape templates), so
    guidance that paints the canvas scores low here.
    """
    rgb = to_rgb_array(image)
    if detections is None:
        detections = detect(rgb, color_threshold=color_threshold)
    objects = np.zeros(rgb.shape[:2], dtype=bool)
    for det in detections:
        objects |= det.mask
    rest = ~_grown(objects)
    if not rest.any():
        return 0.0  # objects cover everything: no background left at all
    labels = color_labels(rgb, color_threshold)
    return float((labels[rest] == _BACKGROUND_LABEL).mean())


def kind_counts(items) -> Counter:
    """Multiset of (color, shape kind) over detections or world objects."""
    return Counter((item.color, item.name if isinstance(item, Detection) else item.shape) for item in items)


class ShapesDetector:
    """The shapes world's exact detector (:func:`detect`) behind :class:`scenewright.eval.detect.Detector`."""

    def __init__(self, **options: Any):
        self.options = options

    def __call__(self, image: Any, names: Sequence[str] = ()) -> list[Detection]:
        wanted = set(names)
        return [d for d in detect(image, **self.options) if not wanted or d.name in wanted]
