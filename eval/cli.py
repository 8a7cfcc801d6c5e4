"""`scenewright eval-*` subcommands. Each evaluation registers its parser here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation subcommands to the `scenewright` parser."""
    _register_eval_layouts(subparsers)


def _register_eval_layouts(subparsers: argparse._SubParsersAction) -> None:
    from eval.layouts import SUITES
    from layout.planners import PLANNER_NAMES

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
    from eval.layouts import evaluate_suite, format_table, get_planner
    from layout.cli import planner_options

    if args.limit is not None and args.limit < 1:
        print(f"--limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.failures < 0:
        print(f"--failures must be >= 0, got {args.failures}", file=sys.stderr)
        return 2
    try:
        planner = get_planner(args.planner, **planner_options(args))
    except (ValueError, TypeError, OSError) as err:
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
