"""The geometry checker: clips, grows, refuses too many objects, separates overlaps, keeps the prompt's requirements."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from fuzzing import fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenewright.layout import Layout, LayoutError, ObjectSpec, PromptSpec, RelationSpec
from scenewright.layout.geometry import check_layout
from scenewright.layout.relations import group_members, relation_holds, size_holds
from scenewright.layout.size_fit import fit_object_sizes


def raw(*boxes, names=None) -> dict:
    names = names or [f"thing{i}" for i in range(len(boxes))]
    return {
        "prompt": "test",
        "objects": [{"name": n, "phrase": f"a {n}", "box": list(b)} for n, b in zip(names, boxes)],
    }


def overlap(a, b) -> float:
    """Intersection over the smaller area, by plain arithmetic (independent of the checker's shapely code)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def assert_usable(layout: Layout, min_size: float, max_overlap: float, allowed_pairs=()) -> None:
    for box in layout.boxes:
        assert all(0.0 <= v <= 1.0 for v in box)
        assert box[2] - box[0] >= min_size - 1e-9 and box[3] - box[1] >= min_size - 1e-9
    for i, a in enumerate(layout.boxes):
        for j in range(i + 1, len(layout.boxes)):
            if (i, j) not in allowed_pairs:
                assert overlap(a, layout.boxes[j]) <= max_overlap + 1e-6, (i, j)


# ------------------------------------------------------------------ examples
def test_an_unchanged_valid_layout_comes_back_identical():
    layout = Layout.parse(raw((0.05, 0.1, 0.4, 0.5), (0.5, 0.1, 0.9, 0.6), (0.2, 0.6, 0.5, 0.9)))
    result = check_layout(layout)
    assert result.layout is layout
    assert result.changes == []
    assert check_layout(layout.to_dict()).layout == layout


def test_boxes_off_the_canvas_are_clipped_and_reported():
    result = check_layout(raw((0.1, 0.1, 0.4, 0.4), (-0.2, 0.5, 0.3, 1.3)))
    assert result.layout.boxes[1] == (0.0, 0.5, 0.3, 1.0)
    assert result.layout.boxes[0] == (0.1, 0.1, 0.4, 0.4)
    assert len(result.changes) == 1 and "objects[1]" in result.changes[0] and "clipped" in result.changes[0]


def test_a_box_entirely_off_the_canvas_is_an_error_naming_the_object():
    with pytest.raises(LayoutError, match=r"objects\[1\] 'thing1'.*off the canvas"):
        check_layout(raw((0.1, 0.1, 0.4, 0.4), (1.1, 0.2, 1.5, 0.6)))


def test_pixel_boxes_are_not_clipped_but_rejected_with_the_schema_hint():
    with pytest.raises(LayoutError, match="look like pixels"):
        check_layout(raw((0.1, 0.1, 0.4, 0.4), (100, 120, 300, 400)))


@pytest.mark.parametrize("box", [(0.50, 0.50, 0.51, 0.52), (0.99, 0.0, 1.0, 0.01)])
def test_a_tiny_box_is_grown_about_its_centre_and_stays_on_the_canvas(box):
    result = check_layout(raw((0.0, 0.6, 0.3, 0.9), box))
    grown = result.layout.boxes[1]
    assert grown[2] - grown[0] == pytest.approx(0.04) and grown[3] - grown[1] == pytest.approx(0.04)
    assert all(0.0 <= v <= 1.0 for v in grown)
    if box[2] < 0.9:  # away from the edge the centre stays put
        assert (grown[0] + grown[2]) / 2 == pytest.approx((box[0] + box[2]) / 2)
    else:  # at the edge it is shifted back onto the canvas
        assert grown[2] == 1.0 and grown[1] == 0.0
    assert any("objects[1]" in c and "minimum size" in c for c in result.changes)


def test_more_objects_than_gligen_takes_is_an_error_naming_the_limit():
    boxes = [((i % 6) / 6, (i // 6) / 6, (i % 6) / 6 + 0.1, (i // 6) / 6 + 0.1) for i in range(31)]
    with pytest.raises(LayoutError, match="31 objects.*at most 30"):
        check_layout(raw(*boxes))
    with pytest.raises(LayoutError, match="31 objects.*at most 30"):
        check_layout(Layout.parse(raw(*boxes)))
    assert len(check_layout(raw(*boxes[:30])).layout.objects) == 30


@pytest.mark.parametrize(
    "a, b",
    [
        ((0.2, 0.2, 0.6, 0.6), (0.2, 0.2, 0.6, 0.6)),  # identical
        ((0.2, 0.2, 0.6, 0.6), (0.3, 0.25, 0.7, 0.65)),  # mostly on top of each other
        ((0.1, 0.1, 0.9, 0.9), (0.45, 0.45, 0.55, 0.55)),  # small box hidden in a big one (IoU only 1.6%)
    ],
)
def test_heavily_overlapping_objects_are_separated(a, b):
    assert overlap(a, b) > 0.25
    result = check_layout(raw(a, b))
    assert_usable(result.layout, 0.04, 0.25)
    assert any("objects[0]" in c and "objects[1]" in c for c in result.changes)
    assert check_layout(raw(a, b)) == result  # deterministic


def test_json_text_is_accepted_and_bad_text_is_a_layout_error():
    data = raw((0.1, 0.1, 0.4, 0.4), (0.5, 0.5, 1.1, 0.9))
    assert check_layout(json.dumps(data)) == check_layout(data)
    with pytest.raises(LayoutError, match="not JSON"):
        check_layout('{"prompt": "a cat", "objects": [')
    with pytest.raises(LayoutError, match="dict or JSON object"):
        check_layout("[1, 2]")


def test_bad_arguments_name_the_argument():
    layout = raw((0.1, 0.1, 0.4, 0.4))
    with pytest.raises(ValueError, match="min_size"):
        check_layout(layout, min_size=0)
    with pytest.raises(ValueError, match="max_overlap"):
        check_layout(layout, max_overlap=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        check_layout(layout, max_objects=0)


# ------------------------------------------------------------------ requirements kept
ROW_SPEC = PromptSpec(
    prompt="a cat and a dog in a row",
    objects=(ObjectSpec("cat", 1, "a cat"), ObjectSpec("dog", 1, "a dog")),
    relations=(RelationSpec("in_row", 0, (1,)),),
)
# Wide, short boxes: pushing them apart vertically is the shorter move, but it breaks the row.
ROW_LAYOUT = raw((0.10, 0.40, 0.60, 0.60), (0.30, 0.45, 0.80, 0.65), names=["cat", "dog"])


def test_a_repair_that_would_break_a_relation_gives_way_to_one_that_keeps_it():
    before = Layout.parse(ROW_LAYOUT)
    assert relation_holds(ROW_SPEC.relations[0], ROW_SPEC, before)

    blind = check_layout(ROW_LAYOUT).layout  # without the spec the cheapest (vertical) push wins
    assert not relation_holds(ROW_SPEC.relations[0], ROW_SPEC, blind)

    kept = check_layout(ROW_LAYOUT, ROW_SPEC)
    assert relation_holds(ROW_SPEC.relations[0], ROW_SPEC, kept.layout)
    assert_usable(kept.layout, 0.04, 0.25)
    assert kept.kept_overlaps == []


# A cat on a huge sofa, both "at the center" and not allowed to shrink (large / huge):
# no push along one axis separates them without leaving the centre third.
CAT_SOFA_OBJECTS = (ObjectSpec("cat", 1, "a cat", size="large"), ObjectSpec("sofa", 1, "a sofa", size="huge"))
CAT_SOFA_LAYOUT = raw((0.29, 0.19, 0.71, 0.61), (0.20, 0.25, 0.80, 0.85), names=["cat", "sofa"])
AT_CENTER = (RelationSpec("at", 0, where="center"), RelationSpec("at", 1, where="center"))


def test_related_objects_that_cannot_be_separated_keep_their_overlap_and_say_so():
    spec = PromptSpec("a large cat on a huge sofa in the middle", CAT_SOFA_OBJECTS, (*AT_CENTER, RelationSpec("above", 0, (1,))))
    result = check_layout(CAT_SOFA_LAYOUT, spec)
    assert len(result.kept_overlaps) == 1 and "objects[0]" in result.kept_overlaps[0]
    assert result.layout == Layout.parse(CAT_SOFA_LAYOUT)


def test_unrelated_objects_that_cannot_be_separated_are_an_error_saying_why():
    spec = PromptSpec("a large cat and a huge sofa in the middle", CAT_SOFA_OBJECTS, AT_CENTER)
    with pytest.raises(LayoutError, match=r"objects\[0\] 'cat' and objects\[1\] 'sofa'.*cannot be separated.*max_overlap"):
        check_layout(CAT_SOFA_LAYOUT, spec)


# ------------------------------------------------------------------ properties
coordinate = st.one_of(
    st.floats(min_value=-0.3, max_value=1.3, allow_nan=False),
    st.sampled_from([0.0, 1.0, 0.5]),
    st.sampled_from([math.nan, math.inf, -0.0, 2.5, 400.0]),
)
# Mostly near-valid boxes (a little off the canvas, tiny, overlapping), sometimes garbage.
near_valid_box = st.builds(
    lambda x, y, w, h: (x, y, x + w, y + h),
    st.floats(-0.1, 0.95),
    st.floats(-0.1, 0.95),
    st.floats(0.001, 0.6),
    st.floats(0.001, 0.6),
)
garbage_box = st.one_of(
    st.tuples(coordinate, coordinate, coordinate, coordinate),
    st.builds(lambda x, y, w, h: (x, y, x + w, y + h), coordinate, coordinate, st.floats(0, 0.7), st.floats(0, 0.7)),
)


@st.composite
def raw_boxes(draw):
    """Up to 8 near-valid boxes, and half the time one garbage box among them."""
    boxes = draw(st.lists(near_valid_box, max_size=8))
    if draw(st.booleans()):
        boxes.insert(draw(st.integers(0, len(boxes))), draw(garbage_box))
    return boxes


@fuzz(100, suppress_health_check=[HealthCheck.too_slow])
@given(raw_boxes(), st.sampled_from([0.0, 0.1, 0.25, 0.5]))
def test_any_raw_boxes_give_a_usable_layout_or_a_layout_error(boxes, max_overlap):
    data = raw(*boxes)
    try:
        result = check_layout(data, max_overlap=max_overlap)
    except LayoutError as err:
        assert "objects" in str(err)
        return
    assert [o.name for o in result.layout.objects] == [o["name"] for o in data["objects"]]
    assert_usable(result.layout, 0.04, max_overlap)


@st.composite
def layout_and_spec(draw):
    """A valid layout and a spec built from it: its groups, exact counts, some sizes and random relations."""
    names = draw(st.lists(st.sampled_from(["cat", "dog", "bird"]), min_size=1, max_size=6))
    boxes = []
    for _ in names:
        x0, y0 = draw(st.floats(0, 0.9)), draw(st.floats(0, 0.9))
        boxes.append((x0, y0, draw(st.floats(x0 + 0.01, 1.0)), draw(st.floats(y0 + 0.01, 1.0))))
    layout = Layout.parse(raw(*boxes, names=names))
    kinds = sorted(set(names))
    objects = tuple(
        ObjectSpec(k, names.count(k), f"a {k}", size=draw(st.sampled_from([None, None, "large", "small", "tall"])))
        for k in kinds
    )
    relations = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["left_of", "right_of", "above", "below", "next_to", "between", "in_row", "at", "bigger_than"]))
        subject = draw(st.integers(0, len(kinds) - 1))
        if kind == "at":
            relations.append(RelationSpec("at", subject, where=draw(st.sampled_from(["left", "center", "top right"]))))
        elif kind == "in_row":
            relations.append(RelationSpec("in_row", subject))
        elif kind == "between":
            if len(kinds) == 3:
                refs = tuple(i for i in range(3) if i != subject)
                relations.append(RelationSpec("between", subject, refs))
        elif len(kinds) > 1:
            reference = draw(st.sampled_from([i for i in range(len(kinds)) if i != subject]))
            relations.append(RelationSpec(kind, subject, (reference,)))
    return layout, PromptSpec("test", objects, tuple(relations))


def assert_requirements_kept(spec: PromptSpec, before: Layout, after: Layout) -> None:
    """Every relation and size word of ``spec`` that held in ``before`` holds in ``after``."""
    for relation in spec.relations:
        if relation_holds(relation, spec, before):
            assert relation_holds(relation, spec, after), relation
    for object_spec, indices in zip(spec.objects, group_members(spec, before)):
        for i in indices:
            if size_holds(object_spec, before.objects[i]):
                assert size_holds(object_spec, after.objects[i]), (object_spec, i)


def test_a_crowd_the_repair_budget_cannot_separate_names_the_pairs_left_overlapping():
    # Found by hypothesis: five cats whose pushes keep trading overlap until the budget runs out.
    boxes = [(0.5, 0.5, 0.90625, 0.875), (0.375, 0.0, 0.625, 0.875), (0.0, 0.0, 0.25, 1.0), (0.125, 0.0, 0.75, 1.0),
             (0.875, 0.5, 0.9375, 1.0)]  # fmt: skip
    layout = Layout(prompt="t", objects=[{"name": "cat", "phrase": "a cat", "box": b} for b in boxes])
    with pytest.raises(LayoutError, match=r"repair budget \(still over 25%: objects\[0\] 'cat' and objects\[3\] 'cat'"):
        check_layout(layout, PromptSpec("t", (ObjectSpec("cat", 5, "a cat"),), ()))


@fuzz(100, suppress_health_check=[HealthCheck.too_slow])
@given(layout_and_spec())
def test_what_held_before_the_repair_still_holds_after(case):
    layout, spec = case
    try:
        result = check_layout(layout, spec)
    except LayoutError as err:
        assert "objects[" in str(err)
        return
    after = result.layout
    assert group_members(spec, after) == group_members(spec, layout)
    assert_requirements_kept(spec, layout, after)
    kept = {
        (i, j)
        for i in range(len(after.objects))
        for j in range(i + 1, len(after.objects))
        if any(f"objects[{i}]" in k and f"objects[{j}]" in k for k in result.kept_overlaps)
    }
    assert_usable(after, 0.04, 0.25, allowed_pairs=kept)


# ------------------------------------------------------------------ fitting boxes to a model's object sizes
def centre(box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def test_a_lone_object_planned_for_a_photograph_is_shrunk_to_the_models_largest_object():
    layout = Layout.parse(raw((0.06, 0.06, 0.94, 0.94), names=["star"]))
    result = fit_object_sizes(layout, sides=(0.19, 0.44))
    (box,) = result.layout.boxes
    assert box[2] - box[0] == pytest.approx(0.44) and box[3] - box[1] == pytest.approx(0.44)
    assert centre(box) == pytest.approx(centre(layout.boxes[0]))
    assert len(result.changes) == 1 and "objects[0] 'star': scaled to the model's object sizes" in result.changes[0]


def test_a_tiny_box_at_the_edge_grows_to_the_smallest_object_and_slides_onto_the_canvas():
    # Capped by the edge about its centre it would stay 0.1 wide, half what the model draws.
    layout = Layout.parse(raw((0.0, 0.4, 0.1, 0.5), names=["dot"]))
    result = fit_object_sizes(layout, sides=(0.19, 0.44))
    (box,) = result.layout.boxes
    assert box == pytest.approx((0.0, 0.355, 0.19, 0.545))
    assert "slid onto the canvas" in result.changes[0]
    inner = Layout.parse(raw((0.45, 0.45, 0.55, 0.55), names=["dot"]))
    (box,) = fit_object_sizes(inner, sides=(0.19, 0.44)).layout.boxes
    assert box[2] - box[0] == pytest.approx(0.19)


def test_a_packed_row_keeps_its_sizes_and_slides_apart_to_the_gap():
    # Three circles 0.02 apart, as the offline planner packs "three red circles to the left of a blue square".
    # Their 0.24 lies within the model's sides; shrunk to keep the gap they would sit below the planned size.
    boxes = [(0.0, 0.4, 0.24, 0.64), (0.26, 0.4, 0.50, 0.64), (0.52, 0.4, 0.76, 0.64), (0.78, 0.05, 0.98, 0.25)]
    layout = Layout.parse(raw(*boxes, names=["circle", "circle", "circle", "square"]))
    spec = PromptSpec("t", (ObjectSpec("circle", 3, "red circle"), ObjectSpec("square", 1, "blue square")),
                      (RelationSpec("left_of", 0, (1,)),))  # fmt: skip
    result = fit_object_sizes(layout, spec, sides=(0.19, 0.44), min_gap=0.06)
    fitted = result.layout
    for a, b in zip(fitted.boxes, fitted.boxes[1:3]):
        assert b[0] - a[2] == pytest.approx(0.06)
    for before, after in zip(layout.boxes, fitted.boxes):
        assert (after[2] - after[0], after[3] - after[1]) == pytest.approx((before[2] - before[0], before[3] - before[1]))
        assert after[1] == pytest.approx(before[1])  # along the row only
    assert relation_holds(spec.relations[0], spec, fitted)
    assert sum("moved clear of" in line for line in result.changes) == 2
    assert fit_object_sizes(layout, spec, sides=(0.19, 0.44)).layout == layout  # no gap asked: sizes already fit


def test_boxes_shrink_for_their_gap_only_where_the_prompt_forbids_moving_them():
    # "at the bottom" forbids lifting every other square, and the row has no room to slide: shrinking to the
    # model's least side gives the gap.
    boxes = [(0.015 + 0.25 * k, 0.63, 0.235 + 0.25 * k, 0.85) for k in range(4)]
    colors = ["orange", "red", "blue", "green"]
    layout = Layout(prompt="t", objects=[{"name": "square", "phrase": f"a {c} square", "box": b} for c, b in zip(colors, boxes)])
    spec = PromptSpec("t", tuple(ObjectSpec("square", 1, f"a {c} square", (c,)) for c in colors),
                      tuple(RelationSpec("at", g, where="bottom") for g in range(4)))  # fmt: skip
    result = fit_object_sizes(layout, spec, sides=(0.1875, 0.4375), min_gap=0.0625)
    fitted = result.layout.boxes
    assert all(centre(a) == pytest.approx(centre(b)) for a, b in zip(fitted, boxes))
    assert all(b[2] - b[0] == pytest.approx(0.1875) for b in fitted)
    assert all(gap_between(a, b) >= 0.0625 - 1e-9 for a, b in zip(fitted, fitted[1:]))
    assert not any("moved clear of" in line or "left closer" in line for line in result.changes)


def gap_between(a, b) -> float:
    return max(max(a[0], b[0]) - min(a[2], b[2]), max(a[1], b[1]) - min(a[3], b[3]))


def test_a_row_too_full_for_its_gaps_becomes_two_rows_with_look_alikes_twice_as_far_apart():
    # "four orange squares" as the offline planner packs them: 0.22 wide, 0.03 apart. Fitted to 0.1875 the
    # row has no room for a gap of 2 x 0.0625 between same-colored squares, which an image would join.
    boxes = [(0.015 + 0.25 * k, 0.63, 0.235 + 0.25 * k, 0.85) for k in range(4)]
    layout = Layout(prompt="four orange squares", objects=[
        {"name": "square", "phrase": "an orange square", "box": b} for b in boxes])  # fmt: skip
    spec = PromptSpec("four orange squares", (ObjectSpec("square", 4, "an orange square", ("orange",)),), ())
    result = fit_object_sizes(layout, spec, sides=(0.1875, 0.4375), min_gap=0.0625)
    fitted = result.layout.boxes
    for i in range(4):
        for j in range(i + 1, 4):
            assert gap_between(fitted[i], fitted[j]) >= 0.125 - 1e-9, (i, j)
    assert [round(centre(b)[0], 6) for b in fitted] == [round(centre(b)[0], 6) for b in boxes]  # left to right kept
    assert fitted[0][1] == fitted[2][1] != fitted[1][1] == fitted[3][1]  # every other square lifted
    assert sum("moved clear of" in line for line in result.changes) == 2
    assert all(b[2] - b[0] == pytest.approx(0.22) for b in fitted)  # lifted, not shrunk: 0.22 is a side the model draws


def test_boxes_the_fit_grew_into_each_other_slide_apart_along_their_row():
    # Two small boxes 0.01 apart grow to 0.19 and would overlap; the row has room, so they slide apart.
    layout = Layout.parse(raw((0.30, 0.4, 0.40, 0.5), (0.41, 0.4, 0.51, 0.5), names=["circle", "star"]))
    fitted = fit_object_sizes(layout, None, sides=(0.19, 0.44), min_gap=0.06).layout.boxes
    assert gap_between(*fitted) == pytest.approx(0.06)
    assert centre(fitted[0])[0] < centre(fitted[1])[0] and all(b[1] == pytest.approx(0.355) for b in fitted)


def test_a_row_kept_by_the_prompt_is_left_touching_and_the_change_says_so():
    # "in a row" forbids lifting every other object, and the canvas has no room to slide them apart.
    boxes = [(0.015 + 0.25 * k, 0.63, 0.235 + 0.25 * k, 0.85) for k in range(4)]
    layout = Layout(prompt="t", objects=[{"name": "square", "phrase": "an orange square", "box": b} for b in boxes])
    spec = PromptSpec("t", (ObjectSpec("square", 4, "an orange square", ("orange",)),), (RelationSpec("in_row", 0),))
    result = fit_object_sizes(layout, spec, sides=(0.1875, 0.4375), min_gap=0.0625)
    assert relation_holds(spec.relations[0], spec, result.layout)
    assert any(line.startswith("left closer than the model's object gap") for line in result.changes)


def test_a_fit_that_would_break_a_size_word_goes_part_of_the_way_and_says_so():
    # A tall-ish "large" star: scaled so its longer side is 0.44 it would cover less than a "large" box must (0.16).
    layout = Layout.parse(raw((0.28, 0.44, 0.64, 0.95), names=["star"]))
    spec = PromptSpec("t", (ObjectSpec("star", 1, "large green star", size="large"),), ())
    result = fit_object_sizes(layout, spec, sides=(0.19, 0.44))
    (obj,) = result.layout.objects
    assert size_holds(spec.objects[0], obj)
    assert obj.height < 0.51 and "of the way" in result.changes[0]
    unrelated = fit_object_sizes(layout, None, sides=(0.19, 0.44)).layout.objects[0]  # without the spec: all the way
    assert unrelated.height == pytest.approx(0.44)


SHAPES_WORDS = {"small": (12 / 64, 16 / 64), "large": (21 / 64, 28 / 64)}  # what the shapes world draws each word at


def test_a_declared_size_word_aims_its_box_at_the_middle_of_that_words_sides():
    # An object drawn anywhere in [a, b] has the best worst-case IoU with a box of side sqrt(a * b): a 12-16 px
    # "small" star in the planner's 18 px box scores IoU 0.44 when drawn at 12 px, in a 13.9 px one 0.75.
    layout = Layout(prompt="t", objects=[
        {"name": "star", "phrase": "a small green star", "box": (0.05, 0.05, 0.33, 0.33)},
        {"name": "circle", "phrase": "a large red circle", "box": (0.4, 0.3, 0.98, 0.88)},
    ])  # fmt: skip
    spec = PromptSpec("t", (ObjectSpec("star", 1, "a small green star", ("green",), "small"),
                            ObjectSpec("circle", 1, "a large red circle", ("red",), "large")), ())  # fmt: skip
    result = fit_object_sizes(layout, spec, sides=(0.1875, 0.4375), size_sides=SHAPES_WORDS)
    small, large = result.layout.boxes
    assert small[2] - small[0] == pytest.approx(math.sqrt(12 * 16) / 64)
    # 24.2 px covers 14% of the canvas, less than a photograph's "large" box must (16%): the model's word wins.
    assert large[2] - large[0] == pytest.approx(math.sqrt(21 * 28) / 64) and not size_holds(spec.objects[1], result.layout.objects[1])
    assert "size for 'small' objects" in result.changes[0] and "size for 'large' objects" in result.changes[1]
    assert all(centre(a) == pytest.approx(centre(b)) for a, b in zip(result.layout.boxes, layout.boxes))
    # Without declared words the 18 px box already lies within the model's sides and is kept.
    assert fit_object_sizes(layout, spec, sides=(0.1875, 0.4375)).layout.boxes[0] == pytest.approx(layout.boxes[0])


def test_an_object_without_a_size_word_takes_the_declared_size_nearest_its_box():
    # 19.2 px lies nearer (in ratio) the "large" middle 24.2 px than the "small" 13.9 px; 15 px nearer "small".
    layout = Layout(prompt="t", objects=[
        {"name": "circle", "phrase": "a green circle", "box": (0.05, 0.05, 0.35, 0.35)},
        {"name": "star", "phrase": "a red star", "box": (0.6, 0.6, 0.6 + 15 / 64, 0.6 + 15 / 64)},
    ])  # fmt: skip
    result = fit_object_sizes(layout, None, sides=(0.1875, 0.4375), size_sides=SHAPES_WORDS)
    widths = [b[2] - b[0] for b in result.layout.boxes]
    assert widths == pytest.approx([math.sqrt(21 * 28) / 64, math.sqrt(12 * 16) / 64])


def test_a_box_the_planner_stretched_is_fitted_as_the_model_draws_its_word():
    # The planner stretches a "large" triangle in a crowded row to a photograph's area: 10 x 21 px. Scaled with
    # its aspect it stays 11.5 px wide, and the 24 px triangle the model draws overflows it; every side the
    # model draws a "large" object at is 21-28 px.
    layout = Layout(prompt="t", objects=[{"name": "triangle", "phrase": "a large yellow triangle",
                                          "box": (4 / 64, 33 / 64, 14 / 64, 54 / 64)}])  # fmt: skip
    (box,) = fit_object_sizes(layout, None, sides=(0.1875, 0.4375), size_sides=SHAPES_WORDS).layout.boxes
    assert box[3] - box[1] == pytest.approx(math.sqrt(21 * 28) / 64) and box[2] - box[0] == pytest.approx(21 / 64)
    assert box[0] == pytest.approx(0.0)  # slid onto the canvas rather than capped by its edge


def test_a_row_of_four_small_objects_keeps_the_models_size_and_staggers_for_its_gaps():
    # "two orange squares, a yellow triangle and a red triangle": the planner's 12 px row. Shrunk to keep 4 px
    # gaps at 13.9 px the boxes would stay 12 px, and a 16 px drawing reaches its neighbour; lifted, they keep it.
    boxes = [(x / 64, 41 / 64, (x + 12) / 64, 53 / 64) for x in (0, 20, 36, 52)]
    phrases = ["an orange square", "an orange square", "a yellow triangle", "a red triangle"]
    layout = Layout(prompt="t", objects=[{"name": p.split()[-1], "phrase": p, "box": b} for p, b in zip(phrases, boxes)])
    spec = PromptSpec("t", (ObjectSpec("square", 2, "an orange square", ("orange",)),
                            ObjectSpec("triangle", 1, "a yellow triangle", ("yellow",)),
                            ObjectSpec("triangle", 1, "a red triangle", ("red",))), ())  # fmt: skip
    fitted = fit_object_sizes(layout, spec, sides=(0.1875, 0.4375), min_gap=0.0625, size_sides=SHAPES_WORDS).layout
    assert all(b[2] - b[0] == pytest.approx(math.sqrt(12 * 16) / 64) for b in fitted.boxes)
    gaps = [gap_between(a, b) for k, a in enumerate(fitted.boxes) for b in fitted.boxes[k + 1:]]
    assert min(gaps) >= 0.0625 - 1e-9 and gap_between(*fitted.boxes[:2]) >= 0.125 - 1e-9  # two orange: twice the gap
    # Lifted, not slid along the row (the end boxes slide 1 px onto the canvas as they grow).
    assert [centre(b)[0] for b in fitted.boxes] == pytest.approx([centre(b)[0] for b in boxes], abs=1 / 64)


def test_bad_fit_arguments_name_the_argument():
    layout = Layout.parse(raw((0.1, 0.1, 0.5, 0.5)))
    with pytest.raises(ValueError, match="`sides`"):
        fit_object_sizes(layout, sides=(0.5, 0.2))
    with pytest.raises(ValueError, match="`min_gap`"):
        fit_object_sizes(layout, sides=(0.2, 0.5), min_gap=0.7)
    with pytest.raises(ValueError, match=r"`size_sides\['small'\]`"):
        fit_object_sizes(layout, sides=(0.2, 0.5), size_sides={"small": (0.3, 0.1)})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout_and_spec(), st.floats(0.05, 0.5), st.floats(0.0, 0.5), st.sampled_from([0.0, 0.03, 0.1]), st.booleans())
def test_fitting_keeps_centres_canvas_and_every_requirement_that_held(case, low, extra, gap, declared_words):
    layout, spec = case
    sides = (low, min(low + extra, 1.0))
    words = SHAPES_WORDS if declared_words else None
    result = fit_object_sizes(layout, spec, sides=sides, min_gap=gap, size_sides=words)
    if words:  # a declared word means the model's sides, not a photograph's area bound
        spec = replace(spec, objects=tuple(replace(o, size=None) if o.size in words else o for o in spec.objects))
    after = result.layout
    assert after.names == layout.names
    moved = {int(line.split("]")[0].split("[")[1]) for line in result.changes
             if "moved clear of" in line or "slid onto the canvas" in line}  # fmt: skip
    for i, (before, box) in enumerate(zip(layout.boxes, after.boxes)):
        assert all(-1e-9 <= v <= 1 + 1e-9 for v in box)
        if i not in moved:  # only a box said to be moved clear of its neighbours, or onto the canvas, leaves its centre
            assert centre(box) == pytest.approx(centre(before), abs=1e-9)
    assert_requirements_kept(spec, layout, after)
