"""The procedural shapes world: seeded scenes of flat colored shapes, their masks, boxes and captions.

A scene is 1-4 flat shapes (circle, square, triangle, star) in one of six well-separated
colors on a white 64x64 canvas. Objects come in groups of identical instances (same color,
shape and size) so that captions can use counts ("two red circles"). The renderer is exact
(no anti-aliasing): every pixel is either background or one object's palette color, which
is what lets :mod:`scenewright.synth.shapes.detector` recover the scene exactly.

Captions describe every object of the scene and only what is true of it: counts, colors,
sizes, an absolute region ("in the top left") or a relation between two groups
("to the left of", "above"). Each caption word records the objects it refers to, so a
training loss can align a word's cross-attention with its objects' masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenewright.layout.schema import Layout, LayoutObject

CANVAS = 64
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

#: Color name -> RGB. Pairwise RGB distances are >= 90 and every color is >= 150 from white.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 160, 20),
    "blue": (30, 60, 230),
    "yellow": (240, 220, 0),
    "purple": (150, 30, 200),
    "orange": (250, 130, 0),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")

#: Side (pixels) of the square a shape is inscribed in, per size word: [low, high).
SIZE_RANGE: dict[str, tuple[float, float]] = {"small": (12.0, 16.0), "large": (21.0, 28.0)}
#: Pixels of background kept between any two objects' boxes, so components never touch.
MIN_GAP = 2
#: Star inner/outer radius ratio: fatter than the classic 0.382 so small stars keep their points' roots.
STAR_INNER_RATIO = 0.45
#: Curriculum levels: (max groups, max objects, sizes allowed).
CURRICULUM: dict[int, tuple[int, int, tuple[str, ...]]] = {
    0: (1, 1, ("large",)),
    1: (2, 2, ("large", "small")),
    2: (4, 4, ("large", "small")),
}

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
#: Region name -> caption phrase. Regions are the 3x3 thirds of the canvas (see :func:`region_of`).
_REGION_PHRASES = {
    "top left": ("in the top left", "in the top left corner"),
    "top right": ("in the top right", "in the top right corner"),
    "bottom left": ("in the bottom left", "in the bottom left corner"),
    "bottom right": ("in the bottom right", "in the bottom right corner"),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "left": ("on the left",),
    "right": ("on the right",),
    "center": ("in the center", "in the middle"),
}
#: Relation kind (layout.spec.RelationKind) -> caption phrases.
_RELATION_PHRASES = {
    "left_of": ("to the left of", "left of"),
    "right_of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below",),
}
_INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}


# ------------------------------------------------------------------ geometry
def _pixel_centers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) coordinates of pixel centres, each (size, size)."""
    coords = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(coords, coords, indexing="xy")


def _star_polygon(cx: float, cy: float, side: float) -> np.ndarray:
    """The 10 vertices (x, y) of an upright 5-pointed star whose bounding box is ~``side`` wide, centred at (cx, cy)."""
    # An outer radius R gives a box 2 R sin(72deg) wide and R (1 + cos(36deg)) tall.
    outer = side / (2 * np.sin(np.deg2rad(72)))
    height = outer * (1 + np.cos(np.deg2rad(36)))
    centre_y = cy - height / 2 + outer  # top point at cy - height / 2
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, outer, outer * STAR_INNER_RATIO)
    return np.stack([cx + radii * np.cos(angles), centre_y + radii * np.sin(angles)], axis=1)


