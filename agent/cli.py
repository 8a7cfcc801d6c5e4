"""The `scenewright` command. Each stage registers its own subcommands; this file only wires them."""

from __future__ import annotations

import argparse
import os
import sys

from scenewright.agent import commands as agent_commands
from scenewright.agent import web as web_cli  # `serve`; gradio is imported only when the app is built
from scenewright.eval import cli as eval_cli
from scenewright.layout import cli as layout_cli
from scenewright.synth import cli as synth_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenewright",
        description="Text to an image whose objects are where, and as many as, the text says.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Every stage is part of the package: a stage that fails to import is our bug and shows its traceback,
    # rather than a command that silently vanishes from the list.
    for stage in (layout_cli, synth_cli, eval_cli, agent_commands, web_cli):
        stage.register(sub)
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
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
