"""The geometry checker: make a layout usable by the synthesis stage without losing what the prompt asked.

:func:`check_layout` runs on every plan (offline planner or LLM answer). In order, it

1. clips boxes of a raw dict that run slightly off the canvas (values within ``[-1, 2]``; larger
   values look like pixels and are left for :meth:`Layout.parse` to reject with its hint), then
   validates with :meth:`Layout.parse`;
2. refuses more than ``max_objects`` objects (GLIGEN's position net takes 30) -- it never drops any;
3. grows boxes narrower or shorter than ``min_size`` around their centre, staying on the canvas;
4. separates pairs of objects whose overlap (intersection over the SMALLER box's area, which
   also catches a small box hidden inside a big one, where IoU stays low) exceeds ``max_overlap``,
   by the smallest push apart along one axis, then by shrinking one or both about their centres
   (never below ``min_size``) and pushing.

With a :class:`PromptSpec` every repair is verified with :func:`scenewright.layout.relations.requirement_failures`:
a repair may break NO requirement (count, size, relation) that held before it; a candidate that
does is discarded for the next, more invasive one. A pair whose groups the spec relates (the cat
"above" the sofa it sits on) is left overlapping when no candidate keeps the relation -- that
overlap is what the prompt asks for -- and :attr:`CheckResult.kept_overlaps` says so. Any other
pair that cannot be separated raises :class:`LayoutError`.

Deterministic: candidates are tried in a fixed order and pairs worst-first with index tie-breaks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely

from scenewright.layout.relations import group_members, requirement_failures
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS, Layout, LayoutError, LayoutObject
from scenewright.layout.spec import PromptSpec

#: Raw dict boxes with a value outside this range are not clipped: they look like pixels, not an overshoot.
CLIP_RANGE = (-1.0, 2.0)
#: Float slack when comparing an overlap with its threshold.
_TOL = 1e-9
#: Shrink factors tried (about each box's centre) when a push alone cannot separate a pair.
SHRINK_STEPS = (1.0, 0.85, 0.7, 0.55, 0.4, 0.3, 0.2, 0.1)
#: Repair rounds per object, a bound that only unresolvable crowds reach.
_ROUNDS_PER_OBJECT = 20

Box = tuple[float, float, float, float]


@dataclass
class CheckResult:
    """A usable layout and what was changed to get it."""

    layout: Layout
    changes: list[str] = field(default_factory=list)  # "objects[2] 'dog': clipped to the canvas, ..."
    kept_overlaps: list[str] = field(default_factory=list)  # related pairs left overlapping, and why


# ------------------------------------------------------------------ helpers
def format_box(box) -> str:
    """A box as ``[x0, y0, x1, y1]`` with three decimals, for change lines and errors."""
    return "[" + ", ".join(f"{v:.3f}" for v in box) + "]"


def object_label(index: int, name: object) -> str:
    """How change lines and errors name an object: ``objects[2] 'dog'``."""
    return f"objects[{index}] '{name}'"


def _finite_box(value: object) -> list[float] | None:
    """``value`` as 4 finite floats, or None when it is anything else (left for the schema to reject)."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    try:
        box = [float(v) for v in value]
    except OverflowError:  # a JSON integer past the float range, e.g. 1e309 written out
        return None
    return box if all(math.isfinite(v) for v in box) else None


def clip_to_canvas(data: dict) -> tuple[dict, list[str]]:
    """A copy of a raw layout dict with boxes that overshoot the canvas clipped to ``[0, 1]``, and the changes.

    Raises :class:`LayoutError` naming the object when nothing of its box is left on the canvas.
    """
    objects = data.get("objects")
    if not isinstance(objects, list):
        return data, []
    out, changes = [], []
    low, high = CLIP_RANGE
    for i, obj in enumerate(objects):
        box = _finite_box(obj.get("box")) if isinstance(obj, dict) else None
        if box is None or min(box) < low or max(box) > high or box[2] <= box[0] or box[3] <= box[1]:
            out.append(obj)  # malformed, pixel-like or inverted: Layout.parse names the field and the fix
            continue
        if min(box) >= -1e-6 and max(box) <= 1 + 1e-6:
            out.append(obj)  # on the canvas up to float noise, which the schema snaps
            continue
        clipped = [min(1.0, max(0.0, v)) for v in box]
        name = obj.get("name", "?")
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise LayoutError(
                f"{object_label(i, name)}: box {format_box(box)} lies entirely off the canvas; "
                "give a box that overlaps [0, 1] x [0, 1] (normalized, origin top-left)"
            )
        changes.append(f"{object_label(i, name)}: clipped to the canvas, {format_box(box)} -> {format_box(clipped)}")
        out.append({**obj, "box": clipped})
    return {**data, "objects": out}, changes


