"""`scenewright eval-*` subcommands. Each evaluation registers its parser here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scenewright.cli_checks import check_finite, check_finite_options, check_output_folder
from scenewright.errors import CLIError, InputError, ModelNotAvailableError
from scenewright.eval.bench import process_state, run_bench
from scenewright.eval.detect import DETECTORS, detector_segmenter, get_detector
from scenewright.eval.layouts import SUITES, evaluate_suite, format_table
from scenewright.eval.suites import SUITE_NAMES, load_prompt_file, load_suite
from scenewright.layout.cli import planner_options
from scenewright.layout.planners import PLANNER_NAMES, get_planner
from scenewright.layout.schema import LayoutError
from scenewright.synth.recipe import parse_options, parse_recipes, split_options
from scenewright.synth.composition import CompositionOptions
from scenewright.synth.loading import device_and_dtype, quiet_loading


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation subcommands to the `scenewright` parser."""
    _register_eval_layouts(subparsers)
    _register_bench(subparsers)


def _register_eval_layouts(subparsers: argparse._SubParsersAction) -> None:

    parser = subparsers.add_parser(
        "eval-layouts",
        help="stage-1 layout accuracy on LMD / NSR-1K, by each benchmark's own rules",
        description="Plan every benchmark prompt and score the layouts with the benchmark's own stage-1 rules.",
    )
    parser.add_argument("--suite", choices=SUITES, action="append", required=True,
                        help="benchmark to run; repeat to run several")  # fmt: skip
    parser.add_argument("--planner", choices=PLANNER_NAMES, default="offline", help="offline (default, no model), llm or local")
    # The planner flags of `scenewright plan`, read by the same layout.cli.planner_options.
    parser.add_argument("--base-url", help="llm: OpenAI-compatible server URL, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="llm: model name; local: a folder holding a transformers causal LM")
    parser.add_argument("--temperature", type=float, default=None, help="llm/local: sampling temperature (default 0)")
    parser.add_argument("--max-retries", type=int, default=None, help="llm/local: re-asks after an unusable answer")
    parser.add_argument("--cache-dir", type=Path, default=None, help="llm: answer cache folder")
    parser.add_argument("--no-cache", action="store_true", help="llm: neither read nor write the answer cache")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N prompts of each suite")
    parser.add_argument("--seed", type=int, default=0, help="planner seed (offline: box jitter; 0 = none)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("--failures", type=int, default=0, metavar="N",
                        help="also list up to N failing prompts per task with their boxes")  # fmt: skip
    parser.set_defaults(handler=_eval_layouts)


def _eval_layouts(args: argparse.Namespace) -> int:

    if args.limit is not None and args.limit < 1:
        print(f"--limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.failures < 0:
        print(f"--failures must be >= 0, got {args.failures}", file=sys.stderr)
        return 2
    try:
        check_finite("--temperature", args.temperature, low=0)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        planner = get_planner(args.planner, **planner_options(args))
    except (CLIError, InputError, OSError) as err:
        print(f"--planner {args.planner}: {err}", file=sys.stderr)
        return 2
    results = [evaluate_suite(suite, planner, limit=args.limit, seed=args.seed) for suite in args.suite]
    if args.json:
        payload = [r.to_dict() for r in results]
        for item in payload:
            for task in item["tasks"]:
                task["failures"] = task["failures"][: args.failures]
                if not args.failures:
                    task.pop("failures")
        print(json.dumps(payload, indent=2))
        return 0
    print(format_table(results))
    if args.failures:
        for result in results:
            for score in result.scores:
                for line in score.failures[: args.failures]:
                    print(f"FAIL {score.suite}/{score.task}: {line}")
    return 0


def _register_bench(subparsers: argparse._SubParsersAction) -> None:

    parser = subparsers.add_parser(
        "bench",
        help="benchmark guidance methods: generate, detect, score; writes summary.json and report.html",
        description="Generate every prompt of a suite with each method combination and seed, detect the objects, "
        "score the images and write images, records, summary.json and report.html under --out. "
        "Resumable: finished images are skipped. Shard over GPUs with `accelerate launch -m scenewright.agent.cli bench ...`.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--suite", choices=SUITE_NAMES, help="a shipped benchmark suite")
    source.add_argument("--prompts", type=Path, metavar="FILE", help="a custom suite: one prompt a line")
    parser.add_argument("--methods", default="none,car+sar",
                        help="comma-separated method combinations, '+' joins methods: none,attend_excite,car+sar; "
                        "'compose' first draws each object alone and composes it into its box (LMD): compose,compose+car+sar; "
                        "'spatial_temporal[:W]' blends each object's phrase into its box (Wu et al. 2023): compose+spatial_temporal")  # fmt: skip
    parser.add_argument("--compose-segmenter", choices=["attention", *sorted(DETECTORS)], default="attention",
                        help="how 'compose' finds each object it drew alone: the model's own cross-attention (default), "
                        "or a detector's mask/box, as LMD uses SAM (shapes: the exact detector)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per prompt (default 1)")
    parser.add_argument("--model", required=True, help="diffusers Stable Diffusion folder, hub id, or 'shapes' (embedded)")
    parser.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/NAME (re-run to resume)")
    parser.add_argument("--planner", choices=PLANNER_NAMES, default=None,
                        help="plan every prompt with this planner (default: the suite's shipped layouts, else offline)")  # fmt: skip
    parser.add_argument("--planner-model", default=None, help="llm/local planner: the model name or folder")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance scale (default: the model's, 7.5 for SD, 2.0 for shapes)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of the suite")
    parser.add_argument("--detector", choices=[*sorted(DETECTORS), "none"], default=None,
                        help="detector for scoring (default: shapes for --suite shapes or --model shapes; 'none' = generate only)")  # fmt: skip
    parser.add_argument("--detector-model", default=None, help="open-vocabulary detector weights: hub id or folder")
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's, i.e. this process's GPU or cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="weights dtype (default: float16 on cuda, else float32)")  # fmt: skip
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method/engine option, VALUE as JSON (repeatable), as for `scenewright generate`")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_bench)


def _bench_setup(args: argparse.Namespace):
    """Everything but the model, checked before the (slow) model load: raises CLIError/InputError/OSError for exit 2."""

    for flag, value, low in (("--seeds", args.seeds, 1), ("--steps", args.steps, 1), ("--limit", args.limit, 1)):
        if value is not None and value < low:
            raise CLIError(f"{flag} must be >= {low}, got {value}")
    check_finite("--guidance-scale", args.guidance_scale, low=0)
    check_output_folder("--out", args.out)
    specs = parse_recipes(args.methods)
    options = parse_options(args.option)
    check_finite_options(options)
    split_options(specs, options)  # an option no method takes: exit 2 before loading the model
    items = load_suite(args.suite, limit=args.limit) if args.suite else load_prompt_file(args.prompts, limit=args.limit)
    # The shapes world (its suite or its model) has an exact detector; any other images need one named.
    detector_name = args.detector or ("shapes" if "shapes" in (args.suite, args.model) else None)
    if detector_name is None:
        raise CLIError("--detector is required outside the shapes suite and model: owlv2, owlvit, grounding-dino "
                         "(with --detector-model), or none to only generate")  # fmt: skip
    planner = None
    if args.planner is not None:
        planner = get_planner(args.planner, **({"model": args.planner_model} if args.planner_model else {}))
    elif args.planner_model:
        raise CLIError("--planner-model needs --planner llm or local")
    return specs, options, items, detector_name, planner


def _composition(args: argparse.Namespace, detector_name: str, detector, device):
    """The ``compose`` combinations' options: segment with the model's attention, or with a detector."""

    name = args.compose_segmenter
    if name == "attention":
        return CompositionOptions()
    if name != detector_name or detector is None:  # not the scoring detector: load its own
        detector = _load_detector(name, args, device)
    return CompositionOptions(segmenter=detector_segmenter(detector))


def _load_detector(name: str, args: argparse.Namespace, device):
    """``get_detector(name)`` with ``--detector-model`` and, for open-vocabulary models, the device."""

    extra = {"model": args.detector_model} if args.detector_model else {}
    if name != "shapes":
        extra["device"] = device
    return get_detector(name, **extra)


def _bench(args: argparse.Namespace) -> int:

    try:
        specs, options, items, detector_name, planner = _bench_setup(args)
        if args.device is None:
            args.device = str(process_state().device)  # this rank's GPU under `accelerate launch`
        device, dtype = device_and_dtype(args.device, args.dtype)
    except (CLIError, InputError, LayoutError, OSError) as err:  # the user's to fix; anything else keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    from scenewright.synth import Synthesizer  # diffusers: loaded only when a bench runs

    try:
        with quiet_loading(args.quiet):
            detector = None  # loaded first: a missing detector is found before the slower diffusion model loads
            if detector_name != "none":
                detector = _load_detector(detector_name, args, device)
            composition = _composition(args, detector_name, detector, device) if any(s.compose for s in specs) else None
            synthesizer = Synthesizer.from_pretrained(args.model, torch_dtype=dtype, device=device)
    except (ModelNotAvailableError, InputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = run_bench(
        items, synthesizer, specs, out=args.out, seeds=args.seeds, detector=detector, planner=planner,
        use_shipped_layouts=args.planner is None, progress=not args.quiet,
        generate_options={"num_inference_steps": args.steps, "guidance_scale": args.guidance_scale}, method_options=options,
        composition=composition,
    )  # fmt: skip
    line = f"{counts['done']} generated, {counts['skipped']} already done, {counts['failed']} failed"
    if process_state().is_main_process:  # under accelerate/torchrun only the main process writes them
        line += f"; {args.out / 'summary.json'}, {args.out / 'report.html'}"
    print(line)
    return 0
