"""The offline parser reads counts, kinds, attributes, relations, regions, scene and negation."""

from __future__ import annotations

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from scenewright.layout.parse import name_of_phrase, parse_prompt
from scenewright.layout.relations import requirement_failures
from scenewright.layout.plan import plan_layout
from scenewright.layout.schema import Layout, LayoutError
from scenewright.layout.vocabulary import COCO_CLASSES, singularize


def _objects(text: str) -> list[tuple[str, int]]:
    return [(o.name, o.count) for o in parse_prompt(text).objects]


def _relations(text: str) -> list[tuple]:
    spec = parse_prompt(text)
    names = [o.name for o in spec.objects]
    return [(r.kind, names[r.subject], tuple(names[i] for i in r.references), r.where) for r in spec.relations]


@pytest.mark.parametrize(
    "plural, singular",
    [
        ("mice", "mouse"), ("geese", "goose"), ("people", "person"), ("children", "child"), ("knives", "knife"),
        ("leaves", "leaf"), ("wolves", "wolf"), ("sheep", "sheep"), ("fish", "fish"), ("cacti", "cactus"),
        ("buses", "bus"), ("boxes", "box"), ("glasses", "glass"), ("dresses", "dress"), ("benches", "bench"),
        ("cherries", "cherry"), ("ties", "tie"), ("tomatoes", "tomato"), ("shoes", "shoe"), ("vases", "vase"),
        ("horses", "horse"), ("women", "woman"), ("policemen", "policeman"), ("sandwiches", "sandwich"),
        ("gloves", "glove"), ("bus", "bus"), ("glass", "glass"), ("cat", "cat"), ("scissors", "scissors"),
    ],
)  # fmt: skip
def test_singularize_regular_and_irregular(plural, singular):
    assert singularize(plural) == singular


@pytest.mark.parametrize(
    "phrase, name",
    [
        ("a red apple", "apple"), ("two teddy bears", "teddy bear"), ("a man in red", "man"),
        ("three fire hydrants", "fire hydrant"), ("a wooden dining table", "dining table"),
        ("wine glasses", "wine glass"), ("an old zorblax", "zorblax"), ("a microwave oven", "microwave"),
    ],
)  # fmt: skip
def test_name_of_phrase(phrase, name):
    assert name_of_phrase(phrase) == name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("three cats", [("cat", 3)]),
        ("4 dogs and a cat", [("dog", 4), ("cat", 1)]),
        ("a pair of shoes", [("shoe", 2)]),
        ("a pair of scissors", [("scissors", 1)]),
        ("a couple of traffic lights", [("traffic light", 2)]),
        ("a single giraffe", [("giraffe", 1)]),
        ("twelve apples", [("apple", 12)]),
        ("twenty seven birds", [("bird", 27)]),
        ("several wine glasses", [("wine glass", 3)]),
        ("some mice", [("mouse", 3)]),
        ("apples on a plate", [("apple", 2), ("plate", 1)]),
        ("five geese, two knives and a sheep", [("goose", 5), ("knife", 2), ("sheep", 1)]),
        ("two teddy bears next to one cell phone", [("teddy bear", 2), ("cell phone", 1)]),
        ("eleven people", [("person", 11)]),
        ("three buses and two boxes", [("bus", 3), ("box", 2)]),
        ("a dog and another dog", [("dog", 2)]),
        ("a lone car parks near a curb", [("car", 1), ("curb", 1)]),
        ("a bird sitting on a bird feeder", [("bird", 1), ("feeder", 1)]),
    ],
)
def test_counts_and_kinds(text, expected):
    assert _objects(text) == expected


def test_vague_counts_are_noted():
    spec = parse_prompt("several cups and apples")
    assert [(o.name, o.count) for o in spec.objects] == [("cup", 3), ("apple", 2)]
    assert "'several cups' has no number; read as 3" in spec.notes
    assert "'apples' has no number; read as 2" in spec.notes


def test_count_comparison_resolves_a_vague_count():
    more = parse_prompt("three potted plants along with a few vases, the number of potted plants is more than that of vases")
    counts = {o.name: o.count for o in more.objects}
    assert counts["potted plant"] == 3 and 1 <= counts["vase"] < 3
    less = parse_prompt("one bed with a few cats, the number of bed is less than that of cats")
    counts = {o.name: o.count for o in less.objects}
    assert counts["bed"] == 1 and counts["cat"] > 1
    explicit = parse_prompt("five cats and one dog, the number of cats is less than that of dogs")
    assert {o.name: o.count for o in explicit.objects} == {"cat": 5, "dog": 1}  # numbers given are kept
    assert any("could not be satisfied" in note for note in explicit.notes)
    same = parse_prompt("two cars together with the same number of trucks")
    assert {o.name: o.count for o in same.objects} == {"car": 2, "truck": 2}


