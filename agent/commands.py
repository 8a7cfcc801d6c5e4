"""`scenewright run` (the agent loop) and `scenewright config` (the effective settings).

    scenewright run "two red circles to the left of a blue square" --out runs/circles
    scenewright run "a cat left of a dog" --model ./sd15 --planner llm --methods car,sar --attempts 4 --out runs/cat
    scenewright config --config scenewright.toml

`run` writes OUT/image.png (the best attempt), layout.json (its layout), overlay.png (planned boxes
green, detected red) and report.json (settings with secrets redacted, every attempt's seed, methods,
options, scores, timings and failures in words). Settings come from the flags > ``SCENEWRIGHT_*``
environment > ``--config FILE`` (TOML) > defaults (:mod:`scenewright.agent.config`).
Exit codes: 0 the files were written (report.json's "passed" says whether the image was verified; a
warning on stderr says when not), 2 bad settings, an unplannable prompt or an unloadable model, 1 no
attempt produced an image.
A user's error (a bad flag, setting, output folder, prompt or model) is one line on stderr and exit code 2,
found before any model work where it can be; a bug of ours keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scenewright.agent.config import AgentSettings, ConfigError, load_settings
from scenewright.agent.loop import AgentError, run
from scenewright.cli_checks import check_output_folder
from scenewright.errors import CLIError, InputError, ModelNotAvailableError
from scenewright.layout.llm import LLMServerError
from scenewright.layout.planners import PLANNER_NAMES, get_planner
from scenewright.layout.schema import LayoutError
from scenewright.synth.loading import quiet_loading
from scenewright.synth.recipe import Recipe, parse_options, split_options


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings flags shared by `run` and `config`; a flag not given is absent (so env/file apply)."""
    quiet = argparse.SUPPRESS
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="a TOML file of settings")
    parser.add_argument("--planner", choices=PLANNER_NAMES, default=quiet, help="layout planner (default offline)")
    parser.add_argument("--planner-model", default=quiet, help="llm: model name; local: folder or hub id")
    parser.add_argument("--llm-base-url", default=quiet, help="llm: OpenAI-compatible server URL (or OPENAI_BASE_URL)")
    parser.add_argument("--model", default=quiet, help="Stable Diffusion folder, hub id or embedded name (default shapes)")
    parser.add_argument("--methods", default=quiet, help="comma-separated guidance methods (default car,sar), or none")
    parser.add_argument("--attempts", type=int, default=quiet,
                        help="attempt budget (default 4: a try, a new seed, composition, stronger guidance)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=quiet, help="denoising steps (default 50)")
    parser.add_argument("--seed", type=int, default=quiet, help="initial-noise seed of the first attempt (default 0)")
    parser.add_argument("--guidance-scale", type=float, default=quiet, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--detector", default=quiet, help="detector that verifies the image (default shapes)")
    parser.add_argument("--guidance-boost", type=float, default=quiet, help="'stronger guidance' scale_factor multiplier")
    parser.add_argument("--extra-methods", default=quiet, help="methods 'stronger guidance' adds, comma-separated")
    parser.add_argument("--compose", action="store_true", default=quiet,
                        help="compose each object, drawn alone, into its box from the first attempt (else a remedy)")  # fmt: skip
    parser.add_argument("--compose-spatial-temporal", type=float, default=quiet, metavar="WEIGHT",
                        help="on composed attempts, blend each object's phrase into its box with this weight "
                        "(default 1; 0: off)")  # fmt: skip
    parser.add_argument("--min-mean-iou", type=float, default=quiet, help="box IoU an image needs to pass (default 0.3)")
    parser.add_argument("--device", default=quiet, help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=quiet, help="weights dtype")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a method/engine option, VALUE as JSON, e.g. --option max_refinement_steps=5 (repeatable)",
    )  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``config`` to the `scenewright` parser."""
    run_parser = subparsers.add_parser(
        "run",
        help="text -> a verified image: plan, draw, detect, score, retry",
        description="Plan a layout for TEXT, draw it with attention control, check the image with a detector and "
        "try again (new seed, composition, stronger guidance, re-plan) until it shows what the text asks.",
    )
    run_parser.add_argument("prompt", help="the text to draw")
    _add_settings_arguments(run_parser)
    run_parser.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder (default runs/latest)")
    run_parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    run_parser.set_defaults(handler=run_command)

    config_parser = subparsers.add_parser(
        "config",
        help="print the effective settings as JSON (secrets redacted)",
        description="Print the settings `scenewright run` would use, from flags > SCENEWRIGHT_* environment > "
        "--config FILE > defaults, as JSON; API keys show as **********.",
    )
    _add_settings_arguments(config_parser)
    config_parser.set_defaults(handler=config_command)


def settings_from_args(args: argparse.Namespace):
    """The :class:`~scenewright.agent.config.AgentSettings` for parsed flags (raises ConfigError / CLIError)."""
    flags = {name: getattr(args, name) for name in AgentSettings.model_fields if hasattr(args, name)}
    if args.option:
        flags["options"] = parse_options(args.option)
    return load_settings(flags, args.config)


def _settings_or_none(args: argparse.Namespace):
    """The settings for ``args``, or None once the one-line error is printed."""
    try:
        settings = settings_from_args(args)
        check_options_taken(settings)
    except (ConfigError, CLIError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    return settings


def check_options_taken(settings: AgentSettings) -> None:
    """Every option is one a method of ``methods`` or ``extra_methods`` (or the engine) takes: else exit 2 now,
    rather than every attempt failing after the model load (the synthesizer rejects options no method takes)."""
    names = [name for name in (*settings.methods, *settings.extra_methods) if name != "none"]
    try:
        split_options([Recipe(tuple(dict.fromkeys(names)))], settings.options)
    except InputError as err:
        raise CLIError(str(err).replace("of --methods", "of --methods or --extra-methods")) from None


def config_command(args: argparse.Namespace) -> int:
    settings = _settings_or_none(args)
    if settings is None:
        return 2
    print(json.dumps(settings.redacted(), indent=2))
    return 0


class TqdmProgress:
    """The stage and denoising step of each attempt on stderr: one tqdm bar per attempt."""

    def __init__(self, attempts: int, steps: int, disable: bool = False):
        self.attempts = attempts
        self.steps = steps
        self.disable = disable
        self.bar = None
        self.attempt = None

    def __call__(self, stage: str, attempt: int, step: int | None, total: int | None) -> None:
        from tqdm.auto import tqdm

        if stage == "load":  # between the first plan and the first drawing; the bar stays
            if not self.disable:
                tqdm.write("loading the model ...", file=sys.stderr)
            return
        if attempt != self.attempt:
            self.close()
            self.attempt = attempt
            self.bar = tqdm(total=self.steps, unit="step", file=sys.stderr, disable=self.disable, leave=True)
        if self.bar is None:
            return
        self.bar.set_description(f"attempt {attempt}/{self.attempts} {stage:<10}", refresh=False)
        if step is not None:
            self.bar.n = step
        self.bar.refresh()
        if stage == "done":
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_command(args: argparse.Namespace) -> int:
    settings = _settings_or_none(args)
    if settings is None:
        return 2
    try:
        check_output_folder("--out", args.out)  # before any model work: a bad folder costs a second, not a run
        planner = get_planner(settings.planner, **settings.planner_options())
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (InputError, OSError) as err:  # the planner cannot be set up with these settings
        print(f"error: --planner {settings.planner}: {err}", file=sys.stderr)
        return 2
    progress = TqdmProgress(settings.attempts, settings.steps, disable=args.quiet)
    try:
        with quiet_loading(args.quiet):
            result = run(args.prompt, settings=settings, planner=planner, progress=progress)
    # An unloadable model, an unplannable prompt, an unreachable planner server, a bad device: the user's to fix.
    # Anything else is our bug and keeps its traceback.
    except (ModelNotAvailableError, LayoutError, AgentError, LLMServerError, CLIError) as err:
        progress.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    progress.close()
    try:
        paths = result.save(args.out)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    for attempt in result.attempts:
        verdict = "passed" if attempt.passed else (attempt.error or "; ".join(attempt.failures) or "failed")
        score = f"score {attempt.score:.3f}" if attempt.score is not None else "no score"
        print(f"attempt {attempt.index} ({attempt.remedy}, seed {attempt.seed}): {score}, {verdict}", file=sys.stderr)
    for name in ("image", "layout", "overlay", "report"):
        if name in paths:
            print(paths[name])
    if result.best is None:
        print(f"error: no attempt produced an image; last error: {result.attempts[-1].error}", file=sys.stderr)
        return 1
    if not result.passed:
        print(f"warning: no attempt passed verification; wrote the best, attempt {result.best.index}", file=sys.stderr)
    return 0


__all__ = ["TqdmProgress", "check_options_taken", "config_command", "register", "run_command", "settings_from_args"]