def _inside_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorized over points; polygon is (V, 2)."""
    inside = np.zeros(x.shape, dtype=bool)
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = ax + (y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (x < x_at)
    return inside


def shape_mask(shape: str, cx: float, cy: float, side: float, size: int = CANVAS) -> np.ndarray:
    """Boolean (size, size) mask of ``shape`` inscribed in the ``side``-pixel square centred at (cx, cy)."""
    x, y = _pixel_centers(size)
    return shape_mask_at(shape, cx, cy, side, x, y)


def shape_mask_at(shape: str, cx: float, cy: float, side: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points (x, y) lie inside ``shape`` inscribed in the ``side``-pixel square centred at (cx, cy)."""
    half = side / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    if shape == "triangle":  # upright isosceles: apex at the top centre, base at the bottom
        polygon = np.array([[cx, cy - half], [cx + half, cy + half], [cx - half, cy + half]])
        return _inside_polygon(x, y, polygon)
    if shape == "star":
        return _inside_polygon(x, y, _star_polygon(cx, cy, side))
    raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight normalized [x0, y0, x1, y1] box of a boolean mask (pixel edges, so a 1-pixel mask has area 1/HW)."""
    if not mask.any():
        raise ValueError("mask is empty; an object must cover at least one pixel")
    height, width = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height)


def region_of(cx: float, cy: float) -> str:
    """The 3x3 region ('top left', 'top', 'center', ...) of a normalized centre."""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    return " ".join(p for p in (row, col) if p) or "center"


# --------------------------------------------------------------------- scene
@dataclass(frozen=True)
class ShapeObject:
    """One rendered object: what it is and exactly which pixels it covers."""

    shape: str
    color: str
    size: str  # "small" | "large"
    mask: np.ndarray = field(repr=False, compare=False)  # (H, W) bool
    box: tuple[float, float, float, float]  # normalized xyxy from the mask
    group: int  # index of the group of identical instances it belongs to

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def phrase(self, with_size: bool = False) -> str:
        words = [self.size] if with_size else []
        return " ".join(["a", *words, self.color, self.shape])


@dataclass(frozen=True)
class Caption:
    """Caption text plus, per whitespace word, the indices of the objects that word refers to."""

    text: str
    word_objects: tuple[tuple[int, ...], ...]  # len == len(text.split())
    with_size: bool = False  # whether object phrases mention the size word


@dataclass(frozen=True)
class Scene:
    """A sampled scene: its objects (in group order) and a caption that is true of it."""

    objects: tuple[ShapeObject, ...]
    caption: Caption
    size: int = CANVAS

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 image: white background, each object in its palette color."""
        return render_objects(self.objects, self.size)

    def to_layout(self) -> Layout:
        """The scene as the project's :class:`~scenewright.layout.schema.Layout` (name = shape, phrase = 'a red circle')."""
        return Layout(
            prompt=self.caption.text,
            objects=tuple(
                LayoutObject(name=o.shape, phrase=o.phrase(self.caption.with_size), box=o.box) for o in self.objects
            ),
        )

    def group_masks(self) -> list[np.ndarray]:
        """Union mask per group, in group order: (H, W) bool each."""
        groups = sorted({o.group for o in self.objects})
        return [np.any([o.mask for o in self.objects if o.group == g], axis=0) for g in groups]


