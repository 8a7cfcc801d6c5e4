"""`scenewright plan`: text -> a checked layout as JSON.

One prompt: ``scenewright plan "two cats left of a dog"`` prints the layout JSON on stdout -- and
nothing else there; notes and logs go to stderr, one a line: ``repaired: ...`` for each repair of the
checker, ``unmet: ...`` for each requirement of the prompt (count, size, relation) the layout still breaks.

A batch: ``scenewright plan --input prompts.txt --output layouts.jsonl`` reads one prompt a line
(blank lines are skipped) and writes one JSON line per prompt, in order, as each is planned. A prompt
that fails gives ``{"prompt": ..., "error": ...}`` instead of a layout and the batch goes on; the exit
code is 1 when any failed. With ``--input``, ``--png`` names a FOLDER that receives one drawing per
prompt, ``<line number>.png`` (1-based line of the input file, zero-padded to 4 digits).

Exit codes: 0 success, 1 a prompt could not be planned, 2 bad arguments or planner set-up.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from scenewright.errors import CLIError, InputError
from scenewright.layout.llm import LLMServerError
from scenewright.layout.plan import Plan, plan
from scenewright.layout.planners import PLANNER_NAMES, get_planner
from scenewright.layout.render import save_layout_png
from scenewright.layout.schema import LayoutError


class _StderrHandler(logging.Handler):
    """Writes log records to the CURRENT sys.stderr (stays correct when stderr is swapped, e.g. under pytest)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plan`` to the `scenewright` parser."""
    parser = subparsers.add_parser(
        "plan",
        help="plan a bounding-box layout for a prompt (JSON on stdout)",
        description="Plan a layout for a prompt (or one prompt a line of --input), check and repair it, print JSON.",
        epilog="LLM planner: --base-url (or OPENAI_BASE_URL) picks an OpenAI-compatible server (vLLM, Ollama, "
        "llama.cpp: e.g. http://localhost:8000/v1; no key needed, 'EMPTY' is sent); OPENAI_API_KEY is the key "
        "for hosted OpenAI; --model (or SCENEWRIGHT_LLM_MODEL) names the model. Answers are cached in "
        "$SCENEWRIGHT_CACHE_DIR/llm (default ~/.cache/scenewright/llm).",
    )
    parser.add_argument("prompt", nargs="?", help="the text to plan (or use --input)")
    parser.add_argument("--input", type=Path, metavar="FILE", help="plan every line of FILE (one prompt a line)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write JSON here instead of stdout (JSON lines with --input)")
    parser.add_argument("--planner", choices=PLANNER_NAMES, default="offline", help="offline (default, no model), llm or local")
    parser.add_argument("--base-url", help="llm: OpenAI-compatible server URL, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="llm: model name (default gpt-4o-mini on hosted OpenAI; required with --base-url); "
                        "local: a folder holding a transformers causal LM")
    parser.add_argument("--temperature", type=float, default=None, help="llm/local: sampling temperature in [0, 2] (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="sample index / seed (offline: box jitter, 0 = none)")
    parser.add_argument("--max-retries", type=int, default=None, help="llm/local: re-asks after an unusable answer (default 2)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="llm: answer cache folder")
    parser.add_argument("--no-cache", action="store_true", help="llm: neither read nor write the answer cache")
    parser.add_argument("--no-check", action="store_true", help="skip the geometry checker (print the planner's layout as is)")
    parser.add_argument("--png", type=Path, metavar="PATH", help="draw the boxes: a PNG file, or with --input a folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests, cache hits and retries to stderr")
    parser.set_defaults(handler=run_plan)


def pretty_json(layout) -> str:
    """The layout as indented JSON with each box on one line (``"box": [0.1, 0.2, 0.5, 0.6]``)."""
    text = layout.to_json(indent=2)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + ", ".join(v.strip() for v in m[1].split(",")) + "]", text)


def planner_options(args: argparse.Namespace) -> dict:
    """The :func:`scenewright.layout.planners.get_planner` options the flags give; flags that do not apply are errors."""
    model_flags = {"--temperature": args.temperature, "--max-retries": args.max_retries}
    if args.planner == "offline":
        given = {
            "--model": args.model,
            "--base-url": args.base_url,
            "--cache-dir": args.cache_dir,
            "--no-cache": args.no_cache or None,
            **model_flags,
        }
        wrong = [flag for flag, value in given.items() if value is not None]
        if wrong:
            raise CLIError(f"{', '.join(wrong)}: only used by --planner llm or local, not offline")
        return {}
    options: dict = {"model": args.model}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_retries is not None:
        options["max_retries"] = args.max_retries
    if args.planner == "llm":
        options.update(base_url=args.base_url, cache=not args.no_cache, cache_dir=args.cache_dir)
    else:
        wrong = [f for f, v in {"--base-url": args.base_url, "--cache-dir": args.cache_dir}.items() if v is not None]
        if wrong or args.no_cache:
            raise CLIError(f"{', '.join(wrong or ['--no-cache'])}: only used by --planner llm")
        if not args.model:
            raise CLIError("--planner local needs --model <folder> holding a transformers causal LM")
    return options


def run_plan(args: argparse.Namespace) -> int:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    layout_logger = logging.getLogger("layout")
    previous_level = layout_logger.level
    layout_logger.addHandler(handler)
    layout_logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return _run(args)
    finally:
        layout_logger.removeHandler(handler)
        layout_logger.setLevel(previous_level)


def _run(args: argparse.Namespace) -> int:
    if (args.prompt is None) == (args.input is None):
        print("error: give exactly one of PROMPT or --input FILE", file=sys.stderr)
        return 2
    try:
        planner = get_planner(args.planner, **planner_options(args))
    except (CLIError, InputError, OSError) as err:  # OSError: the local model is not available
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.input is not None:
        return _run_batch(args, planner)
    return _run_one(args, planner)


def _plan(args: argparse.Namespace, planner, prompt: str) -> Plan:
    return plan(prompt, planner, seed=args.seed, check=not args.no_check)


def _print_notes(result: Plan, where: str = "") -> None:
    """The plan's repairs and unmet requirements on stderr, one a line, each prefixed by ``where`` ("line 3: ")."""
    for note in result.notes:
        print(f"{where}repaired: {note}", file=sys.stderr)
    for message in result.unmet:
        print(f"{where}unmet: {message}", file=sys.stderr)


