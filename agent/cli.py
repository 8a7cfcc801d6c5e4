"""The `scenewright` command. Each stage registers its own subcommands; this file only wires them."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenewright",
        description="Text to an image whose objects are where, and as many as, the text says.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Imported here so that `scenewright --help` stays fast and a stage's heavy imports
    # (torch, diffusers) happen only when its command runs.
    from scenewright.layout import cli as layout_cli

    layout_cli.register(sub)
    try:
        from scenewright.synth import cli as synth_cli
    except ImportError:  # synthesis stage not present in this build
        synth_cli = None
    if synth_cli is not None:
        synth_cli.register(sub)
    try:
        from scenewright.eval import cli as eval_cli
    except ImportError:
        eval_cli = None
    if eval_cli is not None:
        eval_cli.register(sub)
    from scenewright.agent import commands as agent_commands

    agent_commands.register(sub)
    try:
        from scenewright.agent import web as web_cli  # `serve`; gradio is imported only when the app is built
    except ImportError:
        web_cli = None
    if web_cli is not None:
        web_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`scenewright plan ... | head`): not an error of ours. Point stdout at
        # devnull so that Python's exit-time flush does not print a second traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
