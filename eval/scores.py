"""Image-level scores: pure functions over detections (:class:`scenewright.eval.detect.Detection`).

Every scorer takes the detections of one image (normalized xyxy boxes, y down) plus what the
benchmark asks, and judges by that benchmark's OWN rules, cited in its docstring:

- :func:`score_layout_image`: scenewright's per-image count / relation / grounding score against a
  planned layout; relations judged by :mod:`scenewright.layout.relations` on the detected boxes.
- :func:`grounding_scores`: detected box vs. planned box (IoU >= 0.5 per object, mean IoU).
- HRS (Bakr et al. 2023): :func:`hrs_counting_counts` + :func:`hrs_counting_prf`,
  :func:`hrs_spatial_correct`, :func:`hrs_size_correct`, :func:`hrs_color_correct` (hue bins).
- GenEval (Ghosh et al. 2023): :func:`geneval_correct`.
- LMD (Lian et al. 2023) image-level: :func:`lmd_image_correct`.
- T2I-CompBench (Huang et al. 2023): :func:`t2i_spatial_score`, :func:`t2i_numeracy_score`.

Boxes are scaled to ``image_size`` pixels only where a benchmark's rule has a pixel constant
(T2I-CompBench's 150 px, GenEval's and T2I-CompBench's +1 pixel areas).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from scenewright.eval.detect import Detection
from scenewright.layout.schema import Layout, LayoutObject

Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------- geometry
def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when either has no area)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detections_layout(detections: Sequence[Detection], prompt: str) -> Layout:
    """The detections as a :class:`Layout` (degenerate boxes widened by a hair, so relations can judge them)."""
    objects = []
    for d in detections:
        x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in d.box)
        if x1 <= x0:
            x0, x1 = (x0, x0 + 1e-6) if x0 < 1.0 else (x0 - 1e-6, x0)
        if y1 <= y0:
            y0, y1 = (y0, y0 + 1e-6) if y0 < 1.0 else (y0 - 1e-6, y0)
        objects.append(LayoutObject(name=d.name, phrase=d.phrase, box=(x0, y0, x1, y1)))
    return Layout(prompt=prompt, objects=tuple(objects))


# ------------------------------------------------------------------------ scenewright
def named_color(phrase: str) -> str | None:
    """The first color word of ``phrase`` ("a red circle" -> "red"), None when it names none."""
    from scenewright.layout.vocabulary import COLORS

    return next((word for word in phrase.lower().split() if word in COLORS), None)


def color_fits(color: str | None, phrase: str) -> bool:
    """A detection's ``color`` fits ``phrase`` when the detector reports none, the phrase names none, or they agree."""
    wanted = named_color(phrase)
    return color is None or wanted is None or color == wanted


def fitting_detections(detections: Sequence[Detection], layout: Layout) -> list[Detection]:
    """The detections that can stand for a planned object: of a kind not planned, or of a color some phrase of that kind allows.

    A purple circle is not one of "two red circles", so it neither holds a relation nor grounds a box.
    """
    phrases: dict[str, list[str]] = {}
    for obj in layout.objects:
        phrases.setdefault(obj.name, []).append(obj.phrase)
    return [d for d in detections if any(color_fits(d.color, p) for p in phrases.get(d.name, [""]))]


def score_layout_image(
    detections: list[Detection], layout: Layout, *, iou_threshold: float = 0.5
) -> dict[str, float | None]:
    """Per-image count, relation and box scores of ``detections`` against the planned ``layout``.

    - ``count_acc``: 1.0 when every kind of the layout is detected exactly as many times as planned,
      every colored group ("two red circles") has exactly its count of detections of a fitting color
      (:func:`color_fits`; detectors without colors always fit), and no kind the prompt negates
      ("without X") is detected, else 0.0.
    - ``spatial_acc``: fraction of the prompt's relations (:func:`scenewright.layout.parse.parse_prompt`) that
      hold on the boxes of the :func:`fitting_detections` (:func:`scenewright.layout.relations.relation_holds`);
      None without relations.
    - ``box_iou50``: fraction of planned objects matched one-to-one (same name, fitting color, greedy
      by IoU) to a detection with IoU >= ``iou_threshold``; None for a layout without objects.
    - ``mean_iou``: mean over planned objects of the IoU of their match (0 when unmatched); None as above.
    """
    from collections import Counter

    from scenewright.layout.parse import parse_prompt
    from scenewright.layout.relations import relation_holds

    spec = parse_prompt(layout.prompt)
    detected_counts = Counter(d.name for d in detections)
    planned_counts = layout.counts()
    counts_ok = all(detected_counts[name] == n for name, n in planned_counts.items())
    groups = Counter((o.name, named_color(o.phrase)) for o in layout.objects)
    colors_ok = all(
        sum(d.name == name and color_fits(d.color, f"a {color} {name}") for d in detections) == n
        for (name, color), n in groups.items()
        if color is not None
    )
    negated_ok = all(detected_counts[name] == 0 for name in spec.negative if name not in planned_counts)

    spatial: float | None = None
    if spec.relations:
        detected = detections_layout(fitting_detections(detections, layout), layout.prompt)
        held = sum(relation_holds(r, spec, detected) for r in spec.relations)
        spatial = held / len(spec.relations)

    grounding = grounding_scores(detections, layout, iou_threshold=iou_threshold)
    return {
        "count_acc": 1.0 if counts_ok and colors_ok and negated_ok else 0.0,
        "spatial_acc": spatial,
        "box_iou50": grounding["box_iou50"],
        "mean_iou": grounding["mean_iou"],
    }


