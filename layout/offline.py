"""Deterministic offline layout planner: prompt -> :class:`scenewright.layout.spec.PromptSpec` -> boxes, no model.

How boxes are placed (every step is a pure function of the spec and the seed):

1. Each object group (one :class:`~scenewright.layout.spec.ObjectSpec`) gets a column layer and a row layer.
   ``left_of``/``right_of``/``between``/``next_to`` and left/right regions order the column layers;
   ``above``/``below`` and top/bottom regions order the row layers (longest-path layering of the
   order graphs; a relation that would close a cycle is dropped and noted). Groups that are related
   horizontally prefer one row and groups related vertically one column, so that the relation is
   also the dominant direction between their centres (NSR-1K judges relations by the angle
   between centres, Feng et al. 2023).
   Region orders ("a dog at the top" goes above every other group) yield to explicit relations.
   Groups no relation mentions get a column of their own on the right.
2. Column widths and row heights follow how much each group needs (count, typical width/height and
   size of its kind, explicit size words), no layer under 0.12 of the canvas; the layers holding a
   group with an absolute region are moved into that region's third. Groups sharing a cell split it.
3. A group's instances fill its cell side by side in one row (always for ``in_row``; by default up
   to :data:`ROW_MAX` instances while the row keeps boxes at least :data:`_ROW_MIN_BOX` a side),
   in one column when three or more stand ``next_to`` something (a pair stands in a row packed
   against its neighbour, on its ground line), and otherwise in the grid giving the
   largest boxes at the kind's aspect ratio. Each box's bottom edge sits on its slot's ground
   line (:data:`GROUND_LINE`), so two cats left of a dog share one ground, not a column in mid-air.
   ``between`` with one group twice ("a cat between two trees") shares one cell with that group.
4. Box size within its slot follows the kind's typical size relative to the scene's largest kind
   (:data:`KIND_SHAPES`); explicit sizes are grown or shrunk into the bounds
   :mod:`scenewright.layout.relations` checks, ``bigger_than``/``smaller_than`` shrink the smaller side, and
   ``next_to`` subjects are stacked level with (or, in a row, packed against) their reference.
5. ``between`` with one plural reference ("a cat between two trees") spreads the reference's
   instances on both sides of the subject along its ground line.
6. ``above(X, Y)`` with Y a support (:data:`scenewright.layout.vocabulary.SUPPORT_KINDS`, one instance: "a cat on
   a sofa") rests X on Y: the lowest X boxes come down onto Y's top, sinking :data:`REST_DEPTH`
   of their height into it (X's bottom edge in Y's upper half, X's centre above Y's), and Y
   widens to span them (or, when widening breaks Y's region, they slide over Y, shrinking if they
   must); what rests on Y shares Y's left/right region. The overlap stays under the geometry
   checker's ``max_overlap``, so
   :func:`scenewright.layout.planners.plan_layout` keeps the pair; a move that would break a requirement
   or crowd an unrelated box is undone (noted). "above" a non-support ("a bird above a car")
   keeps its gap.

``seed=0`` gives the canonical layout; another seed jitters each box's size (up to 8%) and position
(up to 5% of its slot) inside its slot, so every requirement still holds.

A prompt asking for more than :data:`scenewright.layout.schema.GLIGEN_MAX_OBJECTS` instances is refused with a
:class:`~scenewright.layout.schema.LayoutError` (boxes would go under the minimum size; no silent truncation).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from scenewright.layout.parse import parse_prompt
from scenewright.layout.relations import NEXT_TO_MAX_GAP, requirement_failures
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS, Layout, LayoutError, LayoutObject
from scenewright.layout.spec import ObjectSpec, PromptSpec
from scenewright.layout.vocabulary import SUPPORT_KINDS

#: Smallest box side the planner produces (normalized units).
MIN_SIDE = 0.05
#: Fraction of a slot left empty on each side so that neighbouring boxes never touch.
SLOT_PADDING = 0.06
#: Target areas for explicit size words, inside the bounds `scenewright.layout.relations.SIZE_AREA_BOUNDS` checks.
_SIZE_AREA_CAP = {"small": 0.08, "tiny": 0.02}
_SIZE_AREA_FLOOR = {"large": 0.18, "huge": 0.40}
_SIZE_WEIGHT = {"large": 1.8, "huge": 2.6, "small": 0.7, "tiny": 0.5, "tall": 1.0, None: 1.0}
_MIN_FILL = 0.35  # the smallest kind still fills this much of its slot (so it stays visible)
_NEXT_TO_GAP = 0.01  # space left between a next_to pair's facing edges
_TALL_ASPECT = 0.6  # width / height for "tall" (relations.TALL_ASPECT demands height >= 1.5 width)
#: Instances of one kind stand in one row up to this many; more make a grid.
ROW_MAX = 5
#: A ``next_to`` subject of up to this many instances stands in a row packed against its neighbour.
_NEXT_TO_ROW_MAX = 2
#: Smallest box side a default row may give before the planner falls back to a grid.
_ROW_MIN_BOX = 0.1
#: Where a box's bottom edge sits in its slot (fraction of the slot height from its top): the ground line.
GROUND_LINE = 0.85
#: How far a thing resting on a support sinks into it, as a fraction of the resting box's height.
#: Under the geometry checker's default ``max_overlap`` (0.25 of the smaller box), so the pair is kept.
REST_DEPTH = 0.2
#: Margin a support extends beyond the things resting on it, on each side (normalized units).
_SUPPORT_MARGIN = 0.03
_REGION_BANDS = {"left": (0.0, 1 / 3), "right": (2 / 3, 1.0), "top": (0.0, 1 / 3), "bottom": (2 / 3, 1.0), "center": (1 / 3, 2 / 3)}

#: Typical (width / height, relative size in 0..1) per kind: people tall, cars wide, buses wide and big, cups small.
KIND_SHAPES: dict[str, tuple[float, float]] = {
    "person": (0.45, 0.8), "man": (0.45, 0.8), "woman": (0.45, 0.8), "boy": (0.45, 0.65), "girl": (0.45, 0.65),
    "child": (0.45, 0.6), "kid": (0.45, 0.6), "baby": (0.8, 0.4), "lady": (0.45, 0.8), "guy": (0.45, 0.8),
    "player": (0.5, 0.8), "astronaut": (0.5, 0.8), "skier": (0.6, 0.8), "surfer": (0.6, 0.8), "robot": (0.6, 0.7),
    "giraffe": (0.5, 1.0), "horse": (1.3, 0.85), "elephant": (1.3, 0.95), "cow": (1.4, 0.8), "sheep": (1.3, 0.6),
    "dog": (1.2, 0.55), "cat": (1.1, 0.45), "bear": (1.1, 0.8), "zebra": (1.3, 0.8), "bird": (1.0, 0.3),
    "teddy bear": (0.8, 0.45), "mouse": (1.3, 0.18), "rabbit": (0.9, 0.35), "pig": (1.4, 0.55),
    "car": (1.9, 0.8), "bus": (2.2, 1.0), "truck": (1.9, 1.0), "train": (2.5, 1.0), "airplane": (2.0, 1.0),
    "plane": (2.0, 1.0), "boat": (1.8, 0.8), "bicycle": (1.6, 0.6), "bike": (1.6, 0.6), "motorcycle": (1.6, 0.7),
    "van": (1.7, 0.85), "taxi": (1.9, 0.8), "tractor": (1.5, 0.8), "helicopter": (1.8, 0.9), "ship": (2.2, 1.0),
    "traffic light": (0.4, 0.45), "fire hydrant": (0.6, 0.4), "stop sign": (1.0, 0.4), "parking meter": (0.35, 0.5),
    "bench": (2.0, 0.7), "backpack": (0.75, 0.4), "umbrella": (1.3, 0.6), "handbag": (1.2, 0.35), "tie": (0.35, 0.3),
    "suitcase": (0.8, 0.5), "frisbee": (1.5, 0.25), "skis": (0.35, 0.7), "snowboard": (0.35, 0.6),
    "sports ball": (1.0, 0.2), "ball": (1.0, 0.2), "kite": (1.0, 0.4), "baseball bat": (0.2, 0.5),
    "baseball glove": (1.0, 0.25), "skateboard": (2.5, 0.4), "surfboard": (0.35, 0.8), "tennis racket": (0.6, 0.4),
    "bottle": (0.35, 0.4), "wine glass": (0.45, 0.3), "glass": (0.6, 0.25), "cup": (0.85, 0.25), "mug": (0.9, 0.25),
    "fork": (0.25, 0.25), "knife": (0.25, 0.3), "spoon": (0.25, 0.25), "bowl": (1.6, 0.35), "plate": (1.6, 0.35),
    "banana": (1.5, 0.3), "apple": (1.0, 0.25), "sandwich": (1.4, 0.3), "orange": (1.0, 0.25), "broccoli": (1.0, 0.3),
    "carrot": (0.4, 0.3), "hot dog": (2.0, 0.3), "pizza": (1.3, 0.5), "donut": (1.2, 0.25), "cake": (1.2, 0.4),
    "chair": (0.75, 0.6), "couch": (2.0, 0.9), "sofa": (2.0, 0.9), "potted plant": (0.7, 0.5), "bed": (1.6, 1.0),
    "dining table": (1.8, 0.9), "table": (1.7, 0.8), "desk": (1.7, 0.8), "toilet": (0.7, 0.6), "tv": (1.5, 0.6),
    "television": (1.5, 0.6), "laptop": (1.4, 0.45), "remote": (0.4, 0.2), "keyboard": (2.8, 0.5),
    "cell phone": (0.5, 0.2), "phone": (0.5, 0.2), "microwave": (1.5, 0.5), "oven": (1.0, 0.7), "toaster": (1.3, 0.35),
    "sink": (1.5, 0.5), "refrigerator": (0.55, 1.0), "fridge": (0.55, 1.0), "book": (0.75, 0.3), "clock": (1.0, 0.35),
    "vase": (0.55, 0.4), "scissors": (0.6, 0.25), "hair drier": (0.9, 0.25), "toothbrush": (0.2, 0.25),
    "tree": (0.6, 1.0), "palm tree": (0.6, 1.0), "house": (1.3, 1.0), "building": (0.8, 1.0), "tower": (0.4, 1.0),
    "lamp": (0.5, 0.5), "flower": (0.7, 0.3), "balloon": (0.8, 0.3), "guitar": (0.4, 0.6), "candle": (0.4, 0.2),
    "shelf": (1.5, 0.7), "bookshelf": (0.8, 0.9), "window": (1.0, 0.6), "door": (0.5, 0.9), "box": (1.2, 0.4),
    "circle": (1.0, 0.4), "square": (1.0, 0.4), "triangle": (1.0, 0.4), "star": (1.0, 0.4), "rectangle": (1.5, 0.4),
    "heart": (1.0, 0.4), "diamond": (0.8, 0.4), "hexagon": (1.0, 0.4), "oval": (1.4, 0.4),
}  # fmt: skip
_DEFAULT_SHAPE = (1.0, 0.5)


@dataclass
class _Group:
    """One ObjectSpec being placed: its cell and its instances' boxes."""

    index: int
    count: int
    aspect: float  # width / height of one instance
    scale: float  # typical relative size
    weight_w: float = 1.0
    weight_h: float = 1.0
    one_row: bool = False
    one_column: bool = False
    partial_row_shift: float = 0.5  # where a partly filled last row sits: 0 left, 0.5 centred, 1 right
    x_band: tuple[float, float] | None = None  # region clamp
    y_band: tuple[float, float] | None = None
    cell: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    boxes: list[list[float]] = field(default_factory=list)
    slots: list[tuple[float, float, float, float]] = field(default_factory=list)


