"""Image-level scores: pure functions over detections (:class:`eval.detect.Detection`).

:func:`score_layout_image` is the scenewright score the benchmark runner records per image: did the
image give the planned layout's counts, the prompt's relations and the planned boxes? Relations are
judged by :mod:`layout.relations` (the same predicates the planner and the layout evaluators use)
on a layout built from the detected boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.detect import Detection
from layout.schema import Layout, LayoutObject

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


def match_boxes(planned: Sequence[tuple[str, Sequence[float]]], detected: Sequence[tuple[str, Sequence[float]]]) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching of same-name boxes by descending IoU: ``[(planned i, detected j, iou)]``.

    Pairs with IoU 0 are never matched; each box is used at most once.
    """
    pairs = sorted(
        (
            (box_iou(pb, db), i, j)
            for i, (pn, pb) in enumerate(planned)
            for j, (dn, db) in enumerate(detected)
            if pn == dn
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
def score_layout_image(
    detections: list[Detection], layout: Layout, *, iou_threshold: float = 0.5
) -> dict[str, float | None]:
    """Per-image count, relation and box scores of ``detections`` against the planned ``layout``.

    - ``count_acc``: 1.0 when every kind of the layout is detected exactly as many times as planned
      and no kind the prompt negates ("without X") is detected, else 0.0.
    - ``spatial_acc``: fraction of the prompt's relations (:func:`layout.parse.parse_prompt`) that
      hold on the detected boxes (:func:`layout.relations.relation_holds`); None without relations.
    - ``box_iou50``: fraction of planned objects matched one-to-one (same name, greedy by IoU) to a
      detection with IoU >= ``iou_threshold``; None for a layout without objects.
    - ``mean_iou``: mean over planned objects of the IoU of their match (0 when unmatched); None as above.
    """
    from layout.parse import parse_prompt
    from layout.relations import relation_holds

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"`iou_threshold` must lie in (0, 1], got {iou_threshold}")
    detected_counts: dict[str, int] = {}
    for d in detections:
        detected_counts[d.name] = detected_counts.get(d.name, 0) + 1
    spec = parse_prompt(layout.prompt)
    planned_counts = layout.counts()
    counts_ok = all(detected_counts.get(name, 0) == n for name, n in planned_counts.items())
    negated_ok = all(detected_counts.get(name, 0) == 0 for name in spec.negative if name not in planned_counts)

    spatial: float | None = None
    if spec.relations:
        detected = detections_layout(detections, layout.prompt)
        held = sum(relation_holds(r, spec, detected) for r in spec.relations)
        spatial = held / len(spec.relations)

    box_iou50: float | None = None
    mean_iou: float | None = None
    if layout.objects:
        matches = match_boxes([(o.name, o.box) for o in layout.objects], [(d.name, d.box) for d in detections])
        n = len(layout.objects)
        box_iou50 = sum(iou >= iou_threshold for _, _, iou in matches) / n
        mean_iou = sum(iou for _, _, iou in matches) / n
    return {
        "count_acc": 1.0 if counts_ok and negated_ok else 0.0,
        "spatial_acc": spatial,
        "box_iou50": box_iou50,
        "mean_iou": mean_iou,
    }