def _run_one(args: argparse.Namespace, planner) -> int:
    try:
        result = _plan(args, planner, args.prompt)
    except (LayoutError, LLMServerError) as err:  # a prompt no layout repairs; an unreachable planner server
        print(f"error: {err}", file=sys.stderr)
        return 1
    _print_notes(result)
    layout = result.layout
    text = pretty_json(layout)
    if args.output is not None:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as err:
            print(f"error: cannot write {args.output}: {err.strerror}", file=sys.stderr)
            return 2
    else:
        print(text)
    if args.png is not None:
        try:
            save_layout_png(layout, args.png)
        except (OSError, ValueError) as err:
            print(f"error: cannot write the drawing {args.png}: {err}", file=sys.stderr)
            return 2
    return 0


def _run_batch(args: argparse.Namespace, planner) -> int:
    try:
        lines = args.input.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        print(f"error: cannot read --input {args.input}: {err}", file=sys.stderr)
        return 2
    try:
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
        out = args.output.open("w", encoding="utf-8") if args.output is not None else sys.stdout
    except OSError as err:
        print(f"error: cannot write --output {args.output}: {err.strerror}", file=sys.stderr)
        return 2
    failed = planned = 0
    try:
        for number, line in enumerate(lines, start=1):
            prompt = line.strip()
            if not prompt:
                continue
            try:
                result = _plan(args, planner, prompt)
            except Exception as err:  # one bad prompt (or server hiccup) must not kill the batch
                failed += 1
                message = str(err) if isinstance(err, (ValueError, RuntimeError)) else f"{type(err).__name__}: {err}"
                print(f"line {number}: error: {message}", file=sys.stderr)
                out.write(json.dumps({"prompt": prompt, "error": message}) + "\n")
                out.flush()
                continue
            planned += 1
            _print_notes(result, where=f"line {number}: ")
            out.write(result.layout.to_json() + "\n")
            out.flush()
            if args.png is not None:
                try:
                    save_layout_png(result.layout, args.png / f"{number:04d}.png")
                except (OSError, ValueError) as err:
                    print(f"line {number}: cannot write its drawing: {err}", file=sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"planned {planned} prompt(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0
