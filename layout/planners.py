"""The planner interface: text -> :class:`~scenewright.layout.schema.Layout`, and the registry of planners.

Three planners share it:

- ``"offline"`` -- :class:`scenewright.layout.offline.OfflinePlanner`, rule-based, no model;
- ``"llm"`` -- :class:`scenewright.layout.llm.LLMPlanner`, any OpenAI-compatible chat server;
- ``"local"`` -- :class:`scenewright.layout.local.LocalPlanner`, an in-process transformers model.

:func:`plan_layout` runs a planner, then the geometry checker against what the prompt asks
(:func:`scenewright.layout.parse.parse_prompt`), so every stage downstream gets a checked layout.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scenewright.layout.geometry import check_layout
from scenewright.layout.parse import parse_prompt
from scenewright.layout.schema import Layout
from scenewright.layout.size_fit import fit_object_sizes

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
            raise ValueError("the local planner needs `model`: a folder holding a transformers causal LM (or a hub id)")
        model = options.pop("model")
        return LocalPlanner.from_pretrained(model, **options)
    raise ValueError(f"unknown planner {name!r}; choose one of {', '.join(PLANNER_NAMES)}")


def accepts_feedback(planner: Planner) -> bool:
    """Whether ``planner.plan`` takes ``feedback=`` (what an earlier image got wrong) to re-plan with."""
    import inspect

    try:
        parameters = inspect.signature(planner.plan).parameters
    except (TypeError, ValueError):
        return False
    return "feedback" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def plan_layout(
    prompt: str,
    planner: Planner | str = "offline",
    *,
    seed: int = 0,
    check: bool = True,
    feedback: str | None = None,
    object_sides: tuple[float, float] | None = None,
    object_gap: float = 0.0,
    size_sides: dict[str, tuple[float, float]] | None = None,
    **check_options,
) -> tuple[Layout, list[str]]:
    """Plan ``prompt`` with ``planner`` (an instance or a name), then check and repair the layout.

    ``feedback`` (what an image drawn from an earlier layout got wrong, in words) goes to planners
    whose ``plan`` takes it (:func:`accepts_feedback`: the llm and local planners); giving it to
    one that does not is a TypeError.

    Returns ``(layout, changes)``; ``changes`` lists the geometry checker's repairs (empty with
    ``check=False``). ``check_options`` go to :func:`scenewright.layout.geometry.check_layout` (``min_size``,
    ``max_overlap``, ...). ``object_sides`` / ``object_gap`` / ``size_sides`` (what the synthesis model declares,
    :class:`scenewright.synth.loading.ModelDefaults`) then fit the checked boxes to the sizes the model draws
    (:func:`scenewright.layout.size_fit.fit_object_sizes`). Raises :class:`~scenewright.layout.schema.LayoutError` when the
    layout cannot be repaired.
    """
    if isinstance(planner, str):
        planner = get_planner(planner)
    if not callable(getattr(planner, "plan", None)):
        raise TypeError(f"`planner` must be a planner name ({', '.join(PLANNER_NAMES)}) or have a .plan method, got {planner!r}")
    if feedback is not None:
        if not accepts_feedback(planner):
            raise TypeError(f"the {getattr(planner, 'name', type(planner).__name__)} planner takes no `feedback`; re-plan it with another seed")
        layout = planner.plan(prompt, seed=seed, feedback=feedback)
    else:
        layout = planner.plan(prompt, seed=seed)
    if not check:
        return layout, []
    spec = parse_prompt(prompt)
    result = check_layout(layout, spec, **check_options)
    changes = [*result.changes, *(f"kept overlap: {note}" for note in result.kept_overlaps)]
    if object_sides is None:
        return result.layout, changes
    fitted = fit_object_sizes(result.layout, spec, sides=object_sides, min_gap=object_gap,
                              margin=check_options.get("margin", 0.0), size_sides=size_sides)  # fmt: skip
    return fitted.layout, [*changes, *fitted.changes]


__all__ = ["PLANNER_NAMES", "Planner", "accepts_feedback", "get_planner", "plan_layout"]
