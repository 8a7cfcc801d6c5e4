"""scenewright's own image score: pure functions over detections (:class:`scenewright.eval.detection.Detection`).

Every scorer takes the detections of one image (normalized xyxy boxes, y down) and the planned layout:
:func:`fitting_detections` (the detections a layout's objects can be), :func:`planned_matches` and
:func:`grounding_scores` (detected box vs. planned box: IoU >= 0.5 per object, mean IoU), color words.
:func:`scenewright.eval.verify.verify` builds the one verdict of a plan on them.

Each published benchmark's own rules live in :mod:`scenewright.eval.benchmarks` (HRS, GenEval, LMD,
T2I-CompBench), one module each.
"""

from __future__ import annotations

from collections.abc import Sequence

from scenewright.eval.boxes import box_iou
from scenewright.eval.detection import Detection
from scenewright.layout.schema import Layout, LayoutObject
from scenewright.layout.vocabulary import COLORS


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
