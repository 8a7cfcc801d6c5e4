"""The offline planner's layouts give every count, relation and size the parsed prompt asks for."""

from __future__ import annotations

import itertools

import pytest
from fuzzing import fuzz
from hypothesis import given, settings
from hypothesis import strategies as st

from scenewright.layout.offline import MIN_SIDE, OfflinePlanner, plan_spec
from scenewright.layout.parse import parse_prompt
from scenewright.layout.plan import plan_layout
from scenewright.layout.relations import violations
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS, LayoutError

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


@fuzz(100)
@given(st.text(max_size=80))
def test_fuzz_any_text_gives_a_valid_layout_or_a_layout_error(text):
    planner = OfflinePlanner()
    try:
        layout = planner.plan(text)
    except LayoutError as err:
        assert "prompt" in str(err)
        return
    assert all(0.0 <= v <= 1.0 for box in layout.boxes for v in box)


# ---------------------------------------------------------------- plausible pictures (rows, supports, between)
def _boxes(layout, name: str) -> list[tuple[float, float, float, float]]:
    return [o.box for o in layout.objects if o.name == name]


@pytest.mark.parametrize(
    "prompt, kind",
    [("two cats to the left of a dog", "cat"), ("three apples", "apple"), ("four dogs and a car", "dog"),
     ("a cat above five birds", "bird"), ("two cats next to a dog", "cat")],
)  # fmt: skip
def test_a_few_of_a_kind_stand_side_by_side_on_one_ground_line(prompt, kind):
    layout, _ = plan_layout(prompt)
    boxes = sorted(_boxes(layout, kind))
    assert len({round(b[3], 6) for b in boxes}) == 1, boxes  # one ground line
    for left, right in zip(boxes, boxes[1:]):
        assert left[2] <= right[0] + 1e-9, boxes  # side by side, not stacked in a column


def test_many_of_a_kind_make_a_grid():
    layout, _ = plan_layout("twelve apples")
    assert len({round(b[3], 6) for b in _boxes(layout, "apple")}) > 1


@pytest.mark.parametrize(
    "prompt, support, held",
    [
        ("two cats to the left of a dog on a sofa", "sofa", ("cat", "dog")),
        ("three apples on a table", "table", ("apple",)),
        ("a cat on a sofa", "sofa", ("cat",)),
        ("a wooden table with two apples on it", "table", ("apple",)),
        ("a cat lays down next to a laptop on a bed", "bed", ("cat", "laptop")),
        ("a dog sitting on a bench", "bench", ("dog",)),
        ("a cat is laying on a bed next to two pillows", "bed", ("cat",)),  # the pillows come down beside it
        ("a cat on a sofa on the left", "sofa", ("cat",)),  # the sofa's region holds what rests on it too
        ("three cats on a bed on the right", "bed", ("cat",)),
    ],
)
def test_things_on_a_support_rest_on_it_through_the_whole_plan_path(prompt, support, held):
    layout, changes = plan_layout(prompt)  # planner, then the geometry checker
    assert violations(parse_prompt(prompt), layout) == []
    (base,) = _boxes(layout, support)
    base_cy = (base[1] + base[3]) / 2
    for name in held:
        for box in _boxes(layout, name):
            assert base[1] < box[3] <= base_cy, (name, box, base)  # bottom edge inside the support's upper half
            assert (box[1] + box[3]) / 2 < base_cy  # centre above the support's centre
            assert base[0] <= box[0] and box[2] <= base[2], (name, box, base)  # within its width


def test_a_bird_above_a_car_still_floats():
    layout, _ = plan_layout("a bird above a car on a road")
    (bird,), (car,) = _boxes(layout, "bird"), _boxes(layout, "car")
    assert bird[3] < car[1]  # "above" a car that is no support leaves a gap
    assert layout.background == "A road"


@pytest.mark.parametrize(
    "prompt", ["a cat between two trees", "a dog between three cars", "two birds between four trees",
               "a cat between two trees on the left", "two dogs between two cups on the right"],
)  # fmt: skip
def test_between_the_instances_of_one_group(prompt):
    spec = parse_prompt(prompt)
    assert [r.kind for r in spec.relations][0] == "between"
    layout, _ = plan_layout(prompt)
    assert violations(spec, layout) == []


def test_balloons_in_the_sky_above_a_house():
    prompt = "five balloons in the sky above a house"
    spec = parse_prompt(prompt)
    layout, _ = plan_layout(prompt)
    assert violations(spec, layout) == []
    assert {r.kind for r in spec.relations} == {"at", "above"}
    assert all((b[1] + b[3]) / 2 < 1 / 3 for b in _boxes(layout, "balloon"))
    assert "sky" not in layout.background.lower()


_SUPPORTS = ["sofa", "table", "bed", "bench", "desk"]


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(_NUMBERS), st.sampled_from(_KINDS[:6]), st.sampled_from(_RELATIONS[:2] + ["next to", "and"]),
    st.sampled_from(_NUMBERS), st.sampled_from(_KINDS[:6]), st.sampled_from(_SUPPORTS), st.sampled_from([0, 3]),
)  # fmt: skip
def test_generated_trailing_support_prompts_are_satisfied_and_checked(n1, kind1, relation, n2, kind2, support, seed):
    if kind1 == kind2:
        kind2 = _KINDS[(_KINDS.index(kind1) + 1) % 6]
    prompt = f"{_noun(n1, kind1)} {relation} {_noun(n2, kind2)} on a {support}"
    spec = parse_prompt(prompt)
    held = {spec.objects[r.subject].name for r in spec.relations if r.kind == "above"}
    assert held == {kind1[0], kind2[0]}, prompt
    layout, notes = plan_spec(spec, seed=seed)
    assert violations(spec, layout) == [], (prompt, notes)
    checked, _ = plan_layout(prompt, seed=seed)  # the geometry checker keeps it (or repairs without breaking it)
    assert violations(spec, checked) == []
