"""The LLM planner through the real `openai` client against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeOpenAIServer, closed_port_url
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from scenewright import prompts
from scenewright.layout.cache import AnswerCache, cache_key
from scenewright.layout.geometry import check_layout
from scenewright.layout.llm import LLMPlanner, LLMServerError, answer_to_layout, response_format
from scenewright.layout.parse import parse_prompt
from scenewright.layout.planners import get_planner
from scenewright.layout.plan import plan_layout
from scenewright.layout.relations import requirement_failures
from scenewright.layout.schema import Layout, LayoutError

pytestmark = pytest.mark.usefixtures("no_ambient_config")

SECRET = "sk-test-DO-NOT-LEAK-1234567890"
PROMPT = "a dog to the left of a cat"
GOOD = json.dumps(
    {
        "objects": [
            {"name": "dog", "phrase": "a dog", "box": [0.05, 0.3, 0.45, 0.8]},
            {"name": "cat", "phrase": "a cat", "box": [0.55, 0.4, 0.9, 0.8]},
        ],
        "background": "A realistic scene",
        "negative": "",
    }
)


def make_planner(server_url: str, tmp_path, **options) -> LLMPlanner:
    options = {"model": "test-model", "api_key": SECRET, "cache_dir": tmp_path / "cache", "client_retries": 0, **options}
    return LLMPlanner(base_url=server_url, **options)


def test_good_answer_becomes_the_layout_and_the_request_asks_for_structured_output(tmp_path):
    with FakeOpenAIServer([GOOD]) as server:
        layout = make_planner(server.url, tmp_path).plan(PROMPT)
    assert layout.prompt == PROMPT
    assert layout.names == ["dog", "cat"]
    assert layout.boxes[0] == (0.05, 0.3, 0.45, 0.8)
    (request,) = server.requests
    assert request["model"] == "test-model"
    assert request["response_format"]["type"] == "json_schema"
    assert request["messages"][0]["role"] == "system" and "normalized" in request["messages"][0]["content"]
    assert request["messages"][-1]["content"].startswith(f"Caption: {PROMPT}")
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"


def test_malformed_answer_is_retried_with_its_validation_error(tmp_path):
    bad = json.dumps({"objects": [{"name": "dog", "phrase": "a dog", "box": [0.5, 0.3, 0.2, 0.8]}]})  # x1 < x0
    with FakeOpenAIServer([bad, GOOD]) as server:
        layout = make_planner(server.url, tmp_path).plan(PROMPT)
    assert layout.names == ["dog", "cat"]
    assert len(server.requests) == 2
    second = server.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": bad}
    assert second[-1]["role"] == "user"
    assert "x1 <= x0" in second[-1]["content"] and "objects.0.box" in second[-1]["content"]


def test_retries_are_bounded_and_the_error_quotes_the_last_problem(tmp_path):
    with FakeOpenAIServer(["no idea", "still no idea", '{"objects": "many"}']) as server:
        with pytest.raises(LayoutError, match=r"3 attempts; last error: \"objects\" must be a list"):
            make_planner(server.url, tmp_path, max_retries=2).plan(PROMPT)
    assert len(server.requests) == 3


def test_cache_hit_makes_no_request_and_the_key_is_never_stored(tmp_path):
    with FakeOpenAIServer([GOOD, GOOD]) as server:
        first = make_planner(server.url, tmp_path).plan(PROMPT)
        again = make_planner(server.url, tmp_path).plan(PROMPT)  # a fresh planner reads the same disk cache
        assert len(server.requests) == 1
        assert again == first
        make_planner(server.url, tmp_path).plan(PROMPT, seed=1)  # another sample index is another key
        assert len(server.requests) == 2
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)
    for f in files:
        text = f.read_text()
        assert SECRET not in text and "Bearer" not in text and "Authorization" not in text
        assert json.loads(text)["key"]["model"] == "test-model"


def test_cache_key_covers_model_template_prompt_temperature_and_sample(tmp_path):
    cache = AnswerCache(tmp_path)
    base = dict(model="m", template_hash=prompts.template_hash(), prompt="p", temperature=0.0, sample=0)
    paths = {cache.path(cache_key(**base))}
    for field, value in [("model", "m2"), ("template_hash", "0" * 16), ("prompt", "q"), ("temperature", 0.7), ("sample", 1)]:
        paths.add(cache.path(cache_key(**{**base, field: value})))
    assert len(paths) == 6


def test_corrupt_cache_file_is_a_miss(tmp_path):
    with FakeOpenAIServer([GOOD, GOOD]) as server:
        planner = make_planner(server.url, tmp_path)
        planner.plan(PROMPT)
        (path,) = (tmp_path / "cache").iterdir()
        path.write_text("{not json")
        assert planner.plan(PROMPT).names == ["dog", "cat"]
    assert len(server.requests) == 2


def test_server_error_names_the_status_and_what_to_check_without_the_key(tmp_path):
    body = {"error": {"message": f"internal failure while using key {SECRET}"}}
    with FakeOpenAIServer([(500, body)]) as server:
        with pytest.raises(LLMServerError) as info:
            make_planner(server.url, tmp_path).plan(PROMPT)
    message = str(info.value)
    assert "500" in message and server.url in message and "model name" in message
    assert SECRET not in message


def test_connection_refused_says_to_check_the_base_url(tmp_path):
    url = closed_port_url()
    with pytest.raises(LLMServerError, match="cannot reach") as info:
        make_planner(url, tmp_path, timeout=5).plan(PROMPT)
    assert "--base-url" in str(info.value) and url in str(info.value)


def test_unauthorized_says_to_check_the_key(tmp_path):
    with FakeOpenAIServer([(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})]) as server:
        with pytest.raises(LLMServerError, match="OPENAI_API_KEY") as info:
            make_planner(server.url, tmp_path).plan(PROMPT)
    assert SECRET not in str(info.value)


def test_rejected_structured_output_falls_back_and_is_remembered(tmp_path):
    rejection = (400, {"error": {"message": "response_format 'json_schema' is not supported by this server"}})
    with FakeOpenAIServer([rejection, GOOD, GOOD]) as server:
        planner = make_planner(server.url, tmp_path)
        assert planner.plan(PROMPT).names == ["dog", "cat"]
        planner.plan("a dog and a cat")  # a new prompt: straight to the mode that worked
    formats = [r.get("response_format", {}).get("type") for r in server.requests]
    assert formats == ["json_schema", "json_object", "json_object"]


def test_plain_text_mode_is_the_last_fallback_and_a_400_there_is_an_error(tmp_path):
    rejection = (400, {"error": {"message": "unsupported request"}})
    with FakeOpenAIServer([rejection, rejection, rejection]) as server:
        with pytest.raises(LLMServerError, match="400"):
            make_planner(server.url, tmp_path).plan(PROMPT)
    assert [r.get("response_format", {}).get("type") for r in server.requests] == ["json_schema", "json_object", None]


def test_a_400_about_something_else_is_an_error_without_fallback(tmp_path):
    too_long = (400, {"error": {"message": "This model's maximum context length is 2048 tokens"}})
    with FakeOpenAIServer([too_long]) as server:
        with pytest.raises(LLMServerError, match="maximum context length"):
            make_planner(server.url, tmp_path).plan(PROMPT)
    assert len(server.requests) == 1


def test_peer_text_answers_are_accepted(tmp_path):
    lmd = "[('a dog', [25, 150, 205, 260]), ('a cat', [280, 200, 180, 210])]\nBackground prompt: A park\nNegative prompt: "
    ar = "Here are the coordinates:\ndog: (25, 150, 230, 410)\ncat: (280, 200, 460, 410)"
    with FakeOpenAIServer([lmd, ar]) as server:
        planner = make_planner(server.url, tmp_path, cache=False)
        from_lmd = planner.plan(PROMPT)
        from_ar = planner.plan(PROMPT, seed=1)
    assert from_lmd.background == "A park"
    assert from_lmd.boxes == from_ar.boxes == [(25 / 512, 150 / 512, 230 / 512, 410 / 512), (280 / 512, 200 / 512, 460 / 512, 410 / 512)]


def test_base_url_without_key_sends_a_placeholder(tmp_path):
    with FakeOpenAIServer([GOOD]) as server:
        LLMPlanner(model="m", base_url=server.url, cache=False, client_retries=0).plan(PROMPT)
    assert server.headers[0]["authorization"] == "Bearer EMPTY"


def test_environment_configures_the_planner(tmp_path, monkeypatch):
    with FakeOpenAIServer([GOOD]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("SCENEWRIGHT_LLM_MODEL", "env-model")
        monkeypatch.setenv("SCENEWRIGHT_CACHE_DIR", str(tmp_path / "root"))
        get_planner("llm", client_retries=0).plan(PROMPT)
    assert server.requests[0]["model"] == "env-model"
    assert len(list((tmp_path / "root" / "llm").iterdir())) == 1


def test_configuration_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="SCENEWRIGHT_LLM_MODEL"):
        LLMPlanner(base_url="http://127.0.0.1:9/v1")  # a custom server needs a model name
    with pytest.raises(LLMServerError, match="OPENAI_API_KEY"):
        LLMPlanner(cache_dir=tmp_path).plan(PROMPT)  # hosted OpenAI without a key
    with pytest.raises(ValueError, match="temperature"):
        LLMPlanner(model="m", base_url="http://x/v1", temperature=3)
    with pytest.raises(ValueError, match="unknown planner 'gpt'; choose one of offline, llm, local"):
        get_planner("gpt")
    assert "sk-" not in repr(LLMPlanner(model="m", api_key=SECRET))


def test_plan_layout_checks_the_answer_against_the_prompt(tmp_path):
    overlapping = json.dumps(
        {"objects": [{"name": "dog", "phrase": "a dog", "box": [0.1, 0.3, 0.6, 0.8]},
                     {"name": "cat", "phrase": "a cat", "box": [0.3, 0.3, 0.8, 0.8]}]}
    )  # fmt: skip
    with FakeOpenAIServer([overlapping]) as server:
        layout, changes = plan_layout(PROMPT, make_planner(server.url, tmp_path), check=True)
    assert changes, "the overlapping pair must be separated"
    assert requirement_failures(parse_prompt(PROMPT), layout) == []
    dog, cat = layout.boxes
    assert dog[2] <= cat[0] + 0.25 * (cat[2] - cat[0])  # the overlap went down to the checker's threshold


def test_json_schema_is_built_from_the_answer_model():
    fmt = response_format("json_schema")
    schema = fmt["json_schema"]["schema"]
    assert set(schema["required"]) == {"objects", "background", "negative"}
    assert schema["additionalProperties"] is False
    obj = schema["$defs"]["AnswerObject"]
    assert obj["properties"]["box"]["minItems"] == obj["properties"]["box"]["maxItems"] == 4


@pytest.mark.parametrize("example", prompts.in_context_examples(), ids=lambda e: e["caption"][:30])
def test_in_context_examples_satisfy_their_captions(example):
    """Every worked example must be a layout the checker keeps as is and that meets what the parser reads."""
    layout = Layout.parse({"prompt": example["caption"], **example["answer"]})
    spec = parse_prompt(example["caption"])
    assert sorted(layout.counts().items()) == sorted((o.name, o.count) for o in spec.objects)
    assert requirement_failures(spec, layout) == []
    assert check_layout(layout, spec).changes == []


def test_answer_parsing_reads_fenced_json_and_names_missing_fields():
    fenced = f"Sure! Here it is:\n```json\n{GOOD}\n```\nHope this helps."
    assert answer_to_layout(fenced, PROMPT)[0].names == ["dog", "cat"]
    with pytest.raises(LayoutError, match="empty"):
        answer_to_layout("   ", PROMPT)
    with pytest.raises(LayoutError, match="objects.0.box"):
        answer_to_layout('{"objects": [{"name": "dog", "phrase": "a dog", "box": [1, 2, 3]}]}', PROMPT)
    with pytest.raises(LayoutError, match="look like pixels"):
        answer_to_layout('{"objects": [{"name": "dog", "phrase": "a dog", "box": [10, 20, 300, 400]}]}', PROMPT)


@fuzz(150)
@given(st.text(max_size=300) | st.builds(lambda s: "{" + s, st.text(max_size=200)))
def test_any_answer_text_is_a_layout_or_a_layout_error(text):
    try:
        layout, _ = answer_to_layout(text, PROMPT)
    except LayoutError as err:
        assert str(err)
    else:
        assert all(0 <= v <= 1 for box in layout.boxes for v in box)
