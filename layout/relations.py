"""Does a layout give a prompt what it asks for? Relation, count and size predicates.

Pure functions over :class:`~scenewright.layout.schema.Layout` and :class:`~scenewright.layout.spec.PromptSpec`,
shared by the offline planner (to place boxes), the geometry checker (to keep every
requirement through a repair) and the evaluators (to score layouts).

Conventions (LMD, Lian et al. 2023, judges spatial relations by box centres):

- Boxes are normalized ``[x0, y0, x1, y1]``; y grows DOWN, so "above" means a smaller centre y.
- A spec group (one :class:`~scenewright.layout.spec.ObjectSpec`) owns the layout objects whose ``name``
  equals the spec's name. When several specs share a name ("a red apple and a green apple"),
  an object belongs to the spec whose attributes all appear as words of the object's phrase,
  the most specific such spec winning (ties: the first); see :func:`group_members`.
- A relation holds when it holds for EVERY subject instance against EVERY reference instance
  (``next_to``: every subject instance is next to at least one reference instance).
  A relation with an empty subject or reference group does not hold.
- ``between`` with one group twice, ``references=(r, r)`` ("a cat between two trees"): the
  subject lies between the instances of ``r``, i.e. some instance of ``r`` is left of every
  subject instance and another right of them all (so ``r`` needs at least two instances).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from scenewright.layout.schema import Layout, LayoutObject
from scenewright.layout.spec import ObjectSpec, PromptSpec, RelationSpec

# ------------------------------------------------------------------ thresholds
#: ``next_to``: largest horizontal gap between the two boxes, as a fraction of the canvas width.
NEXT_TO_MAX_GAP = 0.15
#: ``next_to``: smallest vertical overlap of the two boxes, as a fraction of the shorter box's height.
NEXT_TO_MIN_VERTICAL_OVERLAP = 0.25
#: ``next_to``: smallest horizontal centre distance, as a fraction of the narrower box's width
#: (side by side, not stacked or one inside the other).
NEXT_TO_MIN_CENTER_DISTANCE = 0.5
#: ``in_row``: largest spread of the instances' centre y, as a fraction of the shortest instance's height.
IN_ROW_MAX_SPREAD = 0.5
#: Explicit size words -> ``(bound on the box area as a fraction of the canvas, "min" | "max")``.
#: A "large" box covers at least 16% of the canvas (0.4 x 0.4), "huge" at least 36% (0.6 x 0.6);
#: a "small" one at most 9% (0.3 x 0.3), a "tiny" one at most 2.25% (0.15 x 0.15).
SIZE_AREA_BOUNDS: dict[str, tuple[float, str]] = {
    "large": (0.16, "min"),
    "huge": (0.36, "min"),
    "small": (0.09, "max"),
    "tiny": (0.0225, "max"),
}
#: "tall": box height at least this many times its width (normalized units, i.e. a square canvas).
TALL_ASPECT = 1.5

#: Regions of the "at" relation on a canvas cut in thirds: which centre coordinates they allow.
_THIRD = 1 / 3
_REGION_TESTS = {
    "left": lambda cx, cy: cx < _THIRD,
    "right": lambda cx, cy: cx > 2 * _THIRD,
    "top": lambda cx, cy: cy < _THIRD,
    "bottom": lambda cx, cy: cy > 2 * _THIRD,
    "center": lambda cx, cy: _THIRD <= cx <= 2 * _THIRD and _THIRD <= cy <= 2 * _THIRD,
    "top left": lambda cx, cy: cx < _THIRD and cy < _THIRD,
    "top right": lambda cx, cy: cx > 2 * _THIRD and cy < _THIRD,
    "bottom left": lambda cx, cy: cx < _THIRD and cy > 2 * _THIRD,
    "bottom right": lambda cx, cy: cx > 2 * _THIRD and cy > 2 * _THIRD,
}
#: Number of references each relation kind takes.
_ARITY = {
    "left_of": 1,
    "right_of": 1,
    "above": 1,
    "below": 1,
    "next_to": 1,
    "bigger_than": 1,
    "smaller_than": 1,
    "between": 2,
    "in_row": 0,
    "at": 0,
}
_WORDS = {
    "left_of": "left of",
    "right_of": "right of",
    "above": "above",
    "below": "below",
    "next_to": "next to",
    "bigger_than": "bigger than",
    "smaller_than": "smaller than",
}


# ------------------------------------------------------------------ groups
def _words(text: str) -> str:
    """Lower-cased words of ``text`` joined by single spaces and padded, for whole-word search."""
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def _matches_attributes(phrase: str, attributes: Sequence[str]) -> bool:
    words = _words(phrase)
    return all(_words(attribute) in words for attribute in attributes)


def group_members(spec: PromptSpec, layout: Layout) -> list[list[int]]:
    """Indices of the layout objects that belong to each of ``spec.objects`` (see the module docstring).

    An object whose name no spec has, or whose phrase carries none of the attribute sets of the
    specs sharing its name, belongs to no group (``violations`` reports it).
    """
    members: list[list[int]] = [[] for _ in spec.objects]
    by_name: dict[str, list[int]] = {}
    for index, object_spec in enumerate(spec.objects):
        by_name.setdefault(object_spec.name, []).append(index)
    for object_index, obj in enumerate(layout.objects):
        candidates = by_name.get(obj.name, [])
        if len(candidates) == 1:
            members[candidates[0]].append(object_index)
            continue
        fitting = [c for c in candidates if _matches_attributes(obj.phrase, spec.objects[c].attributes)]
        if fitting:
            # The most specific spec wins: "a red apple" belongs to "red apple", not to a bare "apple".
            best = max(fitting, key=lambda c: (len(spec.objects[c].attributes), -c))
            members[best].append(object_index)
    return members


# ------------------------------------------------------------------ predicates
def _check_relation(relation: RelationSpec, spec: PromptSpec) -> None:
    """Raise ``ValueError`` naming the field when ``relation`` does not fit ``spec``."""
    n = len(spec.objects)
    if relation.kind not in _ARITY:
        raise ValueError(f"relation.kind {relation.kind!r} is unknown; use one of {sorted(_ARITY)}")
    for field_name, index in [("subject", relation.subject)] + [("references", r) for r in relation.references]:
        if not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"relation.{field_name} {index!r} is not an index into spec.objects ({n} objects)")
    arity = _ARITY[relation.kind]
    if len(relation.references) != arity and not (relation.kind == "in_row"):
        raise ValueError(
            f"relation.references of a {relation.kind!r} relation must hold {arity} index(es), "
            f"got {len(relation.references)}"
        )
    if relation.kind == "at" and relation.where not in _REGION_TESTS:
        raise ValueError(f"relation.where {relation.where!r} is not a region; use one of {list(_REGION_TESTS)}")


def _next_to(a: LayoutObject, b: LayoutObject) -> bool:
    """Side by side: a small horizontal gap, overlapping heights, centres apart horizontally."""
    gap = max(a.box[0], b.box[0]) - min(a.box[2], b.box[2])  # < 0 when they overlap in x
    vertical_overlap = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    return (
        gap <= NEXT_TO_MAX_GAP
        and vertical_overlap >= NEXT_TO_MIN_VERTICAL_OVERLAP * min(a.height, b.height)
        and abs(a.center[0] - b.center[0]) >= NEXT_TO_MIN_CENTER_DISTANCE * min(a.width, b.width)
    )


def _strictly_between(values: list[float], low: list[float], high: list[float], margin: float) -> bool:
    return max(low) + margin < min(values) and max(values) + margin < min(high)


def relation_holds(relation: RelationSpec, spec: PromptSpec, layout: Layout, *, margin: float = 0.0) -> bool:
    """Whether ``layout`` satisfies ``relation`` of ``spec``, judged by box centres (LMD's convention).

    ``margin`` is the least centre distance (normalized units) the ordering relations
    (left_of, right_of, above, below, between) demand. ``in_row`` puts the subject's instances
    and those of any references on one row.
    """
    _check_relation(relation, spec)
    members = group_members(spec, layout)
    return _relation_holds(relation, members, layout, margin)


def _relation_holds(relation: RelationSpec, members: list[list[int]], layout: Layout, margin: float) -> bool:
    objects = layout.objects
    subject = [objects[i] for i in members[relation.subject]]
    references = [[objects[i] for i in members[r]] for r in relation.references]
    if not subject or any(not group for group in references):
        return False
    kind = relation.kind
    sx = [o.center[0] for o in subject]
    sy = [o.center[1] for o in subject]
    if kind == "at":
        region = _REGION_TESTS[relation.where]  # type: ignore[index]
        return all(region(*o.center) for o in subject)
    if kind == "in_row":
        row = subject + [o for group in references for o in group]
        ys = [o.center[1] for o in row]
        return max(ys) - min(ys) <= IN_ROW_MAX_SPREAD * min(o.height for o in row)
    if kind == "between" and relation.references[0] == relation.references[1]:
        rx = [o.center[0] for o in references[0]]
        return min(rx) + margin < min(sx) and max(sx) + margin < max(rx)
    if kind == "between":
        ax = [o.center[0] for o in references[0]]
        bx = [o.center[0] for o in references[1]]
        return _strictly_between(sx, ax, bx, margin) or _strictly_between(sx, bx, ax, margin)
    reference = references[0]
    rx = [o.center[0] for o in reference]
    ry = [o.center[1] for o in reference]
    if kind == "left_of":
        return max(sx) + margin < min(rx)
    if kind == "right_of":
        return min(sx) > max(rx) + margin
    if kind == "above":
        return max(sy) + margin < min(ry)
    if kind == "below":
        return min(sy) > max(ry) + margin
    if kind == "next_to":
        return all(any(_next_to(s, r) for r in reference) for s in subject)
    if kind == "bigger_than":
        return min(o.area for o in subject) > max(o.area for o in reference)
    if kind == "smaller_than":
        return max(o.area for o in subject) < min(o.area for o in reference)
    raise ValueError(f"relation.kind {kind!r} is unknown")  # pragma: no cover - _check_relation guards


def size_holds(object_spec: ObjectSpec, obj: LayoutObject) -> bool:
    """Whether one instance's box fits its explicit size word (:data:`SIZE_AREA_BOUNDS`, :data:`TALL_ASPECT`)."""
    if object_spec.size is None:
        return True
    if object_spec.size == "tall":
        return obj.height >= TALL_ASPECT * obj.width
    bound, side = SIZE_AREA_BOUNDS[object_spec.size]
    # The 1e-9 slack keeps a box of exactly 0.4 x 0.4 "large" despite float noise in x1 - x0.
    return obj.area >= bound - 1e-9 if side == "min" else obj.area <= bound + 1e-9


# ------------------------------------------------------------------ report
def describe_relation(relation: RelationSpec, spec: PromptSpec) -> str:
    """Readable form of a relation: "'cat' left of 'dog'"."""
    subject = f"'{spec.objects[relation.subject].phrase}'"
    refs = [f"'{spec.objects[r].phrase}'" for r in relation.references]
    if relation.kind == "at":
        return f"{subject} at the {relation.where}"
    if relation.kind == "in_row":
        return f"{' and '.join([subject, *refs])} in a row"
    if relation.kind == "between" and relation.references[0] == relation.references[1]:
        return f"{subject} between the {refs[0]} instances"
    if relation.kind == "between":
        return f"{subject} between {refs[0]} and {refs[1]}"
    return f"{subject} {_WORDS[relation.kind]} {refs[0]}"


def requirement_failures(spec: PromptSpec, layout: Layout, *, margin: float = 0.0) -> list[tuple[tuple, str]]:
    """Every requirement ``layout`` breaks as ``(key, message)``; keys identify the requirement.

    Keys are stable across box edits (they name the requirement, not the numbers), so a
    repair can check that it broke nothing new: ``keys(after) <= keys(before)``.
    """
    for relation in spec.relations:
        _check_relation(relation, spec)
    members = group_members(spec, layout)
    objects = layout.objects
    failures: list[tuple[tuple, str]] = []

    for g, (object_spec, indices) in enumerate(zip(spec.objects, members)):
        if len(indices) != object_spec.count:
            failures.append(
                (
                    ("count", g),
                    f"expected {object_spec.count} x '{object_spec.phrase}' ({object_spec.name}), "
                    f"the layout has {len(indices)}",
                )
            )
    owned = {i for indices in members for i in indices}
    negative = set(spec.negative)
    for i, obj in enumerate(objects):
        if obj.name in negative:
            failures.append((("negative", i), f"objects[{i}] '{obj.name}': the prompt says there must be no {obj.name}"))
        elif i not in owned:
            failures.append((("extra", i), f"objects[{i}] '{obj.phrase}': the prompt does not ask for it"))

    for g, (object_spec, indices) in enumerate(zip(spec.objects, members)):
        for i in indices:
            if not size_holds(object_spec, objects[i]):
                failures.append(((("size", g, i)), _size_message(object_spec, i, objects[i])))

    for r, relation in enumerate(spec.relations):
        if not _relation_holds(relation, members, layout, margin):
            failures.append((("relation", r), f"relation {relation.kind}: {describe_relation(relation, spec)} does not hold"))
    return failures


def _size_message(object_spec: ObjectSpec, index: int, obj: LayoutObject) -> str:
    head = f"objects[{index}] '{obj.phrase}' should be {object_spec.size}"
    if object_spec.size == "tall":
        return f"{head}: its height {obj.height:.3f} is under {TALL_ASPECT} x its width {obj.width:.3f}"
    bound, side = SIZE_AREA_BOUNDS[object_spec.size]  # type: ignore[index]
    need = "at least" if side == "min" else "at most"
    return f"{head}: it covers {obj.area:.1%} of the canvas, needs {need} {bound:.2%}"


def violations(spec: PromptSpec, layout: Layout, *, margin: float = 0.0) -> list[str]:
    """Human-readable list of everything ``layout`` breaks of ``spec``; empty when all is satisfied.

    Checks exact counts per spec group, kinds the prompt negates ("without X"), objects the
    prompt does not ask for, explicit sizes (:data:`SIZE_AREA_BOUNDS`) and every relation.
    """
    return [message for _, message in requirement_failures(spec, layout, margin=margin)]
