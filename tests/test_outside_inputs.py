"""Outside input that used to crash (issue 21's fuzzing reproducers): each is now a clear LayoutError, kept by a test."""

from __future__ import annotations

import json

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from scenewright.layout.geometry import check_layout
from scenewright.layout.llm import DEFAULT_MAX_TOKENS, MAX_ANSWER_CHARS, LLMPlanner, LLMServerError, answer_to_layout, redact_url
from scenewright.layout.peer_formats import parse_peer_answer
from scenewright.layout.schema import Layout, LayoutError

BIG = int("1" + "0" * 309)  # a JSON integer past the float range


@pytest.mark.parametrize("depth", [995, 5000])
def test_deeply_nested_answers_are_no_layout_not_a_recursion_error(depth):
    with pytest.raises(LayoutError, match="no layout format"):
        answer_to_layout("[" * depth, "a cat")


def test_a_looping_answer_is_read_in_linear_time_and_a_runaway_one_is_refused():
    # Before, the LMD tuple pattern backtracked cubically: 20 s at n=800, hours at n=4500 (31,500 characters).
    # Now a failed match gives up after its own span; this would hang, not fail, if that came back.
    with pytest.raises(LayoutError, match="no layout format"):
        parse_peer_answer("('a', [" * 4500, "a cat")
    with pytest.raises(LayoutError, match=f"more than any layout needs \\({MAX_ANSWER_CHARS:,}\\)"):
        answer_to_layout("('a', [" * 5000, "a cat")
    # The real format still reads, single or double quotes, with a quote of the other kind inside.
    layout, _ = parse_peer_answer("""[("a cat's toy", [10, 20, 100, 100]), ('a dog', [200, 200, 100, 50])]""", "x")
    assert [o.phrase for o in layout.objects] == ["a cat's toy", "a dog"]


def test_the_llm_planner_caps_its_answers_by_default():
    assert LLMPlanner(model="m", base_url="http://127.0.0.1:9/v1").max_tokens == DEFAULT_MAX_TOKENS
    assert DEFAULT_MAX_TOKENS * 4 <= MAX_ANSWER_CHARS * 1.5  # a capped answer (~4 chars a token) is still read


def test_a_layout_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_bytes(b'{"prompt": "a cat\xff"}')
    with pytest.raises(LayoutError, match=r"broken\.json is not UTF-8 text \(byte 0xff at offset 17\)"):
        Layout.load(path)


@pytest.mark.parametrize("field", ["name", "phrase"])
def test_a_lone_surrogate_is_refused_naming_the_field(field):
    obj = {"name": "cat", "phrase": "a cat", "box": [0, 0, 1, 1], field: "ca\ud800t"}
    with pytest.raises(LayoutError, match=rf"objects\.0\.{field}: `{field}` holds \\ud800 at 2, half of a UTF-16 pair"):
        Layout.parse({"prompt": "a cat", "objects": [obj]})
    with pytest.raises(LayoutError, match="prompt"):
        Layout.parse({"prompt": "\udfff", "objects": []})


def test_a_box_number_past_the_float_range_is_a_layout_error():
    with pytest.raises(LayoutError, match=r"objects\.0\.box\.2"):
        Layout.parse({"prompt": "a cat", "objects": [{"name": "cat", "phrase": "a cat", "box": [0, 0, BIG, 1]}]})
    answer = json.dumps({"objects": [{"name": "cat", "phrase": "a cat", "box": [0, 0, 1, 1]}]}).replace("1]", f"{BIG}]")
    with pytest.raises(LayoutError, match=r"objects\.0\.box\.3: Input should be a valid number"):
        answer_to_layout(answer, "a cat")
    with pytest.raises(LayoutError, match=r"objects\.0\.box\.2"):
        check_layout({"prompt": "a cat", "objects": [{"name": "cat", "phrase": "a cat", "box": [0, 0, BIG, 1]}]})


@fuzz(200)
@given(name=st.text(max_size=20), phrase=st.text(max_size=40), prompt=st.text(max_size=40))
def test_any_text_is_a_layout_that_round_trips_or_a_layout_error(name, phrase, prompt):
    try:
        layout = Layout.parse({"prompt": prompt, "objects": [{"name": name, "phrase": phrase, "box": [0, 0, 1, 1]}]})
    except LayoutError as err:
        assert str(err).startswith("invalid layout: ")
    else:
        assert Layout.parse(layout.to_json()) == layout


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:PW@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
        ("https://token@example.invalid/v1?x=1", "https://***@example.invalid/v1?x=1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        (None, None),
    ],
)
def test_credentials_in_a_base_url_are_redacted(url, shown):
    assert redact_url(url) == shown


def test_the_llm_planner_never_shows_the_base_urls_password():
    planner = LLMPlanner(model="m", base_url="http://user:PW@127.0.0.1:9/v1", cache=False, client_retries=0, timeout=2)
    assert "PW" not in repr(planner) and "PW" not in planner.server
    assert "PW" not in planner._scrub("could not connect to http://user:PW@127.0.0.1:9/v1 as user:PW")
    with pytest.raises(LLMServerError) as caught:  # nothing listens on port 9: a connection error, worded by us
        planner.plan("a cat")
    assert "PW" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)
