"""`scenewright eval-*` subcommands. Each evaluation registers its parser here."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation subcommands to the `scenewright` parser."""
    _register_eval_layouts(subparsers)


def _register_eval_layouts(subparsers: argparse._SubParsersAction) -> None:
    from eval.layouts import SUITES

    parser = subparsers.add_parser(
        "eval-layouts",
        help="stage-1 layout accuracy on LMD / NSR-1K, by each benchmark's own rules",
        description="Plan every benchmark prompt and score the layouts with the benchmark's own stage-1 rules.",
    )
    parser.add_argument("--suite", choices=SUITES, action="append", required=True,
                        help="benchmark to run; repeat to run several")  # fmt: skip
    parser.add_argument("--planner", default="offline", help="planner name: offline (default), llm or local")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N prompts of each suite")
    parser.add_argument("--seed", type=int, default=0, help="planner seed (offline: box jitter; 0 = none)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("--failures", type=int, default=0, metavar="N",
                        help="also list up to N failing prompts per task with their boxes")  # fmt: skip
    parser.set_defaults(handler=_eval_layouts)


def _eval_layouts(args: argparse.Namespace) -> int:
    from eval.layouts import evaluate_suite, format_table, get_planner

    if args.limit is not None and args.limit < 1:
        print(f"--limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        planner = get_planner(args.planner)
    except (ValueError, KeyError) as err:
        print(f"--planner {args.planner}: {err}", file=sys.stderr)
        return 2
    results = [evaluate_suite(suite, planner, limit=args.limit, seed=args.seed) for suite in args.suite]
    if args.json:
        payload = [r.to_dict() for r in results]
        if not args.failures:
            for item in payload:
                for task in item["tasks"]:
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