def planned_matches(detections: Sequence[Detection], layout: Layout) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching (by descending IoU) of planned objects to detections of the same kind and a fitting color."""
    pairs = sorted(
        (
            (box_iou(o.box, d.box), i, j)
            for i, o in enumerate(layout.objects)
            for j, d in enumerate(detections)
            if o.name == d.name and color_fits(d.color, o.phrase)
        ),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    used_p: set[int] = set()
    used_d: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou <= 0 or i in used_p or j in used_d:
            continue
        used_p.add(i)
        used_d.add(j)
        out.append((i, j, iou))
    return out


def grounding_scores(detections: Sequence[Detection], layout: Layout, *, iou_threshold: float = 0.5) -> dict[str, float | None]:
    """Grounding (GLIGEN/LayoutGPT-style box accuracy): planned objects matched at IoU >= threshold, mean IoU."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"`iou_threshold` must lie in (0, 1], got {iou_threshold}")
    if not layout.objects:
        return {"box_iou50": None, "mean_iou": None}
    matches = planned_matches(detections, layout)
    n = len(layout.objects)
    return {
        "box_iou50": sum(iou >= iou_threshold for _, _, iou in matches) / n,
        "mean_iou": sum(iou for _, _, iou in matches) / n,
    }


# ------------------------------------------------------------------------- helpers
def _pixels(box: Sequence[float], image_size: int | tuple[int, int]) -> Box:
    """A normalized xyxy box in pixels of an ``image_size`` (side, or (width, height)) image."""
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def _by_score(detections: Sequence[Detection]) -> list[Detection]:
    """Detections sorted by descending confidence (stable: equal scores keep their order)."""
    return sorted(detections, key=lambda d: -d.score)


def nms(detections: Sequence[Detection], threshold: float, *, class_aware: bool = False) -> list[Detection]:
    """Greedy non-maximum suppression (LMD ``utils/eval/eval.py`` ``nms``): keep boxes with IoU < threshold to every kept one."""
    kept: list[Detection] = []
    for d in _by_score(detections):
        if all(box_iou(d.box, k.box) < threshold for k in kept if not class_aware or k.name == d.name):
            kept.append(d)
    return kept


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


def detection_region(detection: Detection, height: int, width: int) -> np.ndarray:
    """The detection's (H, W) bool region: its mask when it has one, else its box."""
    if detection.mask is not None:
        mask = np.asarray(detection.mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"detection mask of '{detection.name}' has shape {mask.shape}, the image is {(height, width)}")
        return mask
    x0, y0, x1, y1 = _pixels(detection.box, (width, height))
    region = np.zeros((height, width), dtype=bool)
    region[int(y0) : int(math.ceil(y1)), int(x0) : int(math.ceil(x1))] = True
    return region


# ------------------------------------------------------------------------------ HRS
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


# --------------------------------------------------------------------------- GenEval
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
    for d in _by_score(detections):
        if d.score > confidence:
            by_class.setdefault(d.name, []).append(d)
    kept: dict[str, list[Detection]] = {}
    for name, found in by_class.items():
        order, chosen = found[:max_objects], []
        while order:
            best = order.pop(0)
            chosen.append(best)
            if nms_threshold != 1:
                pb = _pixels(best.box, image_size)
                order = [d for d in order if _geneval_iou(pb, _pixels(d.box, image_size)) < nms_threshold]
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
                                _pixels(d.box, image_size), _pixels(t.box, image_size), position_threshold=position_threshold
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


# ------------------------------------------------------------------------------ LMD
def _lmd_query_text(detection: Detection, attribution: bool) -> str:
    """The OWL-ViT query LMD would have detected this box with: 'a photo of a <object>' (with its color for attribution)."""
    phrase = f"{detection.color} {detection.name}" if attribution and detection.color else detection.name
    return f"a photo of {'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def lmd_image_correct(
    prompt: str, detections: Sequence[Detection], *, score_threshold: float = 0.05, nms_threshold: float = 0.5
) -> tuple[str, bool]:
    """LMD image-level (``scripts/owl_vit_eval.py``, ``utils/eval``): score >= 0.05, class-agnostic NMS 0.5, stage-1 predicates."""
    from scenewright.eval.layouts import lmd_eval_info, lmd_layout_correct

    attribution = lmd_eval_info(prompt)["type"] == "attribution"
    kept = nms([d for d in detections if d.score >= score_threshold], nms_threshold)
    boxes = detections_layout(kept, prompt)  # LMD judges the detected boxes with its layout predicates
    named = [o.model_copy(update={"phrase": _lmd_query_text(d, attribution)}) for o, d in zip(boxes.objects, kept)]
    return lmd_layout_correct(prompt, boxes.with_objects(named))


# --------------------------------------------------------------------- T2I-CompBench
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
        position = t2i_position_score(locality, _pixels(d1.box, image_size), _pixels(d2.box, image_size))
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
        box = _pixels(d.box, image_size)
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
