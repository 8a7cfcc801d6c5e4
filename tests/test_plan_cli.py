"""`scenewright plan`: stdout holds only JSON, batches survive failures, flags are checked, fuzzed prompts never crash."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeOpenAIServer
from fuzzing import fuzz
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from PIL import Image

from scenewright.agent.cli import main
from scenewright.layout.schema import Layout

pytestmark = pytest.mark.usefixtures("no_ambient_config")


def _answer(objects: list[tuple[str, list[float]]]) -> str:
    return json.dumps({"objects": [{"name": n, "phrase": f"a {n}", "box": b} for n, b in objects], "background": "", "negative": ""})


def _llm_flags(server, tmp_path) -> list[str]:
    return ["--planner", "llm", "--base-url", server.url, "--model", "m", "--cache-dir", str(tmp_path / "cache")]


def test_one_prompt_prints_only_the_layout_json(capsys):
    assert main(["plan", "two cats to the left of a dog"]) == 0
    out, _ = capsys.readouterr()
    layout = Layout.parse(out)
    assert layout.counts() == {"cat": 2, "dog": 1}


def test_repair_notes_go_to_stderr_and_stdout_stays_json(tmp_path, capsys):
    overlapping = _answer([("dog", [0.1, 0.3, 0.6, 0.8]), ("cat", [0.3, 0.3, 0.8, 0.8])])
    with FakeOpenAIServer([overlapping]) as server:
        assert main(["plan", *_llm_flags(server, tmp_path), "a dog to the left of a cat"]) == 0
    out, err = capsys.readouterr()
    assert Layout.parse(out).names == ["dog", "cat"]
    assert "repaired:" in err and "repaired" not in out


def test_no_check_prints_the_planner_layout_unchanged(tmp_path, capsys):
    overlapping = _answer([("dog", [0.1, 0.3, 0.6, 0.8]), ("cat", [0.3, 0.3, 0.8, 0.8])])
    with FakeOpenAIServer([overlapping]) as server:
        assert main(["plan", *_llm_flags(server, tmp_path), "--no-check", "a dog to the left of a cat"]) == 0
    assert Layout.parse(capsys.readouterr().out).boxes[1] == (0.3, 0.3, 0.8, 0.8)


def test_batch_writes_every_line_in_order_and_a_failure_is_a_record(tmp_path, capsys):
    answers = {
        "a dog": _answer([("dog", [0.2, 0.2, 0.8, 0.8])]),
        "a cat": "I refuse.",  # never a layout: three attempts, then an error record
        "a cup": _answer([("cup", [0.3, 0.3, 0.6, 0.7])]),
    }

    def by_prompt(request):
        caption = request["messages"][1]["content"].removeprefix("Caption: ").split("\n")[0]
        return answers[caption]

    (tmp_path / "prompts.txt").write_text("a dog\n\na cat\na cup\n")
    out_path = tmp_path / "out" / "layouts.jsonl"
    with FakeOpenAIServer([by_prompt] * 5) as server:
        code = main(["plan", *_llm_flags(server, tmp_path), "--input", str(tmp_path / "prompts.txt"),
                     "--output", str(out_path), "--png", str(tmp_path / "drawings")])  # fmt: skip
    assert code == 1
    records = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["a dog", "a cat", "a cup"]
    assert Layout.parse(records[0]).names == ["dog"] and Layout.parse(records[2]).names == ["cup"]
    assert set(records[1]) == {"prompt", "error"} and "3 attempts" in records[1]["error"]
    assert sorted(p.name for p in (tmp_path / "drawings").iterdir()) == ["0001.png", "0004.png"]  # by input line
    assert "planned 2 prompt(s), 1 failed" in capsys.readouterr().err


def test_png_draws_the_boxes(tmp_path, capsys):
    png = tmp_path / "layout.png"
    assert main(["plan", "a cat to the left of a dog", "--png", str(png)]) == 0
    layout = Layout.parse(capsys.readouterr().out)
    image = Image.open(png).convert("RGB")
    assert image.size == (512, 512)
    background = image.getpixel((0, 0))
    x0, y0, x1, y1 = (round(v * 511) for v in layout.objects[0].box)
    assert image.getpixel((x0, (y0 + y1) // 2)) != background  # the box's left edge is drawn
    assert image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == background  # boxes are outlines


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plan"], "exactly one of PROMPT or --input"),
        (["plan", "a cat", "--input", "x.txt"], "exactly one of PROMPT or --input"),
        (["plan", "a cat", "--model", "m"], "--model: only used by --planner llm or local"),
        (["plan", "a cat", "--planner", "local"], "--planner local needs --model"),
        (["plan", "a cat", "--planner", "local", "--model", "/no/such/folder"], "does not exist"),
        (["plan", "a cat", "--planner", "llm", "--base-url", "http://127.0.0.1:9/v1"], "SCENEWRIGHT_LLM_MODEL"),
        (["plan", "a cat", "--planner", "llm", "--model", "m", "--base-url", "http://x/v1", "--temperature", "9"], "temperature"),
        (["plan", "--input", "/no/such/prompts.txt"], "cannot read --input"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_empty_prompt_is_an_error_not_json(capsys):
    assert main(["plan", "   "]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "prompt" in err


@fuzz(60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.text(max_size=80),
    seed=st.integers(0, 5),
    no_check=st.booleans(),
)
def test_fuzzed_prompts_give_json_or_a_clear_error(capsys, prompt, seed, no_check):
    argv = ["plan", "--seed", str(seed), *(["--no-check"] if no_check else []), "--", prompt]
    code = main(argv)
    out, err = capsys.readouterr()
    if code == 0:
        assert Layout.parse(out).prompt == prompt.strip()
    else:
        assert code == 1 and out == "" and err.startswith("error: ")


_FLAG_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["0", "-1", "2.5", "nan", "1e9", ".", "gpt"]))
_FLAGS = st.one_of(
    st.sampled_from(["--no-check", "--no-cache", "-v"]).map(lambda f: [f]),
    st.tuples(st.sampled_from(["--planner"]), st.sampled_from(["offline", "llm", "local", "other"])).map(list),
    st.tuples(st.sampled_from(["--model", "--temperature", "--seed", "--max-retries"]), _FLAG_VALUES).map(list),
)


@fuzz(80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(_FLAGS, max_size=4), prompt=st.text(min_size=1, max_size=40))
def test_fuzzed_flags_exit_cleanly(tmp_path, monkeypatch, capsys, flags, prompt):
    """Any mix of flags: a layout on stdout (0), a clear error (1/2), or argparse's usage error -- never a traceback."""
    monkeypatch.setenv("SCENEWRIGHT_CACHE_DIR", str(tmp_path))  # the llm planner only reads an empty cache
    argv = ["plan", *[token for flag in flags for token in flag], "--", prompt]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: unknown choice or a value that is not a number
        assert exit_.code == 2
        assert "usage:" in capsys.readouterr().err
        return
    out, err = capsys.readouterr()
    if code == 0:
        Layout.parse(out)
    else:
        assert code in (1, 2) and out == "" and "error: " in err
