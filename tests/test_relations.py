"""Relation, count and size predicates: each holds on a hand-made layout and fails on its mirror."""

from __future__ import annotations

import pytest

from scenewright.layout import Layout, ObjectSpec, PromptSpec, RelationSpec
from scenewright.layout.relations import group_members, relation_holds, violations


def make_layout(*objects: tuple) -> Layout:
    """Objects as ``(name, box)`` or ``(name, box, phrase)``."""
    items = []
    for obj in objects:
        name, box = obj[0], obj[1]
        phrase = obj[2] if len(obj) > 2 else f"a {name}"
        items.append({"name": name, "phrase": phrase, "box": list(box)})
    return Layout.parse({"prompt": "test", "objects": items})


def two_kinds(kind: str, **extra) -> PromptSpec:
    return PromptSpec(
        prompt="test",
        objects=(ObjectSpec("cat", 1, "a cat"), ObjectSpec("dog", 1, "a dog")),
        relations=(RelationSpec(kind, 0, (1,), **extra),),
    )


LEFT = (0.05, 0.40, 0.30, 0.60)  # centre (0.175, 0.5)
RIGHT = (0.60, 0.40, 0.85, 0.60)  # centre (0.725, 0.5)
TOP = (0.40, 0.05, 0.60, 0.30)  # centre (0.5, 0.175)
BOTTOM = (0.40, 0.60, 0.60, 0.85)  # centre (0.5, 0.725)


@pytest.mark.parametrize(
    "kind, cat_box, dog_box",
    [
        ("left_of", LEFT, RIGHT),
        ("right_of", RIGHT, LEFT),
        ("above", TOP, BOTTOM),  # y grows down: "above" is the smaller y
        ("below", BOTTOM, TOP),
    ],
)
def test_ordering_relations_hold_one_way_and_fail_the_other(kind, cat_box, dog_box):
    spec = two_kinds(kind)
    assert relation_holds(spec.relations[0], spec, make_layout(("cat", cat_box), ("dog", dog_box)))
    assert not relation_holds(spec.relations[0], spec, make_layout(("cat", dog_box), ("dog", cat_box)))


def test_margin_demands_a_centre_distance():
    spec = two_kinds("left_of")
    close = make_layout(("cat", (0.30, 0.4, 0.50, 0.6)), ("dog", (0.35, 0.4, 0.55, 0.6)))  # centres 0.05 apart
    assert relation_holds(spec.relations[0], spec, close)
    assert not relation_holds(spec.relations[0], spec, close, margin=0.1)


def test_every_instance_must_satisfy_the_relation():
    spec = PromptSpec(
        prompt="two cats left of a dog",
        objects=(ObjectSpec("cat", 2, "a cat"), ObjectSpec("dog", 1, "a dog")),
        relations=(RelationSpec("left_of", 0, (1,)),),
    )
    both_left = make_layout(("cat", LEFT), ("cat", (0.30, 0.1, 0.45, 0.3)), ("dog", RIGHT))
    one_right = make_layout(("cat", LEFT), ("cat", (0.80, 0.1, 0.95, 0.3)), ("dog", RIGHT))
    assert relation_holds(spec.relations[0], spec, both_left)
    assert not relation_holds(spec.relations[0], spec, one_right)


def test_a_missing_group_never_satisfies_a_relation():
    spec = two_kinds("left_of")
    assert not relation_holds(spec.relations[0], spec, make_layout(("cat", LEFT)))


@pytest.mark.parametrize(
    "dog_box, holds",
    [
        ((0.32, 0.42, 0.55, 0.62), True),  # just right of the cat, same height
        ((0.26, 0.40, 0.50, 0.60), True),  # touching with a little overlap
        ((0.70, 0.40, 0.90, 0.60), False),  # too far to the right
        ((0.05, 0.65, 0.30, 0.85), False),  # stacked below, not beside
        ((0.32, 0.05, 0.55, 0.20), False),  # beside but at another height
        ((0.10, 0.42, 0.25, 0.58), False),  # inside the cat's box
    ],
)
def test_next_to_is_side_by_side_and_close(dog_box, holds):
    spec = two_kinds("next_to")
    assert relation_holds(spec.relations[0], spec, make_layout(("cat", LEFT), ("dog", dog_box))) is holds


