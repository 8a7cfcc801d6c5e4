"""The planner interface: text -> :class:`~scenewright.layout.schema.Layout`, and the registry of planners.

Three planners share it:

- ``"offline"`` -- :class:`scenewright.layout.offline.OfflinePlanner`, rule-based, no model;
- ``"llm"`` -- :class:`scenewright.layout.llm.LLMPlanner`, any OpenAI-compatible chat server;
- ``"local"`` -- :class:`scenewright.layout.local.LocalPlanner`, an in-process transformers model.

:func:`scenewright.layout.plan.plan` runs a planner, then the geometry checker against what the prompt asks,
and returns a :class:`~scenewright.layout.plan.Plan` that every stage downstream reads.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scenewright.errors import InputError
from scenewright.layout.schema import Layout

#: Registered planner names, in the order the CLI lists them.
PLANNER_NAMES = ("offline", "llm", "local")


@runtime_checkable
class Planner(Protocol):
    """Anything that turns a prompt into a layout; ``seed`` selects a sample (deterministic for a given seed)."""

    name: str

    def plan(self, prompt: str, *, seed: int = 0) -> Layout: ...


def get_planner(name: str = "offline", **options) -> Planner:
    """The planner called ``name`` (one of :data:`PLANNER_NAMES`), built with ``options``.

    ``"llm"`` takes :class:`~scenewright.layout.llm.LLMPlanner`'s options (``model``, ``base_url``, ``temperature``, ...);
    ``"local"`` takes ``model`` (a local folder or hub id) and :meth:`~scenewright.layout.local.LocalPlanner.from_pretrained`'s
    options; ``"offline"`` takes none.
    """
    if name == "offline":
        from scenewright.layout.offline import OfflinePlanner

        if options:
            raise TypeError(f"the offline planner takes no options, got {', '.join(sorted(options))}")
        return OfflinePlanner()
    if name == "llm":
        from scenewright.layout.llm import LLMPlanner

        return LLMPlanner(**options)
    if name == "local":
        from scenewright.layout.local import LocalPlanner

        if not options.get("model"):
            raise InputError("the local planner needs `model`: a folder holding a transformers causal LM (or a hub id)")
        model = options.pop("model")
        return LocalPlanner.from_pretrained(model, **options)
    raise InputError(f"unknown planner {name!r}; choose one of {', '.join(PLANNER_NAMES)}")


def accepts_feedback(planner: Planner) -> bool:
    """Whether ``planner.plan`` takes ``feedback=`` (what an earlier image got wrong) to re-plan with."""
    import inspect

    try:
        parameters = inspect.signature(planner.plan).parameters
    except (TypeError, ValueError):
        return False
    return "feedback" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


__all__ = ["PLANNER_NAMES", "Planner", "accepts_feedback", "get_planner"]
