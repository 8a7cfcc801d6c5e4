"""The offline planner's layouts give every count, relation and size the parsed prompt asks for."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layout.offline import MIN_SIDE, OfflinePlanner, plan_spec
from layout.parse import parse_prompt
from layout.relations import violations
from layout.schema import GLIGEN_MAX_OBJECTS, LayoutError

PROMPTS = [
    "A realistic photo of a scene with a bottle on the left and a dog on the right",
    "A realistic photo of a scene with a cup on the top and a backpack on the bottom",
    "A realistic photo of a scene with five laptops",
    "a toilet to the left of a dog",
    "a potted plant to the right of a toilet",
    "a bird under a car",
    "a cat on top of a bed next to two pillows",
    "twelve apples in a row",
    "a cat between a dog and a horse",
    "three cats to the left of two dogs above a car",
    "a wooden table with two apples on it",
    "In the top right corner a red kite, and a dog at the bottom",
    "an airplane and a car, the airplane is bigger than the car",
    "a mouse bigger than an elephant",
    "a tall giraffe next to a small car",
    "a huge bus and a tiny cup",
    "three trains near a building",
    "three apples on a table next to two clocks",
    "a vase in the middle with four chairs around it",
    "a red apple and a green apple",
    "twenty seven birds",
    "thirty sheep in a field",
    "a street with no cars or bicycles",
    "three cats in a row next to a dog",
    "a tall cup next to three buses",
    "a cat above a dog at the top",
    "four cats next to three dogs at the top",
]


@pytest.fixture(scope="module")
def planner() -> OfflinePlanner:
    return OfflinePlanner()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_layout_satisfies_every_requirement(prompt):
    spec = parse_prompt(prompt)
    layout, notes = plan_spec(spec)
    # Counts, negation, sizes and relations, judged by the shared predicates.
    assert violations(spec, layout) == [], notes
    assert layout.counts() == {o.name: sum(s.count for s in spec.objects if s.name == o.name) for o in spec.objects}
    assert not set(spec.negative) & set(layout.names)
    for obj in layout.objects:
        x0, y0, x1, y1 = obj.box
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        assert obj.width >= MIN_SIDE - 1e-9 and obj.height >= MIN_SIDE - 1e-9


@pytest.mark.parametrize("prompt", PROMPTS)
def test_instances_of_a_kind_do_not_overlap(prompt):
    layout, _ = plan_spec(parse_prompt(prompt))
    for a, b in itertools.combinations(layout.objects, 2):
        if a.name != b.name:
            continue
        overlap_w = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
        overlap_h = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
        assert overlap_w <= 1e-9 or overlap_h <= 1e-9, (a, b)


def test_phrases_names_scene_and_negative_are_carried(planner):
    layout = planner.plan("A realistic photo of a scene with a red apple and two teddy bears, without cats")
    assert ("apple", "a red apple") in [(o.name, o.phrase) for o in layout.objects]
    assert layout.counts() == {"apple": 1, "teddy bear": 2}
    assert layout.background == "A realistic scene"
    assert layout.negative == "cat"


def test_kinds_get_their_typical_shapes(planner):
    layout = planner.plan("a person, a bus and a cup")
    by_name = {o.name: o for o in layout.objects}
    assert by_name["person"].height > by_name["person"].width  # people are tall
    assert by_name["bus"].width > by_name["bus"].height  # buses are wide
    assert by_name["cup"].area < by_name["bus"].area  # cups are small


def test_deterministic_and_seed_only_jitters(planner):
    prompt = "three cats to the left of two dogs"
    assert planner.plan(prompt) == planner.plan(prompt)
    assert planner.plan(prompt, seed=3) == planner.plan(prompt, seed=3)
    jittered = planner.plan(prompt, seed=3)
    assert jittered.boxes != planner.plan(prompt).boxes
    assert violations(parse_prompt(prompt), jittered) == []


def test_too_many_objects_is_refused_with_the_limit(planner):
    with pytest.raises(LayoutError, match=str(GLIGEN_MAX_OBJECTS)):
        planner.plan("forty apples")


def test_empty_prompt_is_refused(planner):
    with pytest.raises(LayoutError, match="`prompt` is empty"):
        planner.plan("   ")


def test_impossible_row_beside_is_noted():
    spec = parse_prompt("five cats in a row next to a dog")
    layout, notes = plan_spec(spec)
    assert layout.counts() == {"cat": 5, "dog": 1}
    assert any("in a row cannot all be within" in note for note in notes)


def test_contradiction_is_noted_not_crashed():
    spec = parse_prompt("a cat to the left of a dog and the dog to the left of the cat")
    layout, notes = plan_spec(spec)
    assert layout.counts() == {"cat": 1, "dog": 1}
    assert any("contradicts" in note for note in notes)


_KINDS = [("cat", "cats"), ("dog", "dogs"), ("car", "cars"), ("teddy bear", "teddy bears"), ("person", "people"),
          ("cup", "cups"), ("giraffe", "giraffes"), ("bus", "buses")]  # fmt: skip
_NUMBERS = ["a", "one", "two", "three", "four", "5"]
_RELATIONS = ["to the left of", "to the right of", "above", "below", "next to", "on top of", "under"]


def _noun(number: str, kind: tuple[str, str]) -> str:
    if number in ("a", "one"):
        article = "an" if number == "a" and kind[0][0] in "aeiou" else number
        return f"{article} {kind[0]}"
    return f"{number} {kind[1]}"


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from(_NUMBERS), st.sampled_from(_KINDS), st.sampled_from(_RELATIONS),
    st.sampled_from(_NUMBERS), st.sampled_from(_KINDS), st.sampled_from(["", " on the left", " at the top"]),
    st.sampled_from([0, 0, 1, 7, 12345]),
)  # fmt: skip
def test_generated_two_group_prompts_are_satisfied(n1, kind1, relation, n2, kind2, region, seed):
    if kind1 == kind2:
        kind2 = _KINDS[(_KINDS.index(kind1) + 1) % len(_KINDS)]
    prompt = f"{_noun(n1, kind1)} {relation} {_noun(n2, kind2)}{region}"
    spec = parse_prompt(prompt)
    assert len(spec.objects) == 2 and spec.relations, prompt
    layout, notes = plan_spec(spec, seed=seed)
    assert violations(spec, layout) == [], (prompt, seed, notes)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_any_text_gives_a_valid_layout_or_a_layout_error(text):
    planner = OfflinePlanner()
    try:
        layout = planner.plan(text)
    except LayoutError as err:
        assert "prompt" in str(err)
        return
    assert all(0.0 <= v <= 1.0 for box in layout.boxes for v in box)