def _three(kind_refs: tuple[int, ...]) -> PromptSpec:
    return PromptSpec(
        prompt="test",
        objects=(ObjectSpec("cat", 1, "a cat"), ObjectSpec("dog", 1, "a dog"), ObjectSpec("bird", 1, "a bird")),
        relations=(RelationSpec("between", 0, kind_refs),),
    )


def test_between_holds_for_either_reference_order_and_fails_outside():
    middle = (0.40, 0.4, 0.55, 0.6)
    for refs in ((1, 2), (2, 1)):
        spec = _three(refs)
        assert relation_holds(spec.relations[0], spec, make_layout(("cat", middle), ("dog", LEFT), ("bird", RIGHT)))
        assert relation_holds(spec.relations[0], spec, make_layout(("cat", middle), ("dog", RIGHT), ("bird", LEFT)))
        assert not relation_holds(spec.relations[0], spec, make_layout(("cat", LEFT), ("dog", middle), ("bird", RIGHT)))


def test_between_one_plural_reference_needs_an_instance_on_each_side():
    spec = PromptSpec(
        prompt="a cat between two trees",
        objects=(ObjectSpec("cat", 1, "a cat"), ObjectSpec("tree", 2, "a tree")),
        relations=(RelationSpec("between", 0, (1, 1)),),
    )
    middle = (0.40, 0.4, 0.55, 0.6)
    flanked = make_layout(("cat", middle), ("tree", LEFT), ("tree", RIGHT))
    both_left = make_layout(("cat", RIGHT), ("tree", LEFT), ("tree", middle))
    assert relation_holds(spec.relations[0], spec, flanked)
    assert not relation_holds(spec.relations[0], spec, both_left)
    assert not relation_holds(spec.relations[0], spec, make_layout(("cat", middle), ("tree", LEFT)))  # one tree
    assert violations(spec, both_left) == ["relation between: 'a cat' between the 'a tree' instances does not hold"]


def test_in_row_needs_centres_on_one_line():
    spec = PromptSpec(
        prompt="three apples in a row",
        objects=(ObjectSpec("apple", 3, "an apple"),),
        relations=(RelationSpec("in_row", 0),),
    )
    row = make_layout(("apple", (0.1, 0.40, 0.3, 0.60)), ("apple", (0.4, 0.42, 0.6, 0.62)), ("apple", (0.7, 0.38, 0.9, 0.58)))
    zigzag = make_layout(("apple", (0.1, 0.10, 0.3, 0.30)), ("apple", (0.4, 0.42, 0.6, 0.62)), ("apple", (0.7, 0.70, 0.9, 0.90)))
    assert relation_holds(spec.relations[0], spec, row)
    assert not relation_holds(spec.relations[0], spec, zigzag)


#: Which 3x3 cells (row, column) of the canvas each region covers.
REGION_CELLS = {
    "left": {(0, 0), (1, 0), (2, 0)},
    "right": {(0, 2), (1, 2), (2, 2)},
    "top": {(0, 0), (0, 1), (0, 2)},
    "bottom": {(2, 0), (2, 1), (2, 2)},
    "center": {(1, 1)},
    "top left": {(0, 0)},
    "top right": {(0, 2)},
    "bottom left": {(2, 0)},
    "bottom right": {(2, 2)},
}


@pytest.mark.parametrize("where", sorted(REGION_CELLS))
def test_at_region_is_a_union_of_canvas_thirds(where):
    spec = PromptSpec(prompt="test", objects=(ObjectSpec("cat", 1, "a cat"),), relations=(RelationSpec("at", 0, where=where),))
    for row in range(3):
        for col in range(3):
            cx, cy = (col + 0.5) / 3, (row + 0.5) / 3
            layout = make_layout(("cat", (cx - 0.05, cy - 0.05, cx + 0.05, cy + 0.05)))
            assert relation_holds(spec.relations[0], spec, layout) is ((row, col) in REGION_CELLS[where]), (row, col)


