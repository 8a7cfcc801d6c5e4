"""scenewright's agent: text -> plan -> check -> synthesize -> detect -> score -> retry (see :mod:`scenewright.agent.loop`).

    from scenewright.agent import run
    result = run("two red circles to the left of a blue square", model="./my-sd", attempts=4)
    result.image, result.layout, result.scores, result.attempts, result.save("out/")

``run``'s keyword options are :class:`scenewright.agent.config.AgentSettings` fields; the result is a
:class:`scenewright.agent.loop.RunResult`. Imports are lazy, so `scenewright --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenewright.agent.config import AgentSettings, load_settings
    from scenewright.agent.loop import Attempt, RunResult, run

__all__ = ["AgentSettings", "Attempt", "RunResult", "load_settings", "run"]


def __getattr__(name: str):
    if name in ("run", "Attempt", "RunResult"):
        from scenewright.agent import loop

        return getattr(loop, name)
    if name in ("AgentSettings", "load_settings"):
        from scenewright.agent import config

        return getattr(config, name)
    raise AttributeError(f"module 'scenewright.agent' has no attribute {name!r}")