def _check_count(count: int, max_objects: int) -> None:
    if count > max_objects:
        raise LayoutError(
            f"the layout has {count} objects but at most {max_objects} are allowed "
            f"(GLIGEN takes at most {GLIGEN_MAX_OBJECTS} objects); merge instances into one group box "
            "or remove the least important objects"
        )


def grow_to_min_size(box: Box, min_size: float) -> Box:
    """``box`` with each side at least ``min_size``, grown about its centre and shifted back onto the canvas."""
    out = list(box)
    for lo, hi in ((0, 2), (1, 3)):
        if out[hi] - out[lo] >= min_size:
            continue
        centre = (out[lo] + out[hi]) / 2
        start = min(max(centre - min_size / 2, 0.0), 1.0 - min_size)
        out[lo], out[hi] = start, start + min_size
    return tuple(out)  # type: ignore[return-value]


def _shrink(box: Box, scale: float, min_size: float) -> Box:
    """``box`` scaled by ``scale`` about its centre, each side kept at least ``min_size`` (or its size)."""
    if scale >= 1.0:
        return box
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w = max(min(min_size, box[2] - box[0]), (box[2] - box[0]) * scale)
    h = max(min(min_size, box[3] - box[1]), (box[3] - box[1]) * scale)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def overlap_rows(boxes: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), N) intersection over the smaller area of boxes ``rows`` against every box of ``boxes`` (N, 4).

    Intersections are shapely's rectangle clip (``clip_by_rect``, several times faster than a
    general polygon intersection); a box's overlap with itself is 0.
    """
    polygons = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])  # (N,) rectangles
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    out = np.empty((len(rows), len(boxes)))
    for k, row in enumerate(rows):
        inter = shapely.area(shapely.clip_by_rect(polygons, *boxes[row]))
        out[k] = inter / np.minimum(areas[row], areas)
        out[k, row] = 0.0
    return out


def overlap_matrix(boxes: np.ndarray) -> np.ndarray:
    """(N, N) intersection over the smaller box's area for boxes (N, 4) xyxy; zero diagonal."""
    return overlap_rows(boxes, range(len(boxes)))


def _push(a: Box, b: Box, axis: int, mover: str, target: float, flip: bool) -> tuple[Box, Box] | None:
    """Move ``a`` and ``b`` apart along ``axis`` (0: x, 1: y) just enough that their overlap is ``target``.

    The box with the smaller centre coordinate moves towards 0 (the other way when ``flip``);
    ``mover`` is "both" (split the move, using the room each has), "first" or "second".
    Returns None when the canvas has no room for the move.
    """
    lo, hi = axis, axis + 2
    other_lo, other_hi = 1 - axis, 3 - axis
    min_area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    cross = min(a[other_hi], b[other_hi]) - max(a[other_lo], b[other_lo])  # overlap on the other axis
    if cross <= 0:
        return a, b
    size_a, size_b = a[hi] - a[lo], b[hi] - b[lo]
    # Overlap along `axis` of intervals of sizes wa, wb whose centres are d apart: min(wa, wb, (wa + wb)/2 - d).
    allowed = max(0.0, target * min_area / cross * (1 - 1e-6))
    if allowed >= min(size_a, size_b):
        return a, b
    needed = (size_a + size_b) / 2 - allowed  # centre distance that leaves `allowed` overlap
    a_first = (a[lo] + a[hi]) <= (b[lo] + b[hi])
    if flip:
        a_first = not a_first
    first, second = (a, b) if a_first else (b, a)
    distance = ((second[lo] + second[hi]) - (first[lo] + first[hi])) / 2  # may be < 0 when flipped
    move = needed - distance + 1e-12
    room_first, room_second = first[lo], 1.0 - second[hi]
    if mover == "first":
        d_first, d_second = move, 0.0
    elif mover == "second":
        d_first, d_second = 0.0, move
    else:
        d_first = min(move / 2, room_first)
        d_second = move - d_first
        if d_second > room_second:
            d_second = room_second
            d_first = move - d_second
    if d_first > room_first + 1e-12 or d_second > room_second + 1e-12:
        return None
    moved_first, moved_second = list(first), list(second)
    moved_first[lo], moved_first[hi] = max(0.0, first[lo] - d_first), first[hi] - d_first
    moved_second[lo], moved_second[hi] = second[lo] + d_second, min(1.0, second[hi] + d_second)
    out_first, out_second = tuple(moved_first), tuple(moved_second)
    return (out_first, out_second) if a_first else (out_second, out_first)  # type: ignore[return-value]