@pytest.mark.parametrize("kind, holds_when_cat_is_big", [("bigger_than", True), ("smaller_than", False)])
def test_size_comparisons_use_box_area(kind, holds_when_cat_is_big):
    spec = two_kinds(kind)
    big, small = (0.05, 0.05, 0.55, 0.55), (0.6, 0.6, 0.8, 0.8)
    assert relation_holds(spec.relations[0], spec, make_layout(("cat", big), ("dog", small))) is holds_when_cat_is_big
    assert relation_holds(spec.relations[0], spec, make_layout(("cat", small), ("dog", big))) is not holds_when_cat_is_big


def test_groups_sharing_a_name_are_told_apart_by_attributes():
    spec = PromptSpec(
        prompt="an apple left of a red apple, a green apple on the right",
        objects=(
            ObjectSpec("apple", 1, "an apple"),
            ObjectSpec("apple", 1, "a red apple", attributes=("red",)),
            ObjectSpec("apple", 1, "a green apple", attributes=("green",)),
        ),
        relations=(RelationSpec("left_of", 0, (1,)), RelationSpec("at", 2, where="right")),
    )
    layout = make_layout(
        ("apple", (0.40, 0.4, 0.50, 0.5), "a red apple"),
        ("apple", (0.05, 0.4, 0.15, 0.5), "an apple"),
        ("apple", (0.80, 0.4, 0.90, 0.5), "a shiny green apple"),
    )
    assert group_members(spec, layout) == [[1], [0], [2]]
    assert violations(spec, layout) == []
    swapped = make_layout(
        ("apple", (0.40, 0.4, 0.50, 0.5), "an apple"),
        ("apple", (0.05, 0.4, 0.15, 0.5), "a red apple"),
        ("apple", (0.80, 0.4, 0.90, 0.5), "a green apple"),
    )
    assert any("left_of" in v for v in violations(spec, swapped))


@pytest.mark.parametrize(
    "relation, field",
    [
        (RelationSpec("left_of", 0, (5,)), "relation.references"),
        (RelationSpec("left_of", 7, (0,)), "relation.subject"),
        (RelationSpec("between", 0, (1,)), "relation.references"),
        (RelationSpec("at", 0, where="nowhere"), "relation.where"),  # type: ignore[arg-type]
    ],
)
def test_a_relation_that_does_not_fit_the_spec_names_the_field(relation, field):
    spec = two_kinds("left_of")
    with pytest.raises(ValueError, match=field):
        relation_holds(relation, spec, make_layout(("cat", LEFT), ("dog", RIGHT)))


def test_violations_lists_counts_negatives_extras_sizes_and_relations():
    spec = PromptSpec(
        prompt="two large cats left of a tiny dog, no birds",
        objects=(ObjectSpec("cat", 2, "a cat", size="large"), ObjectSpec("dog", 1, "a dog", size="tiny")),
        relations=(RelationSpec("left_of", 0, (1,)),),
        negative=("bird",),
    )
    good = make_layout(("cat", (0.0, 0.0, 0.45, 0.45)), ("cat", (0.0, 0.5, 0.45, 0.95)), ("dog", (0.7, 0.45, 0.8, 0.55)))
    assert violations(spec, good) == []

    bad = make_layout(
        ("cat", (0.0, 0.0, 0.2, 0.2)),  # not large
        ("dog", (0.5, 0.3, 0.9, 0.7)),  # not tiny (still right of the cat)
        ("bird", (0.3, 0.8, 0.4, 0.9)),  # negated
        ("tree", (0.6, 0.8, 0.7, 0.9)),  # not asked for
    )
    found = violations(spec, bad)
    assert any("expected 2" in v and "has 1" in v for v in found)
    assert any("objects[0]" in v and "large" in v for v in found)
    assert any("objects[1]" in v and "tiny" in v for v in found)
    assert any("objects[2]" in v and "no bird" in v for v in found)
    assert any("objects[3]" in v and "does not ask" in v for v in found)
    assert not any("left_of" in v for v in found)  # the one cat is still left of the dog
    assert len(found) == 5


def test_tall_means_height_over_one_and_a_half_widths():
    spec = PromptSpec(prompt="a tall vase", objects=(ObjectSpec("vase", 1, "a tall vase", size="tall"),))
    assert violations(spec, make_layout(("vase", (0.4, 0.2, 0.6, 0.8)))) == []
    assert len(violations(spec, make_layout(("vase", (0.3, 0.3, 0.7, 0.7))))) == 1