class _Order:
    """A DAG of 'a before b' edges over classes, refusing edges that would close a cycle."""

    def __init__(self, n: int) -> None:
        self.succ: list[set[int]] = [set() for _ in range(n)]

    def reaches(self, a: int, b: int) -> bool:
        stack, seen = [a], {a}
        while stack:
            u = stack.pop()
            if u == b:
                return True
            for v in self.succ[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        return False

    def add(self, a: int, b: int) -> bool:
        if a == b or self.reaches(b, a):
            return False
        self.succ[a].add(b)
        return True

    def layers(self, nodes: list[int]) -> dict[int, int]:
        """Longest-path layer of each node (0 = first)."""
        layer: dict[int, int] = {}

        def depth(u: int) -> int:
            if u not in layer:
                preds = [p for p in nodes if u in self.succ[p]]
                layer[u] = 0 if not preds else 1 + max(depth(p) for p in preds)
            return layer[u]

        for u in nodes:
            depth(u)
        return layer


class _Classes:
    """Union-find of groups that should share a row (or a column)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(b)] = self.find(a)


def _shape(name: str) -> tuple[float, float]:
    if name in KIND_SHAPES:
        return KIND_SHAPES[name]
    last = name.split()[-1]
    return KIND_SHAPES.get(last, _DEFAULT_SHAPE)


def _order_groups(spec: PromptSpec, notes: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    """Column and row layer of every group (see the module docstring, step 1)."""
    n = len(spec.objects)
    horizontal: list[tuple[int, int]] = []  # (a, b): a left of b
    vertical: list[tuple[int, int]] = []  # (a, b): a above b
    same_row: list[tuple[int, int]] = []
    same_col: list[tuple[int, int]] = []
    regions = {rel.subject: rel.where or "" for rel in spec.relations if rel.kind == "at"}
    for rel in spec.relations:
        s, refs = rel.subject, rel.references
        if rel.kind == "next_to":
            # Subject on the left of its reference, unless a region puts one of them on a side.
            flip = "left" in regions.get(refs[0], "") or "right" in regions.get(s, "")
            horizontal.append((refs[0], s) if flip else (s, refs[0]))
            same_row.append((s, refs[0]))
        elif rel.kind == "left_of":
            horizontal.append((s, refs[0]))
            same_row.append((s, refs[0]))
        elif rel.kind == "right_of":
            horizontal.append((refs[0], s))
            same_row.append((s, refs[0]))
        elif rel.kind == "between" and refs[0] == refs[1]:
            same_row.append((s, refs[0]))  # "between two trees": one cell, the trees flank it (_flank_between)
        elif rel.kind == "between":
            horizontal += [(refs[0], s), (s, refs[1])]
            same_row += [(s, refs[0]), (s, refs[1])]
        elif rel.kind == "above":
            vertical.append((s, refs[0]))
            same_col.append((s, refs[0]))
        elif rel.kind == "below":
            vertical.append((refs[0], s))
            same_col.append((s, refs[0]))
    # Regions order a group before or after every group not in the same region.
    # Regions order a group before or after every group not in the same region; these implied
    # orders yield to explicit relations ("a cat above a dog at the top": both end up on top).
    soft_horizontal: list[tuple[int, int]] = []
    soft_vertical: list[tuple[int, int]] = []
    for g, where in regions.items():
        parts = (where or "").split()
        for h in range(n):
            if h == g:
                continue
            other = (regions.get(h) or "").split()
            if "left" in parts and "left" not in other:
                soft_horizontal.append((g, h))
            if "right" in parts and "right" not in other:
                soft_horizontal.append((h, g))
            if "top" in parts and "top" not in other:
                soft_vertical.append((g, h))
            if "bottom" in parts and "bottom" not in other:
                soft_vertical.append((h, g))
    cols = _layer(n, horizontal, same_col, notes, "left-right", soft_horizontal)
    rows = _layer(n, vertical, same_row, notes, "top-bottom", soft_vertical)
    horizontal += soft_horizontal
    vertical += soft_vertical
    # Groups no relation mentions get a column of their own on the right, so that they never
    # sit between two related groups ("a zebra next to a sheep in an enclosure").
    touched = {g for pair in (*horizontal, *vertical, *same_row, *same_col) for g in pair} | set(regions)
    free = [g for g in range(n) if g not in touched]
    if touched and free:
        last_col, last_row = max(cols[g] for g in touched), max(rows[g] for g in touched)
        for g in free:
            cols[g], rows[g] = last_col + 1, last_row
    return cols, rows


def _layer(
    n: int,
    edges: list[tuple[int, int]],
    merge: list[tuple[int, int]],
    notes: list[str],
    axis: str,
    soft_edges: list[tuple[int, int]] = (),  # type: ignore[assignment]
) -> dict[int, int]:
    """Longest-path layers along one axis; ``edges`` (a, b) put a before b.

    ``merge`` pairs (related along the OTHER axis: a group above another) share a layer so that
    the relation is the dominant direction between them; ordered pairs are never merged.
    """
    classes = _Classes(n)
    order = _Order(n)
    ordered = {(a, b) for a, b in edges} | {(b, a) for a, b in edges}
    for a, b in merge:
        ra, rb = classes.find(a), classes.find(b)
        if ra == rb:
            continue
        members_a = [g for g in range(n) if classes.find(g) == ra]
        members_b = [g for g in range(n) if classes.find(g) == rb]
        if any((x, y) in ordered for x in members_a for y in members_b):
            continue
        classes.union(ra, rb)
    for a, b in edges:
        ca, cb = classes.find(a), classes.find(b)
        if ca == cb or not order.add(ca, cb):
            notes.append(f"{axis} order between groups {a} and {b} contradicts another relation; dropped")
    for a, b in soft_edges:  # implied by a region: skipped quietly when it conflicts
        ca, cb = classes.find(a), classes.find(b)
        if ca != cb:
            order.add(ca, cb)
    roots = sorted({classes.find(g) for g in range(n)})
    layer_of_class = order.layers(roots)
    return {g: layer_of_class[classes.find(g)] for g in range(n)}


def _grid(count: int, width: float, height: float, aspect: float, one_row: bool, one_column: bool) -> tuple[int, int]:
    """(columns, rows) for ``count`` instances in a width x height cell.

    One row by default (side by side on one ground line, as a photo shows a few of a kind) while
    its boxes keep a side of at least :data:`_ROW_MIN_BOX`; otherwise, and for more than
    :data:`ROW_MAX` instances, the grid giving the largest boxes of ``aspect``.
    """

    def box_side(cols: int, rows: int) -> tuple[float, float]:  # (smaller side, area) of one box
        box_w = min(width / cols, height / rows * aspect)
        return min(box_w, box_w / aspect), box_w * box_w / aspect

    if one_row or (not one_column and count <= ROW_MAX and box_side(count, 1)[0] >= _ROW_MIN_BOX):
        return count, 1
    best, best_area = (count, 1), -1.0
    options = [count] if one_column else range(1, count + 1)
    for rows in options:
        cols = math.ceil(count / rows)
        area = box_side(cols, rows)[1]
        if area > best_area + 1e-12:
            best, best_area = (cols, rows), area
    return best


def _fit(slot: tuple[float, float, float, float], aspect: float, fill: float, ground: float | None = None) -> list[float]:
    """The largest box of ``aspect`` (times ``fill``) in ``slot``, inside its padding.

    Centred, or with ``ground`` (a fraction of the slot height) its bottom edge on that line,
    as far as the padding allows: boxes of one row then stand on one ground line.
    """
    x0, y0, x1, y1 = slot
    pad_w, pad_h = (x1 - x0) * SLOT_PADDING, (y1 - y0) * SLOT_PADDING
    w_max, h_max = (x1 - x0) - 2 * pad_w, (y1 - y0) - 2 * pad_h
    w = min(w_max, h_max * aspect) * fill
    h = w / aspect
    if min(w, h) < MIN_SIDE:  # grow to the minimum side keeping the aspect, as far as the slot allows
        grow = MIN_SIDE / min(w, h)
        w, h = w * grow, h * grow
    w, h = min(w, max(w_max, MIN_SIDE)), min(h, max(h_max, MIN_SIDE))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if ground is not None and h <= h_max:
        cy = min(max(y0 + (y1 - y0) * ground, y0 + pad_h + h), y1 - pad_h) - h / 2
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _scale_box(box: list[float], factor: float) -> list[float]:
    """Scale ``box`` about its centre, no side under :data:`MIN_SIDE`, kept on the canvas."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w = min(1.0, max((box[2] - box[0]) * factor, MIN_SIDE))
    h = min(1.0, max((box[3] - box[1]) * factor, MIN_SIDE))
    cx, cy = min(max(cx, w / 2), 1.0 - w / 2), min(max(cy, h / 2), 1.0 - h / 2)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _grow_within(box: list[float], bounds: tuple[float, float, float, float], area: float) -> list[float]:
    """Scale ``box`` about its centre towards ``area`` (same aspect), as far as ``bounds`` allow."""
    w, h = box[2] - box[0], box[3] - box[1]
    factor = math.sqrt(area / (w * h))
    factor = min(factor, (bounds[2] - bounds[0]) / w, (bounds[3] - bounds[1]) / h)
    if factor <= 1.0:
        return box
    grown = _scale_box(box, factor)
    # Shift back inside the bounds (the grown box fits, so one shift per axis suffices).
    dx = max(bounds[0] - grown[0], 0.0) + min(bounds[2] - grown[2], 0.0)
    dy = max(bounds[1] - grown[1], 0.0) + min(bounds[3] - grown[3], 0.0)
    return [grown[0] + dx, grown[1] + dy, grown[2] + dx, grown[3] + dy]


def _stretch_height(box: list[float], bounds: tuple[float, float, float, float], height: float) -> list[float]:
    """Make ``box`` at least ``height`` tall about its centre (its aspect gives way), inside ``bounds``."""
    if box[3] - box[1] >= height:
        return box
    height = min(height, bounds[3] - bounds[1])
    cy = min(max((box[1] + box[3]) / 2, bounds[1] + height / 2), bounds[3] - height / 2)
    return [box[0], cy - height / 2, box[2], cy + height / 2]


def _area(box: list[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _shift_within(box: list[float], slot: tuple[float, float, float, float], dx: float, dy: float) -> list[float]:
    """Move ``box`` by (dx, dy) but no further than its slot's edges; it stays put along an axis it overhangs.

    A lone large object may outgrow its region's third (:func:`_fill_cell`); "within the slot" would then push
    it off the canvas, and clipping could leave no box at all.
    """
    dx = min(max(dx, slot[0] - box[0]), slot[2] - box[2]) if box[2] - box[0] <= slot[2] - slot[0] + 1e-9 else 0.0
    dy = min(max(dy, slot[1] - box[1]), slot[3] - box[3]) if box[3] - box[1] <= slot[3] - slot[1] + 1e-9 else 0.0
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


def plan_spec(spec: PromptSpec, *, seed: int = 0) -> tuple[Layout, list[str]]:
    """Place boxes for ``spec``; returns the layout and notes on anything it could not honour."""
    total = sum(o.count for o in spec.objects)
    if total > GLIGEN_MAX_OBJECTS:
        raise LayoutError(
            f"the prompt asks for {total} objects; the planner places at most {GLIGEN_MAX_OBJECTS} "
            f"(GLIGEN_MAX_OBJECTS): ask for fewer objects"
        )
    notes: list[str] = []
    groups = _make_groups(spec)
    if groups:
        _assign_cells(spec, groups, notes)
        rng = random.Random(seed) if seed else None
        max_scale = max(g.scale for g in groups)
        for g, o in zip(groups, spec.objects):
            _fill_cell(g, o, max_scale, rng)
        _enforce_comparatives(spec, groups, notes)
        _snap_next_to(spec, groups, notes)
        _flank_between(spec, groups, notes)
        _rest_on_supports(spec, groups, notes)
    return _to_layout(spec, groups), notes


def _make_groups(spec: PromptSpec) -> list[_Group]:
    """One group per ObjectSpec: shape from the kind table, flags and weights from sizes and relations."""
    groups = [_Group(i, o.count, *_shape(o.name)) for i, o in enumerate(spec.objects)]
    max_scale = max((g.scale for g in groups), default=1.0)
    for g, o in zip(groups, spec.objects):
        if o.size == "tall":
            g.aspect = min(g.aspect, _TALL_ASPECT)
        if o.size in ("large", "huge"):
            g.scale = max_scale
    bigger: set[int] = set()
    for rel in spec.relations:
        if rel.kind == "in_row":
            groups[rel.subject].one_row = True
        elif rel.kind == "next_to":
            # A pair still fits side by side within NEXT_TO_MAX_GAP of its neighbour; more stack in a column.
            g = groups[rel.subject]
            g.one_row = g.one_row or g.count <= _NEXT_TO_ROW_MAX
            g.one_column = not g.one_row
        elif rel.kind == "at":
            g = groups[rel.subject]
            if rel.where == "center":
                g.x_band, g.y_band = _REGION_BANDS["center"], _REGION_BANDS["center"]
            for part in (rel.where or "").split():
                if part in ("left", "right"):
                    g.x_band = _REGION_BANDS[part]
                elif part in ("top", "bottom"):
                    g.y_band = _REGION_BANDS[part]
        elif rel.kind in ("bigger_than", "smaller_than"):
            big, small = (rel.subject, rel.references[0]) if rel.kind == "bigger_than" else (rel.references[0], rel.subject)
            groups[big].scale = max(groups[big].scale, groups[small].scale)
            bigger.add(big)
    for rel in spec.relations:
        # What rests on a support, or stands between the instances of one group, shares its left/right region.
        support = rel.references[0] if rel.kind == "above" and spec.objects[rel.references[0]].name in SUPPORT_KINDS else -1
        flanked = rel.references[0] if rel.kind == "between" and rel.references[0] == rel.references[1] else -1
        for holder in (support, flanked):
            if holder >= 0 and groups[rel.subject].x_band is None:
                groups[rel.subject].x_band = groups[holder].x_band
    for g, o in zip(groups, spec.objects):
        # How much width and height a group needs: a square-ish grid of its instances, one
        # column when it stands next to something, one row when it is in a row.
        row = g.one_row or (not g.one_column and o.count <= ROW_MAX)
        across = 1.0 if g.one_column else o.count if row else math.sqrt(min(o.count, 9))
        down = min(o.count, 4) ** 0.5 if g.one_column else 1.0 if row else math.sqrt(min(o.count, 9))
        relative = math.sqrt(g.scale / max_scale)  # a cup needs less room than a bus
        weight = _SIZE_WEIGHT[o.size] * (1.4 if g.index in bigger else 1.0) * max(relative, 0.5)
        g.weight_w = across * math.sqrt(g.aspect) * weight
        g.weight_h = down / math.sqrt(g.aspect) * weight
    return groups


def _assign_cells(spec: PromptSpec, groups: list[_Group], notes: list[str]) -> None:
    """Steps 1-2: layers -> column widths and row heights -> one cell per group."""
    col_of, row_of = _order_groups(spec, notes)
    for rel in spec.relations:
        if rel.kind == "next_to":  # a reference's short last row faces its neighbour
            ref = rel.references[0]
            groups[ref].partial_row_shift = 0.0 if col_of[ref] > col_of[rel.subject] else 1.0
    cells: dict[tuple[int, int], list[int]] = {}
    for g in range(len(groups)):
        cells.setdefault((col_of[g], row_of[g]), []).append(g)
    col_need = [0.0] * (max(col_of.values()) + 1)
    row_need = [0.0] * (max(row_of.values()) + 1)
    for (c, r), members in cells.items():
        col_need[c] = max(col_need[c], sum(groups[g].weight_w for g in members))
        row_need[r] = max(row_need[r], max(groups[g].weight_h for g in members))
    col_edges = _fit_bands(_edges(col_need), {col_of[g.index]: g.x_band for g in groups if g.x_band})
    row_edges = _fit_bands(_edges(row_need), {row_of[g.index]: g.y_band for g in groups if g.y_band})
    for (c, r), members in cells.items():
        x0, x1 = col_edges[c], col_edges[c + 1]
        y0, y1 = row_edges[r], row_edges[r + 1]
        # Groups sharing a cell split it side by side (each at least 0.12 of the canvas wide).
        inner = _edges([groups[g].weight_w for g in members], least=0.12 / max(x1 - x0, 1e-9))
        for k, g in enumerate(members):
            groups[g].cell = (x0 + (x1 - x0) * inner[k], y0, x0 + (x1 - x0) * inner[k + 1], y1)
    for g in groups:
        g.cell = _clamp_cell(g, notes, spec)


def _fill_cell(g: _Group, o: ObjectSpec, max_scale: float, rng: random.Random | None) -> None:
    """Steps 3-4: the group's instances in a grid of slots inside its cell, sized by kind and size word."""
    x0, y0, x1, y1 = g.cell
    cols, rows = _grid(g.count, x1 - x0, y1 - y0, g.aspect, g.one_row, g.one_column)
    # Box size in its slot follows the kind's typical size relative to the scene's largest kind.
    fill = min(1.0, max(_MIN_FILL, (g.scale / max_scale) ** 0.7))
    if rng is not None:
        fill *= 1.0 - 0.08 * rng.random()
    slot_w, slot_h = (x1 - x0) / cols, (y1 - y0) / rows
    floor, cap = _SIZE_AREA_FLOOR.get(o.size or ""), _SIZE_AREA_CAP.get(o.size or "")
    for k in range(g.count):
        r, c = divmod(k, cols)
        in_row = min(cols, g.count - r * cols)
        offset = (cols - in_row) * slot_w * g.partial_row_shift  # where a short last row sits
        slot = (x0 + offset + c * slot_w, y0 + r * slot_h, x0 + offset + (c + 1) * slot_w, y0 + (r + 1) * slot_h)
        box = _fit(slot, g.aspect, fill, GROUND_LINE)
        if floor is not None and _area(box) < floor:
            bounds = g.cell if g.count == 1 else slot
            if g.count == 1 and (g.x_band or g.y_band):
                # A region is judged by the box centre, so a lone large object may overhang its
                # region's third ("a large star in the top right" cannot be large inside 1/9 of the canvas).
                bounds = (0.0, 0.0, 1.0, 1.0)
            box = _grow_within(box, bounds, floor)
            if _area(box) < floor:  # the kind's aspect cannot reach it here: let the height give
                box = _stretch_height(box, bounds, floor * 1.02 / (box[2] - box[0]))
        if cap is not None and _area(box) > cap:
            box = _scale_box(box, math.sqrt(cap / _area(box)))
        if rng is not None:  # rows and next_to columns keep their line: they jitter along it only
            dx = (rng.random() - 0.5) * slot_w * 0.1
            dy = 0.0 if g.one_row or g.one_column or rows == 1 else (rng.random() - 0.5) * slot_h * 0.1
            box = _shift_within(box, slot, dx, dy)
        g.slots.append(slot)
        g.boxes.append(box)


def _edges(needs: list[float], least: float = 0.12) -> list[float]:
    """Cumulative layer edges on [0, 1], widths proportional to ``needs`` but none under ``least``."""
    total = sum(needs) or 1.0
    widths = [need / total for need in needs]
    least = min(least, 1.0 / len(widths))
    for _ in range(len(widths)):  # raise the narrow ones, take the room from the others
        small = [i for i, w in enumerate(widths) if w < least - 1e-12]
        if not small:
            break
        rest = sum(w for i, w in enumerate(widths) if i not in small)
        room = 1.0 - least * len(small)
        widths = [least if i in small else w * room / rest for i, w in enumerate(widths)]
    edges = [0.0]
    for width in widths:
        edges.append(edges[-1] + width)
    edges[-1] = 1.0
    return edges


def _fit_bands(edges: list[float], inside: dict[int, tuple[float, float]]) -> list[float]:
    """Move layer edges so that each constrained layer lies inside its region band.

    Layers before a constrained one are squeezed proportionally into the space before it and
    layers after it into the space after, so the order of layers is kept ("a cat above a dog
    at the top": both rows move into the top third).
    """
    edges = list(edges)
    for layer in sorted(inside):
        lo, hi = inside[layer]
        start, end = max(edges[layer], lo), min(edges[layer + 1], hi)
        if end - start < 2 * MIN_SIDE:  # the layer lies outside its band: take the band's middle
            start, end = max(lo, (lo + hi) / 2 - (hi - lo) / 2), hi
        if layer > 0 and start < 2 * MIN_SIDE * layer:
            start = min(end - 2 * MIN_SIDE, 2 * MIN_SIDE * layer)
        if len(edges) - 2 > layer and end > 1 - 2 * MIN_SIDE * (len(edges) - 2 - layer):
            end = max(start + 2 * MIN_SIDE, 1 - 2 * MIN_SIDE * (len(edges) - 2 - layer))
        before, after = edges[: layer + 1], edges[layer + 1 :]
        scale_before = start / before[-1] if before[-1] > 0 else 0.0
        edges[: layer + 1] = [e * scale_before for e in before]
        span_after = 1.0 - after[0]
        edges[layer + 1 :] = [end + (e - after[0]) * ((1.0 - end) / span_after if span_after > 0 else 0.0) for e in after]
        edges[layer], edges[layer + 1] = start, end
    edges[0], edges[-1] = 0.0, 1.0
    return edges


def _clamp_cell(g: _Group, notes: list[str], spec: PromptSpec) -> tuple[float, float, float, float]:
    """Intersect a group's cell with its absolute region; use the region alone when they do not meet."""
    x0, y0, x1, y1 = g.cell
    for band, axis in ((g.x_band, 0), (g.y_band, 1)):
        if band is None:
            continue
        lo, hi = (x0, x1) if axis == 0 else (y0, y1)
        new_lo, new_hi = max(lo, band[0]), min(hi, band[1])
        if new_hi - new_lo < MIN_SIDE * 2:
            notes.append(f"'{spec.objects[g.index].phrase}': its region and its relations disagree; the region wins")
            new_lo, new_hi = band
        if axis == 0:
            x0, x1 = new_lo, new_hi
        else:
            y0, y1 = new_lo, new_hi
    return (x0, y0, x1, y1)


def _enforce_comparatives(spec: PromptSpec, groups: list[_Group], notes: list[str]) -> None:
    """Shrink the smaller side of every bigger_than / smaller_than until its largest box is clearly smaller."""
    for _ in range(3):
        changed = False
        for rel in spec.relations:
            if rel.kind not in ("bigger_than", "smaller_than"):
                continue
            big, small = (rel.subject, rel.references[0]) if rel.kind == "bigger_than" else (rel.references[0], rel.subject)
            if big == small:
                continue
            min_big = min(_area(b) for b in groups[big].boxes)
            max_small = max(_area(b) for b in groups[small].boxes)
            if max_small < min_big * 0.8:
                continue
            factor = math.sqrt(min_big * 0.6 / max_small)
            groups[small].boxes = [_scale_box(b, factor) for b in groups[small].boxes]
            changed = True
        if not changed:
            return
    for rel in spec.relations:
        if rel.kind in ("bigger_than", "smaller_than"):
            big, small = (rel.subject, rel.references[0]) if rel.kind == "bigger_than" else (rel.references[0], rel.subject)
            if max(_area(b) for b in groups[small].boxes) >= min(_area(b) for b in groups[big].boxes):
                notes.append(f"size comparison between groups {big} and {small} could not be satisfied")


def _snap_next_to(spec: PromptSpec, groups: list[_Group], notes: list[str]) -> None:
    """Push the subject of each next_to against the reference's side and align their centres vertically."""
    for rel in spec.relations:
        if rel.kind != "next_to":
            continue
        subject, reference = groups[rel.subject], groups[rel.references[0]]
        if subject is reference:
            continue
        ref_cx = sum((b[0] + b[2]) / 2 for b in reference.boxes) / len(reference.boxes)
        if subject.count > 1 and subject.one_row:
            if not _row_beside(subject, reference):
                notes.append(
                    f"'{spec.objects[rel.subject].phrase}' x {subject.count} in a row cannot all be within "
                    f"{NEXT_TO_MAX_GAP} of '{spec.objects[rel.references[0]].phrase}'; the row is kept"
                )
            continue
        if subject.count > 1:
            _stack_beside(subject, reference)
        moved = []
        for box, slot in zip(subject.boxes, subject.slots):
            cx = (box[0] + box[2]) / 2
            dx = (slot[2] - box[2] - _NEXT_TO_GAP) if cx < ref_cx else (slot[0] - box[0] + _NEXT_TO_GAP)
            cy = (box[1] + box[3]) / 2
            # one instance: level with the nearest reference instance (not their mean, which may fall between two)
            nearest_cy = min(((b[1] + b[3]) / 2 for b in reference.boxes), key=lambda y: abs(y - cy))
            dy = nearest_cy - cy if subject.count == 1 else 0.0
            moved.append(_shift_within(box, slot, dx, dy))
        subject.boxes = moved
        sub_cx = sum((b[0] + b[2]) / 2 for b in subject.boxes) / len(subject.boxes)
        reference.boxes = [
            _shift_within(b, s, (s[0] - b[0] + _NEXT_TO_GAP) if sub_cx < (b[0] + b[2]) / 2 else (s[2] - b[2] - _NEXT_TO_GAP), 0.0)
            for b, s in zip(reference.boxes, reference.slots)
        ]


def _row_beside(subject: _Group, reference: _Group) -> bool:
    """A row of subject instances ("three cats in a row next to a dog") packed against the reference.

    Every instance must be within `scenewright.layout.relations.NEXT_TO_MAX_GAP` of the reference, so the
    row is shrunk until its farthest instance is. Returns False, leaving the row as it is, when
    too many instances are asked for to fit at the minimum size (four or more at the defaults).
    """
    sub_cx = (subject.cell[0] + subject.cell[2]) / 2
    ref_cx = sum((b[0] + b[2]) / 2 for b in reference.boxes) / len(reference.boxes)
    left = sub_cx < ref_cx
    facing = min(reference.boxes, key=lambda b: b[0]) if left else max(reference.boxes, key=lambda b: b[2])
    spacing = _NEXT_TO_GAP
    width = min(subject.boxes[0][2] - subject.boxes[0][0], (NEXT_TO_MAX_GAP - 2 * spacing) / (subject.count - 1) - spacing)
    width = max(width, MIN_SIDE)
    if (subject.count - 1) * (width + spacing) + spacing > NEXT_TO_MAX_GAP:
        return False
    height = max(MIN_SIDE, width / subject.aspect)
    cy = min(max(facing[3] - height / 2, height / 2), 1.0 - height / 2)  # on the neighbour's ground line
    boxes = []
    for j in range(subject.count):  # j = 0 touches the reference
        if left:
            x1 = facing[0] - spacing - j * (width + spacing)
            box = [x1 - width, cy - height / 2, x1, cy + height / 2]
        else:
            x0 = facing[2] + spacing + j * (width + spacing)
            box = [x0, cy - height / 2, x0 + width, cy + height / 2]
        if box[0] < 0.0 or box[2] > 1.0:
            return False  # no room on that side
        boxes.append(box)
    subject.boxes = sorted(boxes, key=lambda b: b[0])  # instances left to right
    subject.slots = [tuple(b) for b in subject.boxes]  # type: ignore[misc]
    return True


def _row_spans(boxes: list[list[float]]) -> list[list[float]]:
    """The rows a set of boxes forms, as [top, bottom] spans, top to bottom."""
    spans: list[list[float]] = []
    for box in sorted(boxes, key=lambda b: b[1]):
        if spans and box[1] < spans[-1][1] and box[3] > spans[-1][0]:
            spans[-1] = [min(spans[-1][0], box[1]), max(spans[-1][1], box[3])]
        else:
            spans.append([box[1], box[3]])
    return spans


def _stack_beside(subject: _Group, reference: _Group) -> None:
    """Re-stack a column of subject instances level with the reference's rows of instances.

    ``next_to`` asks EVERY subject instance to overlap some reference instance vertically
    (`scenewright.layout.relations.NEXT_TO_MIN_VERTICAL_OVERLAP`): instance k goes beside reference row
    ``k * rows // count``, several instances sharing one row's height when there are more of them.
    """
    # Each row of reference instances must be tall enough to hold its share of subject instances.
    share = math.ceil(subject.count / len(_row_spans(reference.boxes)))
    need_h = share * MIN_SIDE * 1.1
    reference.boxes = [
        _stretch_height(_grow_within(box, slot, need_h * need_h * reference.aspect), slot, need_h)
        if box[3] - box[1] < need_h else box
        for box, slot in zip(reference.boxes, reference.slots)
    ]  # fmt: skip
    spans = _row_spans(reference.boxes)
    n, rows = subject.count, len(spans)
    per_row = [sum(1 for k in range(n) if k * rows // n == r) for r in range(rows)]
    x0, _, x1, _ = subject.cell
    slots, fills = [], []
    for (top, bottom), members in zip(spans, per_row):
        if members == 0:
            continue
        step = (bottom - top) / members
        if step < MIN_SIDE:
            return  # too short to hold them; leave the grid (violations() will say so)
        slots += [(x0, top + j * step, x1, top + (j + 1) * step) for j in range(members)]
    for box, slot in zip(subject.boxes, subject.slots):
        fills.append((box[2] - box[0]) / max(1e-9, min(slot[2] - slot[0], (slot[3] - slot[1]) * subject.aspect)))
    subject.slots = slots
    subject.boxes = [_fit(slot, subject.aspect, min(1.0, fill)) for slot, fill in zip(slots, fills)]


def _flank_between(spec: PromptSpec, groups: list[_Group], notes: list[str]) -> None:
    """'a cat between two trees' (``between`` with references ``(r, r)``): r's instances flank the subject.

    The subject and the reference share a cell (step 1); here their boxes are re-spread along
    one line over that cell (or over the reference's own cell, when a region narrows it), half
    the reference instances before the subject and the rest after it, each box keeping its
    ground line. A spread that would break a requirement that held is undone (noted).
    """
    for rel in spec.relations:
        if rel.kind != "between" or rel.references[0] != rel.references[1] or rel.subject == rel.references[0]:
            continue
        subject, reference = groups[rel.subject], groups[rel.references[0]]
        if reference.count < 2:
            notes.append(f"'{spec.objects[rel.subject].phrase}' between the instances of one "
                         f"'{spec.objects[rel.references[0]].phrase}' needs two of them; not placed between")
            continue
        spans = [(min(subject.cell[0], reference.cell[0]), max(subject.cell[2], reference.cell[2])),
                 (reference.cell[0], reference.cell[2])]  # fmt: skip
        if not any(_keep_unless_broken(spec, groups, lambda span=span: _spread(subject, reference, span)) for span in spans):
            notes.append(f"'{spec.objects[rel.subject].phrase}' could not be placed between the "
                         f"'{spec.objects[rel.references[0]].phrase}' instances without breaking another requirement")


def _spread(subject: _Group, reference: _Group, span: tuple[float, float]) -> None:
    """Half the reference's boxes, the subject's, then the rest, spread evenly along ``span`` on their ground lines."""
    half = reference.count // 2
    ref_boxes = sorted(reference.boxes, key=lambda b: b[0])
    line = ref_boxes[:half] + sorted(subject.boxes, key=lambda b: b[0]) + ref_boxes[half:]
    x0, x1 = span
    widths = [b[2] - b[0] for b in line]
    scale = min(1.0, 0.9 * (x1 - x0) / sum(widths))
    gap = ((x1 - x0) - scale * sum(widths)) / (len(line) + 1)
    placed, x = [], x0 + gap
    for box in line:
        w, h = max(MIN_SIDE, (box[2] - box[0]) * scale), max(MIN_SIDE, (box[3] - box[1]) * scale)
        placed.append([x, box[3] - h, x + w, box[3]])  # shrunk about the bottom edge: same ground line
        x += w + gap
    reference.boxes = placed[:half] + placed[half + subject.count :]
    subject.boxes = placed[half : half + subject.count]
    for g in (reference, subject):
        g.slots = [tuple(b) for b in g.boxes]  # type: ignore[misc]


def _keep_unless_broken(spec: PromptSpec, groups: list[_Group], move: Callable[[], bool | None]) -> bool:
    """Apply ``move()`` to the groups' boxes; undo it and return False when it breaks a requirement that held.

    ``move`` may also return False itself to refuse (nothing it changed is kept).
    """
    before = {key for key, _ in requirement_failures(spec, _to_layout(spec, groups))}
    saved = [(list(g.boxes), list(g.slots)) for g in groups]
    ok = move() is not False
    inside = all(0.0 <= v <= 1.0 for g in groups for b in g.boxes for v in b)
    if ok and inside and {key for key, _ in requirement_failures(spec, _to_layout(spec, groups))} <= before:
        return True
    for g, (boxes, slots) in zip(groups, saved):
        g.boxes, g.slots = boxes, slots
    return False


def _rest_on_supports(spec: PromptSpec, groups: list[_Group], notes: list[str]) -> None:
    """'X on a sofa': X's bottom edge sinks :data:`REST_DEPTH` of its height into the support's top.

    For ``above(X, Y)`` with Y one instance of a :data:`scenewright.layout.vocabulary.SUPPORT_KINDS` kind, the X
    boxes standing lowest (X's ground line) are put on one ground line on Y's top, and Y is
    widened to span them and its own box (or, when that breaks a requirement such as Y's region,
    the X boxes slide over Y instead), so every resting X lies within Y's width with its centre
    above Y's. The overlap stays under the geometry checker's ``max_overlap``. A support that
    cannot hold them without breaking a requirement that held, or overlapping an unrelated box,
    stays where it was (noted).
    """
    supported: dict[int, list[int]] = {}
    for rel in spec.relations:
        y = rel.references[0] if rel.references else -1
        if rel.kind == "above" and y != rel.subject and spec.objects[y].name in SUPPORT_KINDS and groups[y].count == 1:
            supported.setdefault(y, []).append(rel.subject)
    for y, held in supported.items():
        if not any(_keep_unless_broken(spec, groups, lambda widen=widen: _rest_on_support(spec, groups, y, held, widen)) for widen in (True, False)):
            notes.append(f"'{spec.objects[y].phrase}' could not be placed under what rests on it; kept apart")


def _rest_on_support(spec: PromptSpec, groups: list[_Group], y: int, held: list[int], widen: bool) -> bool:
    """One attempt of :func:`_rest_on_supports`: widen the support, or (``widen=False``) slide what it holds over it."""
    support = groups[y]
    boxes = [b for x in held for b in groups[x].boxes]
    ground = max(b[3] for b in boxes)
    resting = [b for b in boxes if b[3] >= ground - 0.5 * (b[3] - b[1])]  # the lowest row of what it holds
    depth = REST_DEPTH * min(b[3] - b[1] for b in resting)
    own = support.boxes[0]
    # What it holds comes down onto the support's top (the support keeps its place low in the
    # picture); a support higher than that ground line comes up to it instead.
    drop = max(0.0, own[1] + depth - ground)
    line = ground + drop  # the ground line they rest on
    left, right = min(b[0] for b in resting) - _SUPPORT_MARGIN, max(b[2] for b in resting) + _SUPPORT_MARGIN
    scale = 1.0
    if widen:
        dx, x0, x1 = 0.0, max(0.0, min(own[0], left)), min(1.0, max(own[2], right))
    else:  # slide over the support, shrinking (about the bottom edge) what is too wide for it
        scale = min(1.0, (own[2] - own[0]) / (right - left))
        if scale < 0.5:
            return False
        dx, x0, x1 = (own[0] + own[2]) / 2 - (left + right) / 2, own[0], own[2]
        centre = (left + right) / 2
        for x in held:
            groups[x].boxes = [
                [centre + (b[0] - centre) * scale, b[3] - (b[3] - b[1]) * scale, centre + (b[2] - centre) * scale, b[3]]
                for b in groups[x].boxes
            ]
        depth *= scale
    top = line - depth
    bottom = max(own[3], top + 2 * depth + MIN_SIDE)
    lift = max(0.0, bottom - 1.0)  # no room under the ground line: raise the support and what it holds
    # Groups standing beside what it holds ("a cat on a bed next to pillows") come down with it.
    beside = {
        other
        for rel in spec.relations
        if rel.kind in ("next_to", "left_of", "right_of")
        for a, other in ((rel.subject, rel.references[0]), (rel.references[0], rel.subject))
        if a in held and other not in held and other != y
    }
    for x in [*held, *sorted(beside)]:
        g = groups[x]
        # resting boxes come down onto the ground line, the others (stacked higher) move with them
        shifts = [line - b[3] if x in held and b[3] >= ground - 0.5 * (b[3] - b[1]) else drop for b in g.boxes]
        g.boxes = [[b[0] + dx, b[1] + dy - lift, b[2] + dx, b[3] + dy - lift] for b, dy in zip(g.boxes, shifts)]
        g.slots = [tuple(b) for b in g.boxes]  # type: ignore[misc]
    support.boxes = [[x0, top - lift, x1, bottom - lift]]
    support.slots = [tuple(support.boxes[0])]  # type: ignore[misc]
    return not _crowds_unrelated(groups, y, held)


def _crowds_unrelated(groups: list[_Group], y: int, held: list[int]) -> bool:
    """Whether the support box of group ``y`` overlaps a box it does not hold by more than a quarter of the smaller."""
    box = groups[y].boxes[0]
    for g in groups:
        if g.index == y or g.index in held:
            continue
        for other in g.boxes:
            w = min(box[2], other[2]) - max(box[0], other[0])
            h = min(box[3], other[3]) - max(box[1], other[1])
            if w > 0 and h > 0 and w * h > 0.25 * min(_area(box), _area(other)):
                return True
    return False


def _to_layout(spec: PromptSpec, groups: list[_Group]) -> Layout:
    objects = []
    for g, o in zip(groups, spec.objects):
        for box in g.boxes:
            clipped = tuple(min(1.0, max(0.0, v)) for v in box)
            objects.append(LayoutObject(name=o.name, phrase=o.phrase, box=clipped))  # type: ignore[arg-type]
    prompt = spec.prompt if spec.prompt.strip() else "(empty prompt)"
    return Layout(prompt=prompt, background=spec.background, negative=", ".join(spec.negative), objects=tuple(objects))


class OfflinePlanner:
    """Rule-based planner: :func:`scenewright.layout.parse.parse_prompt` then :func:`plan_spec`. No model, deterministic."""

    name = "offline"

    def plan(self, prompt: str, *, seed: int = 0) -> Layout:
        """A layout for ``prompt``; ``seed`` jitters box sizes and positions inside their slots (0: none)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise LayoutError("`prompt` is empty; give the text the image should show")
        layout, _ = plan_spec(parse_prompt(prompt), seed=seed)
        return layout

    def plan_with_notes(self, prompt: str, *, seed: int = 0) -> tuple[Layout, PromptSpec, list[str]]:
        """Like :meth:`plan`, also returning the parsed spec and the parser's and planner's notes."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise LayoutError("`prompt` is empty; give the text the image should show")
        spec = parse_prompt(prompt)
        layout, notes = plan_spec(spec, seed=seed)
        return layout, spec, [*spec.notes, *notes]


__all__ = ["KIND_SHAPES", "MIN_SIDE", "OfflinePlanner", "plan_spec"]