def _needed_move(a: Box, b: Box, axis: int, target: float) -> float:
    """How far apart ``a`` and ``b`` must move along ``axis`` for their overlap to fall to ``target``."""
    min_area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    along = min(a[axis + 2], b[axis + 2]) - max(a[axis], b[axis])
    cross = min(a[3 - axis], b[3 - axis]) - max(a[1 - axis], b[1 - axis])
    if along <= 0 or cross <= 0:
        return 0.0
    return max(0.0, along - target * min_area / cross)


def _candidates(a: Box, b: Box, target: float, min_size: float) -> Iterator[tuple[Box, Box]]:
    """Repairs of one overlapping pair, least invasive first.

    For each shrink factor (none first), for shrinking both / only ``a`` / only ``b``: the shrunk
    pair as is, then pushed apart along the axis needing the shorter move, then the other axis;
    each push splits the move or moves one box, keeping the centres' order, then crossing it.
    """
    seen: set[tuple[Box, Box]] = set()
    for scale in SHRINK_STEPS:
        if scale >= 1:
            shrinks = [(a, b)]
        else:
            small_a, small_b = _shrink(a, scale, min_size), _shrink(b, scale, min_size)
            shrinks = [(small_a, small_b), (small_a, b), (a, small_b)]
        for sa, sb in shrinks:
            if (sa, sb) in seen:
                continue
            seen.add((sa, sb))
            if scale < 1:
                yield sa, sb
            axes = (0, 1) if _needed_move(sa, sb, 0, target) <= _needed_move(sa, sb, 1, target) else (1, 0)
            for axis in axes:
                for flip in (False, True):
                    for mover in ("both", "first", "second"):
                        pushed = _push(sa, sb, axis, mover, target, flip)
                        if pushed is not None:
                            yield pushed


def with_box(obj: LayoutObject, box) -> LayoutObject:
    """``obj`` with a new box, unvalidated (internal candidates are on the canvas by construction)."""
    return LayoutObject.model_construct(name=obj.name, phrase=obj.phrase, box=tuple(float(v) for v in box))


def _construct(layout: Layout, objects: Sequence[LayoutObject]) -> Layout:
    """``layout`` with ``objects``, unvalidated."""
    return Layout.model_construct(
        prompt=layout.prompt, background=layout.background, negative=layout.negative, objects=tuple(objects)
    )


def broken_requirements(spec: PromptSpec | None, layout: Layout, objects: Sequence[LayoutObject], margin: float) -> dict[tuple, str]:
    """The requirements of ``spec`` that ``layout`` with ``objects`` breaks, keyed as in ``requirement_failures``."""
    if spec is None:
        return {}
    return dict(requirement_failures(spec, _construct(layout, objects), margin=margin))


def _related_groups(spec: PromptSpec) -> dict[frozenset[int], list[int]]:
    """Pairs of spec groups (or one group with itself) -> the relations linking them."""
    out: dict[frozenset[int], list[int]] = {}
    for r, relation in enumerate(spec.relations):
        groups = (relation.subject, *relation.references)
        for g in groups:
            for h in groups:
                if g != h or relation.kind == "in_row":
                    out.setdefault(frozenset((g, h)), []).append(r)
    return out


