"""Real GPT-4 / GPT-3.5 answers in the LMD and Attention Refocusing formats parse into valid layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from scenewright.layout.peer_formats import (
    layout_from_pixel_boxes,
    parse_attention_refocusing_answer,
    parse_attention_refocusing_record,
    parse_lmd_answer,
    parse_peer_answer,
)
from scenewright.layout.schema import Layout, LayoutError

DATA = Path(__file__).parent / "data" / "peer_answers"
AR_FILES = sorted((DATA / "attention_refocusing").glob("*.json"))


def _valid(layout: Layout) -> bool:
    return all(0 <= v <= 1 for box in layout.boxes for v in box) and all(b[2] > b[0] and b[3] > b[1] for b in layout.boxes)


@pytest.mark.parametrize("model", ["gpt-4", "gpt-3.5-turbo"])
def test_every_lmd_cached_answer_parses(model):
    cache = json.loads((DATA / f"cache_lmd_v0.1_{model}.json").read_text())
    answers = [(prompt, answer) for prompt, values in cache.items() for answer in values]
    assert len(answers) == 400
    repaired = 0
    for prompt, answer in answers:
        layout, changes = parse_peer_answer(answer, prompt)
        assert _valid(layout)
        # Nothing is dropped from LMD's answers: one object per tuple in the answer.
        assert len(layout.objects) == answer.split("\n")[0].count("('")
        repaired += bool(changes)
    assert repaired <= 25  # a handful run off the 512 canvas (17 boxes for GPT-4, 23 for GPT-3.5)


def test_lmd_answer_converts_xywh_pixels_and_reads_background_and_negative():
    answer = "[('a green car', [21, 281, 211, 159]), ('a blue bottle', [269, 283, 209, 160])]\nBackground prompt: A realistic scene\nNegative prompt: backpacks"
    layout, changes = parse_lmd_answer(answer, "a green car and a blue bottle")
    assert changes == []
    assert layout.phrases == ["a green car", "a blue bottle"]
    assert layout.names == ["car", "bottle"]
    assert layout.boxes[0] == pytest.approx((21 / 512, 281 / 512, 232 / 512, 440 / 512))
    assert (layout.background, layout.negative) == ("A realistic scene", "backpacks")


def test_lmd_empty_list_is_a_layout_without_objects():
    layout, _ = parse_peer_answer("[]\nBackground prompt: A realistic scene\nNegative prompt: books", "a scene without books")
    assert layout.objects == () and layout.negative == "books"


def test_every_attention_refocusing_layout_parses_but_the_one_without_boxes():
    total, failures, repaired = 0, [], 0
    for path in AR_FILES:
        for prompt, record in json.loads(path.read_text()).items():
            total += 1
            try:
                layout, changes = parse_attention_refocusing_record(prompt, record)
            except LayoutError as err:
                failures.append((prompt, str(err)))
                continue
            assert _valid(layout)
            repaired += bool(changes)
    assert total == 4859
    # GPT-4 gave 2-number points for this one prompt: nothing is a box, so it cannot be a layout.
    assert [p for p, _ in failures] == ["there are 4 chairs and 5 benches arranged in a circle in a room."]
    assert "is not 4 numbers" in failures[0][1]
    assert 0 < repaired < total // 5


def test_attention_refocusing_text_lines_equal_the_records():
    """The same layouts written as AR's `name: (x0, y0, x1, y1)` lines parse to the same layouts."""
    records = json.loads((DATA / "attention_refocusing" / "hrs_spatial_gpt4_boxes_part1.json").read_text())
    for prompt, record in list(records.items())[:100]:
        text = "Here are the boxes:\n" + "\n".join(
            f"{phrase}: ({', '.join(str(v) for v in box)})" for phrase, box in zip(record["phrases"], record["boxes_xyxy_512"])
        )
        assert parse_attention_refocusing_answer(text, prompt) == parse_attention_refocusing_record(prompt, record)
        assert parse_peer_answer(text, prompt) == parse_attention_refocusing_record(prompt, record)


def test_prose_lines_with_parentheses_are_not_objects():
    text = "Note: the cat (on the left) is smaller.\ncat: (10, 20, 110, 120)\ndog: (200, 20, 400, 220)"
    layout, changes = parse_attention_refocusing_answer(text, "a cat left of a dog")
    assert layout.names == ["cat", "dog"] and changes == []


