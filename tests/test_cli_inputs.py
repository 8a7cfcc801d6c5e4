"""Issue 21 section 2: every bad flag or setting is one `error:` line and exit code 2, found before any model work;
a bug of ours keeps its traceback (issue 22: no swallowed errors)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenewright.agent import commands
from scenewright.agent.cli import build_parser, main
from scenewright.agent.config import load_settings
from scenewright.errors import CLIError
from scenewright.synth import cli as synth_cli

pytestmark = pytest.mark.usefixtures("no_ambient_config")

PROMPT = "two red circles to the left of a blue square"
NO_MODEL = "/nonexistent/sd-model"  # a check that passed would go on to fail at loading, with another message


def _one_error(capsys, code: int) -> str:
    """The one `error:` line of a command that exited 2, with no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("command", [["config"], ["run", PROMPT, "--model", NO_MODEL]])
def test_options_environment_that_is_not_json_is_one_line(command, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SCENEWRIGHT_OPTIONS", "{bad")
    line = _one_error(capsys, main([*command, *(["--out", str(tmp_path / "o")] if command[0] == "run" else [])]))
    assert "SCENEWRIGHT_OPTIONS" in line and "must be a JSON object" in line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--height", "-64"], "--height must be a positive number of pixels, got -64"),
        (["--width", "0"], "--width must be a positive number of pixels, got 0; leave it out"),
        (["--guidance-scale", "nan"], "--guidance-scale must be a finite number in [0, inf], got nan"),
        (["--guidance-scale", "inf"], "--guidance-scale must be a finite number"),
        (["--guidance-scale", "-1"], "--guidance-scale must be a finite number in [0, inf], got -1"),
        (["--option", "scale_factor=NaN"], "--option scale_factor=nan: option values must be finite"),
        (["--option", "thresholds={\"0\": Infinity}"], "--option thresholds.0=inf"),
        (["--out", "AFILE/x.png"], "--out AFILE/x.png: AFILE is a file, not a folder"),
        (["--save-layout", "AFILE/x.json"], "--save-layout AFILE/x.json: AFILE is a file, not a folder"),
        (["--out", "DIR"], "is a folder; give a file name"),
    ],
)
def test_generate_flags_are_checked_before_the_model_loads(flags, message, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    (tmp_path / "images.png").mkdir()
    places = {"AFILE/x.png": str(tmp_path / "afile" / "x.png"), "AFILE/x.json": str(tmp_path / "afile" / "x.json"),
              "DIR": str(tmp_path / "images.png")}  # fmt: skip
    flags = [places.get(f, f) for f in flags]
    line = _one_error(capsys, main(["generate", "a cat", "--model", NO_MODEL, "-q", *flags]))
    assert message.replace("AFILE", str(tmp_path / "afile")) in line, line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--height", "1000000000"], "--height 1000000000: this model draws multiples of 4 px from 4 to 256 (4x its native 64)"),
        (["--width", "30"], "--width 30: this model draws multiples of 4 px"),
        (["--height", "260"], "try --height 256"),
    ],
)
def test_generate_sizes_are_bounded_by_the_model_before_drawing(flags, message, model_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    line = _one_error(capsys, main(["generate", "a cat", "--model", str(model_dir), "--steps", "1", "-q", "--out", str(out), *flags]))
    assert message in line and not out.exists()


def test_bench_and_run_check_their_output_folder_before_any_model_work(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    line = _one_error(capsys, main(["bench", "--suite", "shapes", "--model", NO_MODEL, "--out", str(afile), "-q"]))
    assert f"--out {afile} is a file, not a folder" in line
    line = _one_error(capsys, main(["run", PROMPT, "--model", NO_MODEL, "--out", str(afile / "run"), "-q"]))
    assert f"--out {afile / 'run'}: {afile} is a file, not a folder" in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--suite", "shapes", "--model", NO_MODEL, "--out", "OUT", "--guidance-scale", "nan"], "--guidance-scale must be a finite"),
        (["bench", "--suite", "shapes", "--model", NO_MODEL, "--out", "OUT", "--option", "scale_factor=-Infinity"],
         "--option scale_factor=-inf"),
        (["eval-layouts", "--suite", "lmd", "--temperature", "nan"], "--temperature must be a finite number"),
        (["run", PROMPT, "--model", NO_MODEL, "--out", "OUT", "--option", "scale_factor=NaN"], "scale_factor=nan: option values must be finite"),
        (["config", "--option", "sigma=Infinity"], "--option: sigma=inf: option values must be finite"),
        (["serve", "--option", "sigma=NaN"], "sigma=nan: option values must be finite"),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert message in _one_error(capsys, main(argv))


@pytest.mark.parametrize("command", [["config"], ["run", PROMPT, "--model", NO_MODEL, "--out", "OUT"]])
def test_an_option_no_method_takes_is_a_bad_setting_exit_2(command, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    line = _one_error(capsys, main([*argv, "--option", "bogus_option=1"]))
    assert "--option bogus_option: no method of --methods or --extra-methods takes it; valid: " in line
    # An option that only the stronger-guidance remedy's extra method takes is fine.
    assert main(["config", "--extra-methods", "attend_excite", "--option", "max_iter_to_alter=3"]) == 0


def test_a_layout_file_that_is_not_text_is_named(tmp_path, capsys):
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(bytes(range(128, 256)))
    line = _one_error(capsys, main(["generate", "--layout", str(garbage), "--model", NO_MODEL, "-q"]))
    assert str(garbage) in line and "not UTF-8" in line


def test_credentials_in_the_llm_base_url_are_never_printed_or_reported(monkeypatch, capsys):
    password = "PW-do-not-leak-4321"
    assert main(["config", "--llm-base-url", f"http://user:{password}@host/v1"]) == 0
    out = capsys.readouterr().out
    assert password not in out and json.loads(out)["llm_base_url"] == "http://***@host/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", f"https://me:{password}@example.org/v1")
    redacted = load_settings().redacted()  # what report.json's "settings" holds (RunResult.to_dict)
    assert redacted["llm_base_url"] == "https://***@example.org/v1" and password not in json.dumps(redacted)


def test_every_stage_registers_its_command():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"plan", "generate", "bench", "eval-layouts", "run", "config", "serve"} <= names


def test_a_bug_of_ours_keeps_its_traceback_not_a_bad_settings_line(monkeypatch, tmp_path):
    def broken_run(*args, **kwargs):
        raise TypeError("an internal bug")

    monkeypatch.setattr(commands, "run", broken_run)
    with pytest.raises(TypeError, match="an internal bug"):
        main(["run", PROMPT, "--model", NO_MODEL, "--out", str(tmp_path / "out"), "-q"])


def test_a_planner_that_cannot_be_set_up_is_a_bad_setting(tmp_path, capsys):
    line = _one_error(capsys, main(["run", PROMPT, "--planner", "local", "--out", str(tmp_path / "out"), "-q"]))
    assert line.startswith("error: --planner local: the local planner needs `model`")


@pytest.fixture(scope="module")
def tiny_synthesizer():
    from scenewright.synth import Synthesizer
    from scenewright.synth.testing import get_dummy_pipe

    return Synthesizer.from_pipe(get_dummy_pipe(seed=0))


_size = st.one_of(st.none(), st.integers(-2**40, 2**40), st.integers(-8, 300)).map(lambda v: None if v is None else str(v))
_scale = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True).map(str), st.sampled_from(["0", "7.5", "1e308"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=_size, width=_size, steps=st.integers(-3, 2000), scale=_scale)
def test_fuzzed_generate_numbers_are_checked_or_usable(tiny_synthesizer, height, width, steps, scale):
    flags = {"--height": height, "--width": width, "--steps": str(steps), "--guidance-scale": scale}
    argv = ["generate", "a cat", *[f"{flag}={value}" for flag, value in flags.items() if value is not None]]  # "=": -1e+16 is no flag
    args = build_parser().parse_args(argv)
    try:
        synth_cli._check_args(args)
        synth_cli.check_image_size(tiny_synthesizer, args.height, args.width)
    except CLIError as err:
        assert str(err).startswith("--") and "\n" not in str(err)
        return
    assert args.steps >= 1
    assert args.guidance_scale is None or (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0)
    for side in (args.height, args.width):
        assert side is None or (side % 4 == 0 and 4 <= side <= 256)


def test_generate_planner_that_cannot_be_set_up_is_a_bad_flag_and_a_bug_keeps_its_traceback(monkeypatch, tmp_path, capsys):
    argv = ["generate", "a cat", "--model", NO_MODEL, "--out", str(tmp_path / "x.png"), "-q"]
    line = _one_error(capsys, main([*argv, "--planner", "local"]))
    assert line.startswith("error: --planner local: the local planner needs `model`")

    def broken_plan(*args, **kwargs):
        raise ValueError("an internal bug")  # a plain ValueError of ours is not "bad settings"

    monkeypatch.setattr(synth_cli, "plan", broken_plan)
    with pytest.raises(ValueError, match="an internal bug"):
        main(argv)


@pytest.mark.parametrize("flag", ["--guidance-scale", "--compose-spatial-temporal", "--min-mean-iou", "--guidance-boost"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_settings_say_finite_not_a_misleading_bound(flag, value, capsys):
    assert _one_error(capsys, main(["config", f"{flag}={value}"])) == f"error: {flag}: Input should be a finite number"
