"""scenewright: text -> an image whose objects are where, and as many as, the text says.

The repository root is the ``scenewright`` package: its folders install as ``scenewright.agent``,
``scenewright.layout``, ``scenewright.synth``, ``scenewright.prompts`` and ``scenewright.eval``
(pyproject's ``package-dir``), so nothing of ours lands at the top of site-packages.

    from scenewright import Layout, Synthesizer, plan, run
    result = run("two red circles to the left of a blue square")   # plan -> draw -> verify -> retry
    layout = plan("three cats on a sofa").layout                    # the layout stage alone: a Plan

Names load on first use, so ``import scenewright`` (and ``scenewright --help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenewright.agent.loop import run
    from scenewright.layout.plan import plan
    from scenewright.layout.schema import Layout
    from scenewright.synth.pipeline import Synthesizer

# public name -> (the module that defines it, its name there)
_EXPORTS = {
    "Layout": ("scenewright.layout.schema", "Layout"),
    "Synthesizer": ("scenewright.synth.pipeline", "Synthesizer"),
    "plan": ("scenewright.layout.plan", "plan"),
    "run": ("scenewright.agent.loop", "run"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'scenewright' has no attribute {name!r}")