def render_objects(objects: tuple[ShapeObject, ...] | list[ShapeObject], size: int = CANVAS) -> np.ndarray:
    """Paint objects' masks in their palette colors on a white (size, size, 3) uint8 canvas."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND_RGB
    for obj in objects:
        image[obj.mask] = PALETTE[obj.color]
    return image


# ------------------------------------------------------------------ sampling
def _check_level(curriculum_level: int) -> None:
    if curriculum_level not in CURRICULUM:
        raise ValueError(f"curriculum_level={curriculum_level!r} is not a level; use one of {sorted(CURRICULUM)}")


def _sample_group_counts(rng: np.random.Generator, max_objects: int, max_groups: int) -> list[int]:
    """Instance count per group: a total of 1..max_objects objects split into 1..max_groups groups."""
    total = int(rng.integers(1, max_objects + 1))
    groups = int(rng.integers(1, min(total, max_groups) + 1))
    counts = [1] * groups
    for _ in range(total - groups):
        counts[int(rng.integers(groups))] += 1
    return counts


def _place(
    rng: np.random.Generator, sides: list[float], size: int, tries: int = 200
) -> list[tuple[float, float]] | None:
    """Centres for squares of the given sides, inside the canvas and >= MIN_GAP apart; None if none found."""
    placed: list[tuple[float, float, float]] = []
    for side in sides:
        for _ in range(tries):
            cx = rng.uniform(side / 2 + 1, size - side / 2 - 1)
            cy = rng.uniform(side / 2 + 1, size - side / 2 - 1)
            if all(
                abs(cx - px) * 2 >= side + ps + 2 * MIN_GAP or abs(cy - py) * 2 >= side + ps + 2 * MIN_GAP
                for px, py, ps in placed
            ):
                placed.append((cx, cy, side))
                break
        else:
            return None
    return [(cx, cy) for cx, cy, _ in placed]


def sample_scene(
    rng: np.random.Generator,
    max_objects: int = 4,
    curriculum_level: int = 2,
    size: int = CANVAS,
) -> Scene:
    """A random scene and a true caption of it; deterministic given ``rng``'s state."""
    _check_level(curriculum_level)
    if not 1 <= max_objects <= 4:
        raise ValueError(f"max_objects={max_objects!r} must be in 1..4 (captions count up to 'four')")
    if size < 32:
        raise ValueError(f"size={size!r} is too small for shapes of 10+ pixels; use size >= 32")
    level_groups, level_objects, sizes = CURRICULUM[curriculum_level]
    max_objects = min(max_objects, level_objects)
    scale = size / CANVAS
    while True:  # rejection: a crowded draw that cannot be placed is redrawn
        counts = _sample_group_counts(rng, max_objects, level_groups)
        kinds = rng.permutation(len(COLORS) * len(SHAPES))[: len(counts)]  # distinct (color, shape) per group
        group_specs = []
        for g, (count, kind) in enumerate(zip(counts, kinds)):
            color, shape = COLORS[kind // len(SHAPES)], SHAPES[kind % len(SHAPES)]
            size_word = sizes[int(rng.integers(len(sizes)))]
            group_specs.append((g, count, color, shape, size_word))
        sides, members = [], []
        for g, count, color, shape, size_word in group_specs:
            low, high = SIZE_RANGE[size_word]
            for _ in range(count):
                sides.append(float(rng.uniform(low, high)) * scale)
                members.append((g, color, shape, size_word))
        centres = _place(rng, sides, size)
        if centres is not None:
            break
    objects = tuple(
        ShapeObject(shape=shape, color=color, size=size_word, mask=(m := shape_mask(shape, cx, cy, side, size)),
                    box=mask_box(m), group=g)
        for (g, color, shape, size_word), (cx, cy), side in zip(members, centres, sides)
    )
    return Scene(objects=objects, caption=describe(objects, rng), size=size)


# ------------------------------------------------------------------ captions
def _group_phrase(objects: tuple[ShapeObject, ...], indices: list[int], with_size: bool) -> list[tuple[str, tuple[int, ...]]]:
    """Words (with the objects each refers to) naming one group: 'a red circle', 'two small blue stars'."""
    first = objects[indices[0]]
    refs = tuple(indices)
    count = len(indices)
    if count == 1:
        head = "an" if (with_size and first.size[0] in "aeiou") or (not with_size and first.color[0] in "aeiou") else "a"
        noun = first.shape
    else:
        head = _NUMBER_WORDS[count]
        noun = _PLURALS[first.shape]
    words = [(head, refs)]
    if with_size:
        words.append((first.size, refs))
    words += [(first.color, refs), (noun, refs)]
    return words


def _relation(objects: tuple[ShapeObject, ...], a: list[int], b: list[int], margin: float = 0.05) -> list[str]:
    """Relations that hold between every instance of group ``a`` and every instance of group ``b``."""
    out = []
    ax = [objects[i].center[0] for i in a]
    ay = [objects[i].center[1] for i in a]
    bx = [objects[i].center[0] for i in b]
    by = [objects[i].center[1] for i in b]
    if max(ax) + margin < min(bx):
        out.append("left_of")
    if min(ax) > max(bx) + margin:
        out.append("right_of")
    if max(ay) + margin < min(by):
        out.append("above")
    if min(ay) > max(by) + margin:
        out.append("below")
    return out


def _clear_region(obj: ShapeObject, margin: float = 0.04) -> str | None:
    """The region of an object's centre, or None when the centre sits within ``margin`` of a thirds line."""
    cx, cy = obj.center
    if any(abs(v - line) < margin for v in (cx, cy) for line in (1 / 3, 2 / 3)):
        return None
    return region_of(cx, cy)


def _words(text: str, refs: tuple[int, ...] = ()) -> list[tuple[str, tuple[int, ...]]]:
    return [(w, refs) for w in text.split()]


def describe(objects: tuple[ShapeObject, ...], rng: np.random.Generator) -> Caption:
    """A true caption of ``objects``, phrased at random among the forms the offline parser reads."""
    groups: dict[int, list[int]] = {}
    for i, obj in enumerate(objects):
        groups.setdefault(obj.group, []).append(i)
    members = [groups[g] for g in sorted(groups)]
    # Groups differ in color or shape, so the size word is optional; half the captions carry it.
    with_size = bool(rng.random() < 0.5)
    phrases = [_group_phrase(objects, m, with_size) for m in members]
    words: list[tuple[str, tuple[int, ...]]] = []
    if len(members) == 1:
        words = phrases[0]
        region = _clear_region(objects[members[0][0]]) if len(members[0]) == 1 else None
        if region is not None and rng.random() < 0.7:
            words += _words(str(rng.choice(_REGION_PHRASES[region])))
    elif len(members) == 2:
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        relations = _relation(objects, members[order[0]], members[order[1]])
        if relations and rng.random() < 0.85:
            kind = str(rng.choice(relations))
            words = phrases[order[0]] + _words(str(rng.choice(_RELATION_PHRASES[kind]))) + phrases[order[1]]
        else:
            words = phrases[order[0]] + _words("and") + phrases[order[1]]
    else:
        order = list(rng.permutation(len(members)))
        for k, g in enumerate(order):
            if k == len(order) - 1:
                words += _words("and")
            elif k > 0:
                words[-1] = (words[-1][0] + ",", words[-1][1])
            words += phrases[g]
    text = " ".join(w for w, _ in words)
    return Caption(text=text, word_objects=tuple(refs for _, refs in words), with_size=with_size)