def test_python_list_with_tuple_boxes_is_read_as_corners():
    layout, _ = parse_peer_answer("[('a cat', (10, 20, 210, 320)), ('a dog', (256, 0, 512, 256))]", "a cat and a dog")
    assert layout.boxes == [(10 / 512, 20 / 512, 210 / 512, 320 / 512), (0.5, 0.0, 1.0, 0.5)]


def test_junk_around_the_answer_is_ignored():
    answer = "Sure! Here is the layout:\n```\nObjects: [('a cat', [0, 0, 256, 256])]\nBackground prompt: A sofa\nNegative prompt: \n```\nEnjoy!"
    layout, _ = parse_peer_answer(answer, "a cat")
    assert layout.boxes == [(0.0, 0.0, 0.5, 0.5)] and layout.background == "A sofa"


def test_truncated_list_still_yields_its_complete_tuples():
    answer = "[('a cat', [0, 0, 256, 256]), ('a dog', [256, 0, 256, 256]), ('a bi"
    layout, _ = parse_peer_answer(answer, "a cat, a dog and a bird")
    assert layout.names == ["cat", "dog"]


def test_repairs_are_reported_not_silent():
    layout, changes = layout_from_pixel_boxes(
        "p", ["cat", "dog", "bird", "line"], [[150, 190, 230, 106], [0, 0, 100], [300, 300, 400, 400], [0, 256, 511, 256]]
    )
    assert layout.names == ["cat", "bird"]
    assert layout.boxes[0] == pytest.approx((150 / 512, 106 / 512, 230 / 512, 190 / 512))
    assert any("out of order" in c for c in changes)
    assert any("'dog': dropped" in c and "not 4 numbers" in c for c in changes)
    assert any("'line': dropped" in c and "zero width" in c for c in changes)


def test_layout_drawn_on_a_larger_canvas_is_scaled_keeping_relations():
    # GPT-4 put three of five boxes beyond x = 512 (HRS counting): clipping would erase them.
    boxes = [[20, 80, 170, 140], [420, 80, 570, 140], [820, 80, 970, 140]]
    layout, changes = layout_from_pixel_boxes("three cars in a row", ["car"] * 3, boxes)
    assert len(layout.objects) == 3
    assert any("scaled the whole layout" in c for c in changes)
    xs = [o.center[0] for o in layout.objects]
    assert xs == sorted(xs)  # left-to-right order kept
    widths = [o.width for o in layout.objects]
    assert widths == pytest.approx([widths[0]] * 3)  # equal sizes kept


def test_slight_overshoot_is_clipped_by_the_geometry_checker():
    layout, changes = layout_from_pixel_boxes("a dog", ["a dog"], [[460, 100, 550, 160]])
    assert layout.boxes[0][2] == 1.0
    assert any("clipped to the canvas" in c for c in changes)


def test_code_in_an_answer_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    answer = f"[__import__('pathlib').Path({str(marker)!r}).touch()]\nBackground prompt: x"
    with pytest.raises(LayoutError):
        parse_peer_answer(answer, "a cat")
    assert not marker.exists()


def test_unknown_format_names_the_expected_one():
    with pytest.raises(LayoutError, match="JSON object"):
        parse_peer_answer("I cannot help with that.", "a cat")


@fuzz(200)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.tuples(st.text(max_size=12), st.lists(st.integers(-600, 1200), min_size=0, max_size=6)), max_size=5
        ).map(lambda items: repr([(p, b) for p, b in items]) + "\nBackground prompt: x"),
        st.lists(st.tuples(st.text("abc ", min_size=1, max_size=8), st.lists(st.integers(-600, 1200), max_size=5)), max_size=5).map(
            lambda items: "\n".join(f"{p}: ({', '.join(map(str, b))})" for p, b in items)
        ),
    )
)
def test_any_text_is_a_valid_layout_or_a_layout_error(text):
    try:
        layout, _ = parse_peer_answer(text, "a prompt")
    except LayoutError as err:
        assert str(err)
    else:
        assert _valid(layout)
