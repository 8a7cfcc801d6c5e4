"""Fit a checked layout to the sizes a model draws objects at, and keep its boxes apart.

:func:`fit_object_sizes` runs after :func:`scenewright.layout.geometry.check_layout` for a model that declares the
sides it draws objects at (its ``scenewright.json``, e.g. the embedded shapes model): each box is scaled to those
sides about its centre, then boxes closer than the model's object gap are moved apart. Like the checker, every
change is verified with :func:`scenewright.layout.relations.requirement_failures`: a fit that would break what the
prompt asks goes part of the way, or is left out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from scenewright.layout.geometry import Box, CheckResult, broken_requirements, format_box, object_label, with_box
from scenewright.layout.schema import Layout, LayoutObject
from scenewright.layout.spec import PromptSpec

#: How far toward its fitted size a box is scaled when the full fit would break a requirement (1: all the way).
_FIT_FRACTIONS = (1.0, 0.75, 0.5, 0.25)


def _scaled(box: Box, factor: float) -> Box:
    """``box`` scaled by ``factor`` about its centre (callers keep it on the canvas)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def _scaled_to_side(box: Box, aim: float, word_sides: tuple[float, float] | None) -> Box:
    """``box`` with its longer side scaled to ``aim`` about its centre, then slid onto the canvas.

    With ``word_sides`` (the range the model draws the box's size word at) the shorter side is then brought
    into that range too: the shapes world draws every object inside a square, while a planner stretches a
    "large" box in a crowded row to a photograph's area (a 10 x 21 px box that a 24 px triangle overflows).
    """
    w, h = box[2] - box[0], box[3] - box[1]
    scale = aim / max(w, h)
    w, h = w * scale, h * scale
    if word_sides is not None:
        w, h = (min(max(side, word_sides[0]), word_sides[1]) for side in (w, h))
    w, h = min(w, 1.0), min(h, 1.0)
    cx = min(max((box[0] + box[2]) / 2, w / 2), 1 - w / 2)
    cy = min(max((box[1] + box[3]) / 2, h / 2), 1 - h / 2)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _centrewith_box(a: Box, b: Box) -> bool:
    return abs((a[0] + a[2]) - (b[0] + b[2])) > 1e-9 or abs((a[1] + a[3]) - (b[1] + b[3])) > 1e-9


def _axis_gaps(a: Box, b: Box) -> tuple[float, float]:
    """The gaps between two boxes along x and along y (negative where their extents overlap on that axis)."""
    return max(a[0], b[0]) - min(a[2], b[2]), max(a[1], b[1]) - min(a[3], b[3])


def _gap_factors(boxes: list[Box], min_gap: float, floors: list[float]) -> list[float]:
    """Per box, the factor that gives every non-overlapping pair ``min_gap`` along the axis that separates it.

    Both boxes of a pair shrink by one factor about their centres; no box goes below its ``floors`` factor.
    """
    factors = [1.0] * len(boxes)
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            gaps = _axis_gaps(a, b)
            axis = 0 if gaps[0] >= gaps[1] else 1
            if gaps[axis] < 0 or gaps[axis] >= min_gap:  # overlapping (kept by the checker) or far enough
                continue
            centres = abs((a[axis] + a[axis + 2]) - (b[axis] + b[axis + 2])) / 2
            extents = (a[axis + 2] - a[axis]) + (b[axis + 2] - b[axis])
            wanted = max(2 * (centres - min_gap) / extents, 0.0)
            factors[i] = min(factors[i], max(wanted, floors[i]))
            factors[j] = min(factors[j], max(wanted, floors[j]))
    return factors


def _box_gap(a: Box, b: Box) -> float:
    """How far apart two boxes are along the axis that separates them most (negative: they overlap)."""
    return max(_axis_gaps(a, b))


def _pair_gaps(objects: Sequence[LayoutObject], originals: Sequence[Box], spec: PromptSpec | None,
               min_gap: float) -> dict[tuple[int, int], float]:  # fmt: skip
    """The gap each pair of boxes must keep: ``min_gap``, twice that between look-alike objects (sharing
    a color or material word of ``spec``; without one, the same phrase).

    Pairs whose planned boxes overlapped keep no gap: the checker kept that overlap on purpose.
    """
    if spec is None:
        looks = [{o.phrase} for o in objects]
    else:
        attributes = {word for o in spec.objects for word in o.attributes}
        looks = [attributes & set(o.phrase.split()) for o in objects]
    gaps = {}
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            if _box_gap(originals[i], originals[j]) >= 0:
                gaps[i, j] = min_gap * (2 if looks[i] & looks[j] else 1)
    return gaps