def test_attributes_and_sizes_stay_in_the_phrase():
    spec = parse_prompt("a red apple and a large wooden table and a tiny blue cup")
    by_name = {o.name: o for o in spec.objects}
    assert by_name["apple"].phrase == "a red apple" and by_name["apple"].attributes == ("red",)
    assert by_name["table"].attributes == ("wooden",) and by_name["table"].size == "large"
    assert by_name["cup"].size == "tiny" and by_name["cup"].attributes == ("blue",)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a toilet to the left of a dog", [("left_of", "toilet", ("dog",), None)]),
        ("a microwave on the right of a pig", [("right_of", "microwave", ("pig",), None)]),
        ("a cat on top of a car", [("above", "cat", ("car",), None)]),
        ("a kite over a house", [("above", "kite", ("house",), None)]),
        ("a bird under a car", [("below", "bird", ("car",), None)]),
        ("a dog beneath a table", [("below", "dog", ("table",), None)]),
        ("a dog underneath a table", [("below", "dog", ("table",), None)]),
        ("a horse beside a bicycle", [("next_to", "horse", ("bicycle",), None)]),
        ("a cat between a dog and a horse", [("between", "cat", ("dog", "horse"), None)]),
        ("a cat on a sofa", [("above", "cat", ("sofa",), None)]),
        ("four apples in a row", [("in_row", "apple", (), None)]),
        ("a vase in the middle", [("at", "vase", (), "center")]),
        ("a red kite in the top right corner", [("at", "kite", (), "top right")]),
        ("a dog at the bottom", [("at", "dog", (), "bottom")]),
        ("a bottle on the left and a dog on the right", [("at", "bottle", (), "left"), ("at", "dog", (), "right")]),
        ("a cup on the top and a backpack on the bottom", [("at", "cup", (), "top"), ("at", "backpack", (), "bottom")]),
        ("an airplane and a car, the airplane is bigger than the car", [("bigger_than", "airplane", ("car",), None)]),
        ("a mouse smaller than a cat", [("smaller_than", "mouse", ("cat",), None)]),
        ("a wooden table with two apples on it", [("above", "apple", ("table",), None)]),
        ("a cat on a table under an umbrella", [("above", "cat", ("table",), None), ("below", "cat", ("umbrella",), None)]),
        ("two apples sitting side by side on a table", [("in_row", "apple", (), None), ("above", "apple", ("table",), None)]),
    ],
)
def test_relations(text, expected):
    assert _relations(text) == expected


@pytest.mark.parametrize(
    "text, supported, support",
    [
        ("two cats to the left of a dog on a sofa", {"cat", "dog"}, "sofa"),
        ("a cat lays down next to a laptop on a bed", {"cat", "laptop"}, "bed"),
        ("a keyboard and a mouse sitting next to each other on a table.", {"keyboard", "mouse"}, "table"),
        ("a dog and a cat in a bed", {"dog", "cat"}, "bed"),
    ],
)
def test_trailing_support_holds_every_earlier_group(text, supported, support):
    relations = _relations(text)
    assert {r[1] for r in relations if r[0] == "above" and r[2] == (support,)} == supported
    assert support in [name for name, _ in _objects(text)]  # an object (NSR-1K boxes it), not the background


def test_in_a_box_is_inside_not_on():
    assert [r for r in _relations("a cat and a toy in a box") if r[0] == "above"] == []


def test_trailing_place_stays_background_and_single_subject_support_is_unchanged():
    assert _relations("three apples on a table") == [("above", "apple", ("table",), None)]
    spec = parse_prompt("a cat next to a dog on a beach")
    assert spec.background == "A beach" and [o.name for o in spec.objects] == ["cat", "dog"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a cat between two trees", [("between", "cat", ("tree", "tree"), None)]),
        ("a dog between three cars", [("between", "dog", ("car", "car"), None)]),
        ("a cat between two trees and a dog", [("between", "cat", ("tree", "dog"), None)]),
    ],
)
def test_between_one_plural_reference(text, expected):
    assert _relations(text) == expected


def test_sky_is_a_region_not_the_background():
    spec = parse_prompt("five balloons in the sky above a house")
    assert _relations("five balloons in the sky above a house") == [
        ("at", "balloon", (), "top"),
        ("above", "balloon", ("house",), None),
    ]
    assert "sky" not in spec.background.lower()


def test_in_front_of_has_no_2d_relation_and_is_noted():
    spec = parse_prompt("a bench in front of a chair")
    assert spec.relations == () and any("front" in note for note in spec.notes)


