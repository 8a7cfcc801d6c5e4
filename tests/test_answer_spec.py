"""A model planner's plan is judged against its own answer's reading of the text (layout.answer_spec)."""

from __future__ import annotations

import json

from fake_openai import FakeOpenAIServer
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from scenewright.layout import plan as plan_module
from scenewright.layout.answer_spec import spec_from_answer
from scenewright.layout.llm import LLMPlanner
from scenewright.layout.parse import parse_prompt
from scenewright.layout.plan import plan
from scenewright.layout.schema import Layout

PROMPT = "a red ball to the left of two kittens, no dogs"


def answer(*objects: tuple[str, str, list[float]], negative: str = "dogs, blurry") -> dict:
    return {
        "objects": [{"name": n, "phrase": p, "box": b} for n, p, b in objects],
        "background": "A garden",
        "negative": negative,
    }


THREE_KITTENS = answer(
    ("ball", "a small red ball", [0.02, 0.6, 0.22, 0.8]),
    ("kitten", "a kitten", [0.3, 0.5, 0.5, 0.8]),
    ("kitten", "a kitten", [0.55, 0.5, 0.75, 0.8]),
    ("kitten", "a kitten", [0.78, 0.5, 0.98, 0.8]),
)


def test_the_answer_gives_objects_counts_sizes_and_negatives_and_the_text_its_relations():
    text = parse_prompt(PROMPT)
    assert [(o.name, o.count) for o in text.objects] == [("ball", 1), ("kitten", 2)]
    spec = spec_from_answer(Layout.parse({"prompt": PROMPT, **THREE_KITTENS}), text)
    assert [(o.name, o.count, o.attributes, o.size) for o in spec.objects] == [
        ("ball", 1, ("red",), "small"),
        ("kitten", 3, (), None),
    ]
    assert [(r.kind, r.subject, r.references) for r in spec.relations] == [("left_of", 0, (1,))]
    assert spec.negative == ("dog",)  # "blurry" names no object an image could be checked for
    assert spec.background == "A garden"
    assert any("drew 3 x 'a kitten' where the text parser reads 2" in note for note in spec.notes)


def test_a_relation_on_an_object_the_model_did_not_draw_is_dropped_with_a_note():
    text = parse_prompt(PROMPT)
    cats = answer(("ball", "a red ball", [0.02, 0.6, 0.22, 0.8]), ("cat", "a cat", [0.3, 0.5, 0.5, 0.8]))
    spec = spec_from_answer(Layout.parse({"prompt": PROMPT, **cats}), text)
    assert [o.name for o in spec.objects] == ["ball", "cat"]
    assert spec.relations == ()
    assert any(note.startswith("relation left_of dropped") and "'a kitten'" in note for note in spec.notes)
    assert any("asks for 2 x 'a kitten'; the planner drew none" in note for note in spec.notes)


def test_an_empty_answer_keeps_the_texts_reading():
    text = parse_prompt(PROMPT)
    assert spec_from_answer(Layout(prompt=PROMPT), text) is text


def test_plan_with_the_llm_planner_builds_its_spec_from_the_answer_and_parses_once(tmp_path, monkeypatch):
    calls = []
    real_parse = plan_module.parse_prompt
    monkeypatch.setattr(plan_module, "parse_prompt", lambda text: calls.append(text) or real_parse(text))
    with FakeOpenAIServer([json.dumps(THREE_KITTENS)]) as server:
        planner = LLMPlanner(model="m", base_url=server.url, api_key="k", cache_dir=tmp_path, client_retries=0)
        result = plan(PROMPT, planner)
    assert calls == [PROMPT]
    assert [(o.name, o.count) for o in result.spec.objects] == [("ball", 1), ("kitten", 3)]
    assert result.layout.counts() == {"ball": 1, "kitten": 3}  # the checker keeps the model's three kittens
    assert result.unmet == ()  # judged against its own reading: nothing it asked for is missing
    offline = plan(PROMPT, "offline")
    assert [(o.name, o.count) for o in offline.spec.objects] == [("ball", 1), ("kitten", 2)]


_WORDS = st.sampled_from(["cat", "dog", "ball", "kitten", "red", "small", "huge", "wooden", "a", "the", "two",
                          "people", "blurry", "teddy", "bear", "left", "of", "above", "between", ",", "and"])  # fmt: skip
_TEXT = st.lists(_WORDS, min_size=1, max_size=8).map(" ".join)


@fuzz(200)
@given(
    prompt=_TEXT,
    answer=st.lists(st.tuples(_TEXT, _TEXT), max_size=6),
    negative=st.lists(_TEXT, max_size=3).map(", ".join),
)
def test_any_answer_reads_as_a_spec_whose_relations_point_at_its_objects(prompt, answer, negative):
    objects = [{"name": name, "phrase": phrase, "box": [0.1, 0.1, 0.4, 0.4]} for name, phrase in answer]
    layout = Layout.parse({"prompt": prompt, "objects": objects, "negative": negative})
    text = parse_prompt(prompt)
    spec = spec_from_answer(layout, text)
    if not layout.objects:
        assert spec is text
        return
    assert sum(o.count for o in spec.objects) == len(layout.objects)  # every instance the model drew, counted once
    for relation in spec.relations:
        members = (relation.subject, *relation.references)
        assert all(0 <= m < len(spec.objects) for m in members) and relation.subject not in relation.references
    assert not set(spec.negative) & {o.name for o in spec.objects}  # nothing drawn is also forbidden
