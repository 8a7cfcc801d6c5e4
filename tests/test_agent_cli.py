"""`scenewright run` and `scenewright config` through agent.cli.main, on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest
from fuzzing import fuzz
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from PIL import Image

from scenewright.agent.cli import main
from scenewright.layout.schema import Layout

pytestmark = pytest.mark.usefixtures("no_ambient_config")

PROMPT = "two red circles to the left of a blue square"
SECRET = "sk-agent-cli-DO-NOT-LEAK-9876"


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def test_run_writes_the_four_files_and_reports_every_attempt(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", PROMPT, "--model", str(model_dir), "--methods", "none", "--steps", "2", "--attempts", "2",
            "--seed", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "attempt 1/2 synthesize" in captured.err and "attempt 2/2" in captured.err  # the progress display
    assert captured.out.split() == [str(out / f) for f in ("image.png", "layout.json", "overlay.png", "report.json")]
    assert Image.open(out / "image.png").size == (64, 64)
    assert Image.open(out / "overlay.png").size == (512, 512)
    report = json.loads((out / "report.json").read_text())
    # Random weights draw noise, so no attempt passes and the whole budget is spent and recorded.
    assert [a["index"] for a in report["attempts"]] == [1, 2] and report["passed"] is False
    assert [a["seed"] for a in report["attempts"]] == [5, 6]
    first = report["attempts"][0]
    assert first["methods"] == ["none"] and set(first["scores"]) == {"count_acc", "spatial_acc", "box_iou50", "mean_iou"}
    assert first["timings"]["synthesize"] > 0 and first["failures"]  # what it got wrong, in words
    assert report["best_attempt"] in (1, 2) and "warning: no attempt passed" in captured.err
    assert Layout.load(out / "layout.json").to_dict() == report["layout"]
    assert report["settings"]["steps"] == 2
    assert report["settings"]["guidance_scale"] is None and first["guidance_scale"] == 7.5  # the model's (SD's) default


def test_without_the_embedded_model_the_run_ends_with_one_clear_line(tmp_path, capsys, monkeypatch):
    from scenewright.synth import loading

    monkeypatch.setitem(loading.EMBEDDED_MODELS, "shapes", tmp_path / "not-built")
    assert main(["run", PROMPT, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [line for line in err.splitlines() if line.startswith("error: the embedded 'shapes' model")]
    assert len(_errors(err)) == 1 and "--model" in _errors(err)[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _config(argv, capsys) -> dict:
    assert main(["config", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_config_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path, capsys, monkeypatch):
    toml = tmp_path / "scenewright.toml"
    toml.write_text('attempts = 5\nsteps = 7\nseed = 3\nmethods = ["attend_excite"]\n[options]\nscale_factor = 30\n')
    monkeypatch.setenv("SCENEWRIGHT_STEPS", "9")
    monkeypatch.setenv("SCENEWRIGHT_METHODS", "car,sar")
    effective = _config(["--config", str(toml), "--seed", "11"], capsys)
    assert effective["seed"] == 11  # flag over file
    assert effective["steps"] == 9 and effective["methods"] == ["car", "sar"]  # environment over file
    assert effective["attempts"] == 5 and effective["options"] == {"scale_factor": 30}  # file over defaults
    assert effective["guidance_scale"] is None and effective["model"] == "shapes"  # defaults (None: the model's)
    assert _config(["--config", str(toml), "--steps", "4", "--methods", "none"], capsys)["steps"] == 4
    monkeypatch.delenv("SCENEWRIGHT_STEPS")
    assert _config(["--config", str(toml)], capsys)["steps"] == 7


def test_api_keys_are_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    effective = _config(["--planner", "llm"], capsys)
    assert effective["openai_api_key"] == "**********"
    toml = tmp_path / "keys.toml"
    toml.write_text(f'openai_api_key = "{SECRET}x"\nattempts = 0\n')
    assert main(["config", "--config", str(toml)]) == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert _errors(captured.err) == ["error: attempts in " + str(toml) + ": Input should be greater than or equal to 1"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--attempts", "0"], "--attempts: Input should be greater than or equal to 1"),
        (["--methods", "car,teleport"], "unknown method(s) teleport"),
        (["--methods", "none,car"], "cannot be combined"),
        (["--detector", "owl"], "unknown detector 'owl'"),
        (["--option", "scale_factor"], "is not KEY=VALUE"),
        (["--config", "/nonexistent/s.toml"], "cannot read config file /nonexistent/s.toml"),
        (["--config", "BAD_TOML"], "is not valid TOML"),
        (["--config", "UNKNOWN_KEY"], "unknown setting 'colour'"),
    ],
)
def test_bad_settings_exit_2_with_one_clear_line(tmp_path, capsys, argv, message):
    (tmp_path / "bad.toml").write_text("attempts = = 3\n")
    (tmp_path / "unknown.toml").write_text('colour = "red"\n')
    places = {"BAD_TOML": str(tmp_path / "bad.toml"), "UNKNOWN_KEY": str(tmp_path / "unknown.toml")}
    argv = [places.get(a, a) for a in argv]
    for command in (["config"], ["run", PROMPT, "--out", str(tmp_path / "out")]):
        assert main([*command, *argv]) == 2
        err = capsys.readouterr().err
        assert len(_errors(err)) == 1 and message in _errors(err)[0], err
        assert "Traceback" not in err


_FLAG_VALUES = {
    "--planner": st.sampled_from(["offline", "llm", "local", "other", ""]),
    "--methods": st.sampled_from(["car,sar", "none", "attend_excite", "car,,", ",", "none,car", "x"]),
    "--attempts": st.one_of(st.integers(-3, 60).map(str), st.text(max_size=4)),
    "--steps": st.one_of(st.integers(-2, 2000).map(str), st.just("1.5")),
    "--seed": st.one_of(st.integers(-5, 2**33).map(str), st.text(max_size=3)),
    "--guidance-scale": st.one_of(st.floats(allow_nan=True).map(str), st.text(max_size=3)),
    "--guidance-boost": st.sampled_from(["0.5", "1", "2", "inf", "nan", "x"]),
    "--min-mean-iou": st.sampled_from(["-1", "0", "0.5", "2", "nan"]),
    "--detector": st.sampled_from(["shapes", "owl", ""]),
    "--dtype": st.sampled_from(["float16", "int8"]),
    "--device": st.sampled_from(["cpu", "gpu0", "cuda:7", ""]),
    "--extra-methods": st.sampled_from(["", "attend_excite", "none", "car,boxdiff", "[1, 2]", "[broken"]),
    "--option": st.sampled_from(["scale_factor=30", "junk", "=3", "thresholds={\"0\": 2}"]),
    "--model": st.just("/nonexistent/sd-model"),  # every valid run ends at loading, before any drawing
}


@fuzz(60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.one_of(st.just(PROMPT), st.text(max_size=30)),
    flags=st.lists(st.sampled_from(sorted(_FLAG_VALUES)).flatmap(lambda f: _FLAG_VALUES[f].map(lambda v: (f, v))), max_size=5),
    command=st.sampled_from(["run", "config"]),
)
def test_fuzzed_flags_exit_0_or_2_with_one_line_never_a_traceback(tmp_path, capsys, prompt, flags, command):
    argv = [command, *([prompt] if command == "run" else [])]
    argv += [part for flag, value in flags for part in (flag, value)] + ["--model", "/nonexistent/sd-model"]
    if command == "run":
        argv += ["--out", str(tmp_path / "out"), "-q"]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2), err
    if code == 2:
        assert len(_errors(err)) == 1, err