def _too_close(boxes: Sequence[Box], gaps: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    return [(i, j) for (i, j), gap in gaps.items() if _box_gap(boxes[i], boxes[j]) < gap - 1e-9]


def _spread_rows(boxes: list[Box], gaps: dict[tuple[int, int], float], low: float, high: float) -> list[Box]:
    """Boxes slid along x, each as little as a left-then-right sweep needs, until boxes that share a row keep
    their gaps (the caller checks whether the row had room)."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][0] + boxes[i][2], i))
    x0 = [b[0] for b in boxes]
    width = [b[2] - b[0] for b in boxes]

    def gap(i: int, j: int) -> float | None:
        rows_meet = _axis_gaps(boxes[i], boxes[j])[1] < 0
        return gaps.get((min(i, j), max(i, j))) if rows_meet else None

    for k, i in enumerate(order):  # push right, past the boxes on the left
        x0[i] = max([x0[i], low, *(x0[j] + width[j] + g for j in order[:k] if (g := gap(i, j)) is not None)])
    for k in range(len(order) - 1, -1, -1):  # push left, inside the canvas and past the boxes on the right
        i = order[k]
        x0[i] = min([x0[i], high - width[i], *(x0[j] - width[i] - g for j in order[k + 1:] if (g := gap(i, j)) is not None)])
    return [(x, b[1], x + w, b[3]) for x, w, b in zip(x0, width, boxes)]


def _stagger(boxes: list[Box], gaps: dict[tuple[int, int], float], low: float, high: float, first: int) -> list[Box]:
    """Every other box (from ``first``, in x order) of each too-close row lifted above (or dropped below) its
    neighbours, so that a row with no room for its gaps becomes two; x centres never move."""
    close = _too_close(boxes, gaps)
    order = sorted({i for pair in close for i in pair}, key=lambda i: (boxes[i][0] + boxes[i][2], i))
    movers = set(order[first::2])
    out = list(boxes)
    for m in movers:
        around = [(j, g) for (a, b), g in gaps.items() if m in (a, b) and (j := b if a == m else a) not in movers
                  and _axis_gaps(boxes[m], boxes[j])[0] < g]  # fmt: skip
        if not around:
            continue
        need = max(g for _, g in around)
        up = min(boxes[j][1] for j, _ in around) - need - boxes[m][3]
        down = max(boxes[j][3] for j, _ in around) + need - boxes[m][1]
        shift = up if boxes[m][1] + up >= low else down if boxes[m][3] + down <= high else 0.0
        out[m] = (boxes[m][0], boxes[m][1] + shift, boxes[m][2], boxes[m][3] + shift)
    return out


def _keep_gaps(
    layout: Layout, spec: PromptSpec | None, objects: list[LayoutObject], originals: list[Box], min_gap: float,
    margin: float,
) -> tuple[list[LayoutObject], list[str], bool]:  # fmt: skip
    """Objects moved apart where sized boxes are closer than their gaps (see :func:`fit_object_sizes`), the
    change lines, and whether every gap is now kept."""
    gaps = _pair_gaps(objects, originals, spec, min_gap)
    boxes = [o.box for o in objects]
    close = _too_close(boxes, gaps)
    if not close:
        return objects, [], True
    low, high = margin, 1.0 - margin
    baseline = set(broken_requirements(spec, layout, objects, margin))
    candidates = [_spread_rows(boxes, gaps, low, high), _stagger(boxes, gaps, low, high, 1), _stagger(boxes, gaps, low, high, 0)]
    candidates += [_spread_rows(c, gaps, low, high) for c in candidates[1:]]
    for moved in candidates:
        on_canvas = all(low - 1e-9 <= v <= high + 1e-9 for b in moved for v in b)
        trial = [with_box(o, b) for o, b in zip(objects, moved)]
        if on_canvas and not _too_close(moved, gaps) and set(broken_requirements(spec, layout, trial, margin)) <= baseline:
            changes = []
            for i, (obj, before, after) in enumerate(zip(objects, boxes, moved)):
                if max(abs(u - v) for u, v in zip(before, after)) > 1e-9:
                    others = ", ".join(object_label(j, objects[j].name) for pair in close if i in pair for j in pair if j != i)
                    changes.append(f"{object_label(i, obj.name)}: moved clear of {others} (a gap of {min_gap:g}, twice that "
                                   f"between objects of one color), {format_box(before)} -> {format_box(after)}")  # fmt: skip
            return trial, changes, True
    pairs = ", ".join(f"{object_label(i, objects[i].name)} and {object_label(j, objects[j].name)}" for i, j in close)
    return objects, [f"left closer than the model's object gap: {pairs} (no move keeps what the prompt asks)"], False


def _size_aims(longest: Sequence[float], phrases: Sequence[str], sides: tuple[float, float],
               size_sides: Mapping[str, tuple[float, float]] | None) -> list[tuple[str | None, float, float]]:  # fmt: skip
    """Per box: (size word or None, the longer side to scale to, the least side a gap may shrink it to).

    Without ``size_sides`` a box keeps its side if it lies within ``sides``, else takes the nearer end.
    With them, a box aims at the geometric mean of its size word's range: an object drawn anywhere in
    ``[a, b]`` inside a box of side ``sqrt(a * b)`` has the best worst-case IoU, ``a / b``. A phrase without
    a size word leaves the model free to draw either size, so its box takes the word whose aim is nearest
    (in ratio) to the box's side within ``sides``, and composition picks a drawing of that size.
    """
    low, high = sides
    middles = {word: math.sqrt(a * b) for word, (a, b) in (size_sides or {}).items()}
    aims = []
    for side, phrase in zip(longest, phrases):
        kept = min(max(side, low), high)
        if not middles:
            aims.append((None, kept, low))
            continue
        said = [w for w in phrase.lower().split() if w in middles]
        word = said[0] if said else min(middles, key=lambda w: abs(math.log(kept / middles[w])))
        aims.append((word, middles[word], size_sides[word][0]))
    return aims


def _sized(layout: Layout, spec: PromptSpec | None, targets: Sequence[Box],
           aims: Sequence[tuple[str | None, float, float]], margin: float) -> tuple[list[LayoutObject], list[str]]:  # fmt: skip
    """Each object's box taken to its target, or the part of the way that breaks nothing of ``spec`` that held."""
    baseline = set(broken_requirements(spec, layout, layout.objects, margin))
    objects = list(layout.objects)
    changes = []
    for i, (obj, target) in enumerate(zip(layout.objects, targets)):
        if max(abs(u - v) for u, v in zip(obj.box, target)) < 1e-9:
            continue
        for fraction in _FIT_FRACTIONS:
            trial = list(objects)
            trial[i] = with_box(obj, [u + fraction * (v - u) for u, v in zip(obj.box, target)])
            if set(broken_requirements(spec, layout, trial, margin)) <= baseline:
                objects = trial
                how = "" if fraction == 1.0 else f" ({fraction:.0%} of the way: further breaks what the prompt asks)"
                sizes = "object sizes" if aims[i][0] is None else f"size for {aims[i][0]!r} objects"
                slid = " and slid onto the canvas" if _centrewith_box(obj.box, objects[i].box) else ""
                changes.append(f"{object_label(i, obj.name)}: scaled to the model's {sizes}{slid}{how}, "
                               f"{format_box(obj.box)} -> {format_box(objects[i].box)}")  # fmt: skip
                break
        else:
            changes.append(f"{object_label(i, obj.name)}: kept its size: any scaling toward the model's object sizes "
                           f"breaks what the prompt asks")  # fmt: skip
    return objects, changes


def fit_object_sizes(
    layout: Layout,
    spec: PromptSpec | None = None,
    *,
    sides: tuple[float, float],
    min_gap: float = 0.0,
    margin: float = 0.0,
    size_sides: Mapping[str, tuple[float, float]] | None = None,
) -> CheckResult:
    """Scale boxes to the sizes a model draws objects at (its ``scenewright.json``), and keep them apart.

    A planner sizes boxes for photographs (a lone object fills most of the canvas); a model trained on
    one world draws its objects within a range of sizes, and an object cannot fill a box much larger than
    it. Each box's longer side is brought into ``sides = (low, high)`` (fractions of the canvas, aspect
    kept), or, where the model declares the sides it draws each size word at (``size_sides``, e.g.
    ``{"small": (0.19, 0.25), "large": (0.33, 0.44)}``), scaled to the middle of its phrase's word's range
    (a phrase without one: the word nearest its size), and its shorter side brought into that range (the
    model draws the word's objects no more elongated than that). Boxes scale about their centres, so
    every relation judged by centres (LMD's convention) still holds; a box the canvas edge cuts is slid
    back onto it. A box whose fit would break another requirement of ``spec`` (a size word, ``next_to``'s
    gap, ``in_row``'s spread) is fitted part of the way, or left as it was.

    Boxes closer than ``min_gap`` (a planner packs small boxes that the fit grows into each other) are
    then moved apart, so that objects drawn in them do not touch: slid along their row where it has room,
    else every other one lifted above (or dropped below) its neighbours, x centres kept. Objects that share
    a color word of ``spec`` keep twice ``min_gap``: a model's later steps join look-alike neighbours one
    gap apart into one blob. Only where no move keeps what ``spec`` asks do the boxes shrink instead (never
    below ``low``, or their word's least side) and move what is still needed; a change line says which
    boxes stay close. Pairs whose planned boxes overlapped are left alone (the checker kept that overlap).
    Returns the layout and one change line per box that was scaled or moved.
    """
    low, high = sides
    if not 0 < low <= high <= 1:
        raise ValueError(f"`sides` must be (low, high) with 0 < low <= high <= 1 (fractions of the canvas), got {sides!r}")
    if not 0 <= min_gap < 0.5:
        raise ValueError(f"`min_gap` must be in [0, 0.5) (a fraction of the canvas), got {min_gap!r}")
    for word, (a, b) in (size_sides or {}).items():
        if not 0 < a <= b <= 1:
            raise ValueError(f"`size_sides[{word!r}]` must be (low, high) with 0 < low <= high <= 1 (fractions of the canvas), got {(a, b)!r}")
    if spec is not None and size_sides:
        # A size word the model declares means the sides the model draws it at, not the area bound that
        # layout checks give it for photographs ("large": 16% of the canvas, more than the world's 21 px).
        spec = dataclasses.replace(spec, objects=tuple(
            dataclasses.replace(o, size=None) if o.size in size_sides else o for o in spec.objects))  # fmt: skip
    originals = [o.box for o in layout.objects]
    longest = [max(b[2] - b[0], b[3] - b[1]) for b in originals]
    aims = _size_aims(longest, [o.phrase for o in layout.objects], sides, size_sides)
    targets = [_scaled_to_side(b, aim, size_sides[word] if word else None) for b, (word, aim, _) in zip(originals, aims)]
    objects, changes = _sized(layout, spec, targets, aims, margin)
    if min_gap > 0:
        # Boxes keep the sizes the model draws and move apart where the prompt lets them; only where no
        # move does they shrink (toward each word's least side): an object drawn at its usual size in a
        # box shrunk below it reaches into its neighbour's gap.
        moved, moves, kept = _keep_gaps(layout, spec, objects, list(originals), min_gap, margin)
        if not kept:
            floors = [min(least / max(t[2] - t[0], t[3] - t[1]), 1.0) for t, (_, _, least) in zip(targets, aims)]
            shrunk = [_scaled(t, f) for t, f in zip(targets, _gap_factors(targets, min_gap, floors))]
            objects, changes = _sized(layout, spec, shrunk, aims, margin)
            moved, moves, _ = _keep_gaps(layout, spec, objects, list(originals), min_gap, margin)
        objects = moved
        changes += moves
    if not any(o is not p for o, p in zip(objects, layout.objects)):
        return CheckResult(layout, changes)
    fitted = [LayoutObject(name=o.name, phrase=o.phrase, box=tuple(float(v) for v in o.box)) for o in objects]
    return CheckResult(layout.with_objects(fitted), changes)
