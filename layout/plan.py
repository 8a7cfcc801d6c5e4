"""The planner stage's one result: a :class:`Plan` (prompt, what it asks, the checked layout, notes) that every
later stage reads instead of parsing the prompt again.

A plan says what it could not give: ``unmet`` holds every requirement of its own spec (count, size, relation)
that the final layout still breaks, in :func:`~scenewright.layout.relations.violations`' words. The offline
planner and the repairs keep what holds but cannot always reach it ("four huge bicycles at the top": four boxes of
36% do not fit a third of the canvas; "a tiny cat between two huge dogs"); ``scenewright plan`` prints them and
the agent's report.json keeps them.

:func:`plan` parses the prompt once (:func:`scenewright.layout.parse.parse_prompt`), hands that
:class:`~scenewright.layout.spec.PromptSpec` to the offline planner, the geometry checker and the size fit, and
returns it with the layout. A model planner (llm, local) answers with its own reading of the text: the plan's spec
then takes its objects, counts, attributes and negative kinds from that answer and the relations from the parse
(:func:`scenewright.layout.answer_spec.spec_from_answer`). Re-plans pass the first plan's ``spec`` back in, so a
whole agent run parses once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scenewright.layout.answer_spec import spec_from_answer
from scenewright.layout.geometry import check_layout
from scenewright.layout.offline import OfflinePlanner, plan_spec
from scenewright.layout.parse import parse_prompt
from scenewright.layout.planners import PLANNER_NAMES, Planner, accepts_feedback, get_planner
from scenewright.layout.relations import violations
from scenewright.layout.schema import Layout, LayoutError
from scenewright.layout.size_fit import fit_object_sizes
from scenewright.layout.spec import PromptSpec


@dataclass(frozen=True)
class Plan:
    """What the text asks (``spec``), where each object goes (``layout``), and what was changed on the way."""

    prompt: str
    spec: PromptSpec  # counts, attributes, relations, sizes: what every later stage checks against
    layout: Layout  # the checked (and, where the model declares sizes, fitted) boxes
    notes: tuple[str, ...] = ()  # the geometry checker's and the size fit's repairs, in words
    unmet: tuple[str, ...] = ()  # every requirement of ``spec`` that ``layout`` still breaks, in words


def plan_for_layout(layout: Layout, spec: PromptSpec | None = None) -> Plan:
    """A :class:`Plan` around a layout made elsewhere (edited by hand, shipped by a benchmark); parses its prompt unless ``spec`` is given."""
    if spec is None:
        spec = parse_prompt(layout.prompt)
    return Plan(prompt=layout.prompt, spec=spec, layout=layout, unmet=tuple(violations(spec, layout)))


def plan(
    prompt: str,
    planner: Planner | str = "offline",
    *,
    seed: int = 0,
    check: bool = True,
    feedback: str | None = None,
    spec: PromptSpec | None = None,
    object_sides: tuple[float, float] | None = None,
    object_gap: float = 0.0,
    size_sides: dict[str, tuple[float, float]] | None = None,
    **check_options,
) -> Plan:
    """Plan ``prompt`` with ``planner`` (an instance or a name), then check and repair the layout against its spec.

    ``spec`` is the prompt already parsed (a re-plan passes its first plan's); else it is parsed here, once.
    ``feedback`` (what an image drawn from an earlier layout got wrong, in words) goes to planners whose ``plan``
    takes it (:func:`~scenewright.layout.planners.accepts_feedback`: the llm and local planners); giving it to one
    that does not is a TypeError. ``check_options`` go to :func:`scenewright.layout.geometry.check_layout`
    (``min_size``, ``max_overlap``, ...); ``check=False`` keeps the planner's boxes as they are. ``object_sides`` /
    ``object_gap`` / ``size_sides`` (what the synthesis model declares, :class:`scenewright.synth.loading.ModelDefaults`)
    then fit the checked boxes to the sizes the model draws (:func:`fit_to_model`). The plan's ``unmet`` lists every
    requirement of ``spec`` its final layout still breaks. Raises :class:`~scenewright.layout.schema.LayoutError`
    when the layout cannot be repaired.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise LayoutError("`prompt` is empty; give the text the image should show")
    if isinstance(planner, str):
        planner = get_planner(planner)
    if not callable(getattr(planner, "plan", None)):
        raise TypeError(f"`planner` must be a planner name ({', '.join(PLANNER_NAMES)}) or have a .plan method, got {planner!r}")
    if spec is None:
        spec = parse_prompt(prompt)
    if feedback is not None:
        if not accepts_feedback(planner):
            raise TypeError(f"the {getattr(planner, 'name', type(planner).__name__)} planner takes no `feedback`; re-plan it with another seed")
        layout = planner.plan(prompt, seed=seed, feedback=feedback)
    elif type(planner) is OfflinePlanner:  # the rule-based planner reads the spec itself: no second parse
        layout, _ = plan_spec(spec, seed=seed)
    else:
        layout = planner.plan(prompt, seed=seed)
    if getattr(planner, "own_reading", False):  # an LLM's plan is judged against what it read the text to ask
        spec = spec_from_answer(layout, spec)
    margin = check_options.get("margin", 0.0)
    if not check:
        return Plan(prompt=prompt, spec=spec, layout=layout, unmet=tuple(violations(spec, layout, margin=margin)))
    checked = check_layout(layout, spec, **check_options)
    notes = (*checked.changes, *(f"kept overlap: {note}" for note in checked.kept_overlaps))
    unmet = tuple(violations(spec, checked.layout, margin=margin))
    result = Plan(prompt=prompt, spec=spec, layout=checked.layout, notes=notes, unmet=unmet)
    if object_sides is None:
        return result
    return fit_to_model(result, object_sides=object_sides, object_gap=object_gap, size_sides=size_sides, margin=margin)


def fit_to_model(
    plan: Plan,
    *,
    object_sides: tuple[float, float],
    object_gap: float = 0.0,
    size_sides: dict[str, tuple[float, float]] | None = None,
    margin: float = 0.0,
) -> Plan:
    """``plan`` with its boxes fitted to the object sizes a model draws (:func:`scenewright.layout.size_fit.fit_object_sizes`)."""
    fitted = fit_object_sizes(plan.layout, plan.spec, sides=object_sides, min_gap=object_gap, margin=margin, size_sides=size_sides)
    # The fit keeps every requirement that held, but may not reach one that did not: judge the fitted boxes again.
    unmet = tuple(violations(plan.spec, fitted.layout, margin=margin))
    return replace(plan, layout=fitted.layout, notes=(*plan.notes, *fitted.changes), unmet=unmet)


def plan_layout(prompt: str, planner: Planner | str = "offline", **options) -> tuple[Layout, list[str]]:
    """The bare ``(layout, notes)`` of :func:`plan` (same arguments), for callers that need no spec.

    ``notes`` are the repairs, then one ``"unmet: ..."`` line per requirement the layout still breaks.
    """
    result = plan(prompt, planner, **options)
    return result.layout, [*result.notes, *(f"unmet: {message}" for message in result.unmet)]


__all__ = ["Plan", "fit_to_model", "plan", "plan_for_layout", "plan_layout"]