@pytest.mark.parametrize(
    "text, objects, background, negative",
    [
        ("A realistic photo of a scene without backpacks", [], "A realistic scene", ("backpack",)),
        ("A realistic photo of a scene with three cats", [("cat", 3)], "A realistic scene", ()),
        ("a cat without a collar", [("cat", 1)], "", ("collar",)),
        ("a street with no cars or bicycles", [], "A street", ("car", "bicycle")),
        ("a dog on a beach", [("dog", 1)], "A beach", ()),
        ("A photo of a cat in a living room", [("cat", 1)], "A photo of a living room", ()),
        ("an image of two clocks", [("clock", 2)], "", ()),
        ("a yellow sun and a blue sky", [("sun", 1), ("sky", 1)], "", ()),
    ],
)
def test_scene_and_negation(text, objects, background, negative):
    spec = parse_prompt(text)
    assert [(o.name, o.count) for o in spec.objects] == objects
    assert spec.background == background
    assert spec.negative == negative


def test_kind_both_asked_for_and_negated_stays_an_object():
    spec = parse_prompt("a dog on a sofa, no dogs")
    assert [o.name for o in spec.objects] == ["dog", "sofa"] and spec.negative == ()
    assert any("both asked for and negated" in note for note in spec.notes)


def test_unknown_text_gives_notes_not_errors():
    spec = parse_prompt("Matutinal.")
    assert spec.objects == () and spec.notes
    assert parse_prompt("").objects == ()
    with pytest.raises(TypeError, match="`text` must be a str"):
        parse_prompt(None)  # type: ignore[arg-type]


def _assert_valid(spec) -> None:
    for obj in spec.objects:
        assert obj.count >= 1 and obj.name.strip() and obj.phrase.strip()
        assert obj.name not in spec.negative or any(o.name == obj.name for o in spec.objects)
    # Every relation is well formed: the shared checker validates kinds, arity and indices.
    requirement_failures(spec, Layout(prompt="x"))


@fuzz(150)
@given(st.text(max_size=120))
def test_fuzz_any_text_parses_to_a_valid_spec(text):
    _assert_valid(parse_prompt(text))


_WORDS = [
    "a", "an", "the", "two", "3", "several", "no", "without", "and", "or", ",", "left", "right", "of", "to",
    "on", "top", "above", "below", "under", "next", "between", "in", "row", "middle", "corner", "bigger",
    "smaller", "than", "red", "wooden", "large", "tiny", "pair", "couple", "few", "number", "is", "more",
    "that", "it", "them", "each", "other", "side", "by", "beach", "kitchen", "photo", "realistic",
    "cats", "dog", "mice", "teddy", "bear", "bears", "fire", "hydrant", "zorblax", "people", "sheep",
]  # fmt: skip


@fuzz(200)
@given(st.lists(st.sampled_from(_WORDS + list(COCO_CLASSES[:20])), max_size=25))
def test_fuzz_word_soup_parses_to_a_valid_spec(words):
    _assert_valid(parse_prompt(" ".join(words)))


@pytest.mark.parametrize(
    ("prompt", "kinds", "relation"),
    [
        ("three knives to the right of a cutting board", [("knife", 3), ("cutting board", 1)], "right_of"),
        ("two geese to the right of a pond", [("goose", 2), ("pond", 1)], "right_of"),
        ("nine stars above a mountain", [("star", 9), ("mountain", 1)], "above"),
        ("three sheep grazing beside a barn", [("sheep", 3), ("barn", 1)], "next_to"),
        ("a pond to the left of two geese", [("pond", 1), ("goose", 2)], "left_of"),
    ],
)
def test_scenery_that_a_relation_names_is_an_object_with_a_box(prompt, kinds, relation):
    spec = parse_prompt(prompt)
    assert [(o.name, o.count) for o in spec.objects] == kinds
    assert [(r.kind, r.subject, r.references) for r in spec.relations] == [(relation, 0, (1,))]
    assert spec.background == ""


@pytest.mark.parametrize(
    ("prompt", "background"),
    [("a cat on a beach", "A beach"), ("a cat on a beach next to a dog", "A beach"), ("a dog in a kitchen next to a cat", "A kitchen")],
)
def test_scenery_that_no_relation_names_stays_the_background(prompt, background):
    spec = parse_prompt(prompt)
    assert spec.background == background
    assert [o.name for o in spec.objects] == sorted((n for n in ("cat", "dog") if n in prompt), key=prompt.index)
    assert [(r.kind, r.subject, r.references) for r in spec.relations if r.references] == (
        [("next_to", 0, (1,))] if "next to" in prompt else []
    )


def test_counts_are_read_as_written_and_negative_ones_are_named():
    assert [(o.name, o.count) for o in parse_prompt("1000000 cats").objects] == [("cat", 1_000_000)]
    assert [(o.name, o.count) for o in parse_prompt("1" + "0" * 5000 + " cats").objects] == [("cat", 10**18)]
    spec = parse_prompt("-3 dogs")
    assert [(o.name, o.count) for o in spec.objects] == [("dog", 2)]
    assert any("'-3' is not a count" in note for note in spec.notes)
    with pytest.raises(LayoutError, match="asks for 1000000 objects; the planner places at most 30"):
        plan_layout("1000000 cats")