# ------------------------------------------------------------------ checker
def check_layout(
    layout: Layout | dict | str,
    spec: PromptSpec | None = None,
    *,
    min_size: float = 0.04,
    max_objects: int = GLIGEN_MAX_OBJECTS,
    max_overlap: float = 0.25,
    margin: float = 0.0,
) -> CheckResult:
    """Validate and repair a layout (see the module docstring); raises :class:`LayoutError` naming what cannot be kept.

    ``layout`` may be a :class:`Layout`, a raw dict or JSON text (e.g. an LLM answer).
    ``margin`` is passed to the relation predicates.
    """
    if not 0 < min_size <= 0.5:
        raise ValueError(f"`min_size` must be in (0, 0.5] (a fraction of the canvas), got {min_size}")
    if not 0 <= max_overlap <= 1:
        raise ValueError(f"`max_overlap` must be in [0, 1] (intersection over the smaller area), got {max_overlap}")
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1:
        raise ValueError(f"`max_objects` must be a positive int, got {max_objects!r}")

    changes: list[str] = []
    if isinstance(layout, Layout):
        parsed = layout
    else:
        data = layout
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except ValueError as err:
                raise LayoutError(f"layout text is not JSON ({err}); give a JSON object with `prompt` and `objects`") from None
        if not isinstance(data, dict):
            raise LayoutError(f"layout must be a Layout, a dict or JSON object, got {type(data).__name__}")
        if isinstance(data.get("objects"), list):
            _check_count(len(data["objects"]), max_objects)
        data, changes = clip_to_canvas(data)
        parsed = Layout.parse(data)
    _check_count(len(parsed.objects), max_objects)
    if not parsed.objects:
        return CheckResult(parsed, changes)

    boxes = np.array(parsed.boxes, dtype=float)  # (N, 4) xyxy
    baseline = broken_requirements(spec, parsed, parsed.objects, margin)

    # Minimum size.
    grown_labels = []
    for i, obj in enumerate(parsed.objects):
        grown = grow_to_min_size(obj.box, min_size)
        if grown != obj.box:
            boxes[i] = grown
            grown_labels.append(object_label(i, obj.name))
            changes.append(f"{object_label(i, obj.name)}: grown to the minimum size {min_size}, {format_box(obj.box)} -> {format_box(grown)}")
    grown_objects = [with_box(o, box) for o, box in zip(parsed.objects, boxes)]
    broken = {k: m for k, m in broken_requirements(spec, parsed, grown_objects, margin).items() if k not in baseline}
    if broken:
        raise LayoutError(
            f"growing {', '.join(grown_labels)} to the minimum size {min_size} breaks what the prompt asks: "
            + "; ".join(broken.values())
            + "; give boxes at least `min_size` wide and tall, or lower `min_size`"
        )

    boxes, separated, kept = _separate(parsed, spec, boxes, baseline, min_size, max_overlap, margin)
    changes += separated

    if not changes:
        return CheckResult(parsed, [], kept)
    objects = [LayoutObject(name=o.name, phrase=o.phrase, box=tuple(float(v) for v in box)) for o, box in zip(parsed.objects, boxes)]
    return CheckResult(parsed.with_objects(objects), changes, kept)


def _separate(
    parsed: Layout,
    spec: PromptSpec | None,
    boxes: np.ndarray,
    baseline: dict[tuple, str],
    min_size: float,
    max_overlap: float,
    margin: float,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Push apart / shrink overlapping pairs, worst first, breaking no requirement outside ``baseline``.

    Returns the boxes (N, 4), one change line per object that moved, and the related pairs left overlapping.
    """
    n = len(boxes)
    names = parsed.names
    group_of: dict[int, int] = {}
    related: dict[frozenset[int], list[int]] = {}
    if spec is not None:
        for g, indices in enumerate(group_members(spec, parsed)):
            for i in indices:
                group_of[i] = g
        related = _related_groups(spec)
    exempt: set[tuple[int, int]] = set()
    allowed = np.ones((n, n))  # (N, N) 0 where a pair's overlap is exempt
    partners: dict[int, set[int]] = {}  # object -> objects it was separated from
    kept: list[str] = []
    start = boxes.copy()
    objects = [with_box(o, box) for o, box in zip(parsed.objects, boxes)] if spec is not None else []

    def excess(rows: np.ndarray, pair: tuple[int, int]) -> float:
        """Overlap above the threshold of the two objects of ``pair`` (rows (2, N)) with all, exempt pairs aside."""
        over = np.clip(rows - max_overlap, 0.0, None) * allowed[list(pair)]  # (2, N)
        return float(over.sum() - over[1, pair[0]])  # the pair itself appears in both rows

    ios = overlap_matrix(boxes)  # (N, N), kept up to date as boxes move
    for _ in range(_ROUNDS_PER_OBJECT * n):
        upper = np.triu(ios, 1) > max_overlap + _TOL
        bad = sorted((-ios[i, j], int(i), int(j)) for i, j in zip(*np.nonzero(upper)) if (i, j) not in exempt)
        if not bad:
            return boxes, _separation_changes(names, start, boxes, partners, max_overlap), kept
        repaired = False
        for _neg, a, b in bad:
            before = excess(ios[[a, b]], (a, b))
            for box_a, box_b in _candidates(tuple(boxes[a]), tuple(boxes[b]), max_overlap, min_size):
                trial = boxes.copy()
                trial[a], trial[b] = box_a, box_b
                rows = overlap_rows(trial, (a, b))
                # The pair must come apart and the crowd as a whole must not get worse (this also ends the loop).
                if rows[0, b] > max_overlap + _TOL or excess(rows, (a, b)) >= before - _TOL:
                    continue
                if spec is not None:
                    trial_objects = list(objects)
                    trial_objects[a], trial_objects[b] = with_box(objects[a], box_a), with_box(objects[b], box_b)
                    if not set(broken_requirements(spec, parsed, trial_objects, margin)) <= set(baseline):
                        continue
                    objects = trial_objects
                boxes = trial
                ios[[a, b]] = rows
                ios[:, [a, b]] = rows.T
                partners.setdefault(a, set()).add(b)
                partners.setdefault(b, set()).add(a)
                repaired = True
                break
            if repaired:
                break
        if repaired:
            continue
        # No pair can be separated without breaking a requirement: keep the overlaps the prompt relates.
        newly_exempt = 0
        for _neg, a, b in bad:
            links = related.get(frozenset((group_of.get(a, -1), group_of.get(b, -2))), [])
            if links:
                exempt.add((a, b))
                allowed[a, b] = allowed[b, a] = 0.0
                newly_exempt += 1
                kinds = ", ".join(spec.relations[r].kind for r in links)  # type: ignore[union-attr]
                kept.append(
                    f"{object_label(a, names[a])} and {object_label(b, names[b])} overlap {ios[a, b]:.0%}: the prompt relates them "
                    f"({kinds}) and separating them would break a requirement"
                )
        if not newly_exempt:
            _neg, a, b = bad[0]
            reason = "the canvas has no room to separate them" if spec is None else (
                "every separation tried breaks a count, size or relation the prompt asks for, or the canvas has no room"
            )
            raise LayoutError(
                f"{object_label(a, names[a])} and {object_label(b, names[b])} overlap {ios[a, b]:.0%} (max {max_overlap:.0%}) "
                f"and cannot be separated: {reason}; move them apart, make them smaller or raise `max_overlap`"
            )
    upper = np.triu(ios, 1) > max_overlap + _TOL
    left = [(int(i), int(j)) for i, j in zip(*np.nonzero(upper)) if (i, j) not in exempt]
    if not left:  # the budget's last repair was the one that was needed
        return boxes, _separation_changes(names, start, boxes, partners, max_overlap), kept
    worst = ", ".join(f"{object_label(i, names[i])} and {object_label(j, names[j])} ({ios[i, j]:.1%})" for i, j in left)
    raise LayoutError(
        f"could not separate the overlapping objects of this {n}-object layout within the repair budget "
        f"(still over {max_overlap:.0%}: {worst}); spread those boxes out or raise `max_overlap`"
    )


def _separation_changes(
    names: list[str], start: np.ndarray, end: np.ndarray, partners: dict[int, set[int]], max_overlap: float
) -> list[str]:
    """One line per object the separation changed: what was done, from what, and the box before and after."""
    lines = []
    for i in sorted(partners):
        before, after = start[i], end[i]
        if np.array_equal(before, after):
            continue
        shrunk = bool(np.any(np.abs((before[2:] - before[:2]) - (after[2:] - after[:2])) > 1e-12))
        moved = bool(np.any(np.abs((before[2:] + before[:2]) - (after[2:] + after[:2])) > 1e-12))
        action = " and ".join(word for word, done in (("shrunk", shrunk), ("moved", moved)) if done)
        others = ", ".join(object_label(j, names[j]) for j in sorted(partners[i]))
        lines.append(
            f"{object_label(i, names[i])}: {action} to overlap {others} by at most {max_overlap:.0%}, "
            f"{format_box(before)} -> {format_box(after)}"
        )
    return lines
