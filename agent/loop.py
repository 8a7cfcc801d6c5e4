"""The agent loop: text -> plan -> check -> synthesize -> detect -> score -> retry, keeping every attempt.

Read :func:`run` top to bottom. The prompt is planned once into a :class:`~scenewright.layout.plan.Plan` (parsed
once; re-plans reuse its spec). Each attempt draws the plan's layout with the current seed and guidance, detects
what the image shows (:mod:`scenewright.eval.detect`) and verifies it against the plan
(:func:`scenewright.eval.verify.verify`). An attempt passes when every count and relation of the prompt holds in the
image and the planned boxes are drawn with mean IoU >= ``min_mean_iou`` (:attr:`~scenewright.eval.verify.Verdict.passed`). Until one passes, and within
``attempts``, the next attempt applies the next remedy of :data:`REMEDIES`, in turn:

1. ``"new seed"`` -- the same layout and guidance from other initial noise;
2. ``"compose"`` -- each object drawn alone, found by the detector and composed into its box for the
   first steps (LMD's latent composition, :mod:`scenewright.synth.composition`; skipped when already on, e.g. with
   the ``compose`` setting), each object's phrase blended into its box throughout
   (:mod:`scenewright.synth.spatial_temporal`, ``compose_spatial_temporal``) so that the caption's later steps keep
   each object's own color;
3. ``"stronger guidance"`` -- ``scale_factor`` times ``guidance_boost`` and ``extra_methods`` added
   (skipped when no guidance method would be active);
4. ``"re-plan"`` -- the planner plans again with the next planner seed; planners that take feedback
   (llm, local) are told, in words, what the last image got wrong.

Remedies accumulate (a re-plan keeps the stronger guidance). An attempt that raises (out of memory,
a bad option, a planner server down) is recorded with its error and the loop goes on. The result
holds every attempt; its best is the passing one, else the highest :func:`overall_score`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from scenewright.agent.config import AgentSettings, load_settings
from scenewright.eval.attempt import AttemptError, Verifier, attempt
from scenewright.eval.detect import Detector, get_detector
from scenewright.eval.detection import Detection
from scenewright.eval.overlay import draw_overlay
from scenewright.eval.verify import SCORE_KEYS, Verdict, verify
from scenewright.layout.plan import Plan, fit_to_model, plan
from scenewright.layout.planners import Planner, accepts_feedback, get_planner
from scenewright.layout.schema import Layout, LayoutError
from scenewright.synth.recipe import Recipe

#: The remedies tried after a failed attempt, in this order, cycling while the budget lasts.
REMEDIES = ("new seed", "compose", "stronger guidance", "re-plan")

#: ``progress(stage, attempt, step, total)``: stage is "load", "plan", "synthesize", "detect", "score" or
#: "done"; attempt counts from 1 (0 while loading); step/total are the denoising step during "synthesize".
ProgressCallback = Callable[[str, int, int | None, int | None], None]


class AgentError(RuntimeError):
    """The loop could not start (e.g. the prompt plans to no objects); the message says what to change."""


@dataclass
class Attempt:
    """One pass through plan -> synthesize -> detect -> score, and what came of it."""

    index: int  # 1-based
    remedy: str  # "first" or one of REMEDIES
    seed: int
    planner_seed: int
    methods: list[str]
    options: dict[str, Any]  # the method/engine options given to Synthesizer.generate
    plan: Plan  # the prompt's spec and the layout drawn
    image: Any = None  # PIL image; None when synthesis failed
    detections: list[Detection] = field(default_factory=list)
    scores: dict[str, float | None] | None = None
    passed: bool = False
    failures: list[str] = field(default_factory=list)  # what the image gets wrong, in words
    error: str | None = None  # the exception that ended this attempt, if any
    notes: list[str] = field(default_factory=list)  # repairs of the plan, skipped remedies
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    guidance_scale: float | None = None  # the CFG scale drawn with (the model's default unless set)
    composed: bool = False  # objects drawn alone and composed into their boxes (synth.composition)
    verdict: Verdict | None = None  # every requirement, judged (None until verified)

    @property
    def layout(self) -> Layout:
        return self.plan.layout

    @property
    def score(self) -> float | None:
        return overall_score(self.scores) if self.scores is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no pixels) for report.json."""
        return {
            "index": self.index,
            "remedy": self.remedy,
            "seed": self.seed,
            "planner_seed": self.planner_seed,
            "methods": list(self.methods),
            "options": _jsonable(self.options),
            "guidance_scale": self.guidance_scale,
            "composed": self.composed,
            "passed": self.passed,
            "score": self.score,
            "scores": self.scores,
            "failures": list(self.failures),
            "error": self.error,
            "notes": [*self.notes, *(f"plan unmet: {message}" for message in self.plan.unmet)],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "layout": self.layout.to_dict(),
            "detections": [
                {"name": d.name, "color": d.color, "box": [round(v, 4) for v in d.box], "score": round(d.score, 4)}
                for d in self.detections
            ],
        }


@dataclass
class RunResult:
    """Every attempt of one :func:`run`, and the best of them (``best`` is None only if all failed to draw)."""

    prompt: str
    attempts: list[Attempt]
    settings: AgentSettings

    @property
    def best(self) -> Attempt | None:
        drawn = [a for a in self.attempts if a.image is not None]
        if not drawn:
            return None
        # A pass beats any score; among equals the earlier attempt wins (max keeps the first maximum).
        return max(drawn, key=lambda a: (a.passed, a.score if a.score is not None else -1.0))

    @property
    def passed(self) -> bool:
        return self.best is not None and self.best.passed

    @property
    def image(self):
        return self.best.image if self.best is not None else None

    @property
    def layout(self) -> Layout:
        return (self.best or self.attempts[-1]).layout

    @property
    def scores(self) -> dict[str, float | None] | None:
        return self.best.scores if self.best is not None else None

    @property
    def detections(self) -> list[Detection]:
        return self.best.detections if self.best is not None else []

    def overlay(self, size: int = 512):
        """The best image with its planned (green) and detected (red) boxes (:func:`scenewright.eval.overlay.draw_overlay`)."""
        if self.best is None:
            raise AgentError("no attempt produced an image, so there is nothing to overlay; see the attempts' errors")
        return draw_overlay(self.best.image, self.best.layout, self.best.detections, size=size)

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: settings (secrets redacted), the best attempt, and every attempt."""
        best = self.best
        return {
            "prompt": self.prompt,
            "passed": self.passed,
            "best_attempt": best.index if best is not None else None,
            "scores": self.scores,
            "score": best.score if best is not None else None,
            "layout": self.layout.to_dict(),
            "unmet": list((best or self.attempts[-1]).plan.unmet),  # what that layout still breaks of the prompt
            "settings": self.settings.redacted(),
            "attempts": [a.to_dict() for a in self.attempts],
        }

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write image.png, layout.json, overlay.png and report.json (images only when one was drawn)."""
        import json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"layout": out / "layout.json", "report": out / "report.json"}
        paths["layout"].write_text(self.layout.to_json(indent=2) + "\n", encoding="utf-8")
        if self.best is not None:
            paths["image"] = out / "image.png"
            self.best.image.save(paths["image"])
            paths["overlay"] = out / "overlay.png"
            self.overlay().save(paths["overlay"])
        paths["report"].write_text(json.dumps(self.report(), indent=2) + "\n", encoding="utf-8")
        return paths


def overall_score(scores: Mapping[str, float | None]) -> float:
    """One number to rank attempts: the mean of the judged :data:`SCORE_KEYS` (None: nothing to judge, e.g. no relation)."""
    judged = [float(scores[key]) for key in SCORE_KEYS if scores[key] is not None]
    return float(sum(judged) / len(judged)) if judged else 1.0


def run(
    prompt: str,
    *,
    settings: AgentSettings | None = None,
    config_file: str | Path | None = None,
    synthesizer=None,
    planner: Planner | str | None = None,
    detector: Detector | str | None = None,
    verifier: Verifier | None = None,
    progress: ProgressCallback | None = None,
    start: Plan | None = None,
    **options: Any,
) -> RunResult:
    """Draw ``prompt`` until the image shows what it asks, within ``attempts``; every attempt is kept.

    ``options`` are :class:`~scenewright.agent.config.AgentSettings` fields (``planner``, ``model``, ``methods``,
    ``attempts``, ``steps``, ``seed``, ``options``, ...), over ``settings`` when given, else over the
    environment and ``config_file`` as on the command line. ``synthesizer`` (a
    :class:`scenewright.synth.Synthesizer`), ``planner`` (anything with ``.plan``) and ``detector``
    (``detector(image, names)``) replace the ones the settings name (a str names one, as the setting).
    ``verifier(plan, detections)`` returns a :class:`~scenewright.eval.verify.Verdict` (default: :func:`~scenewright.eval.verify.verify`
    with the settings' ``min_mean_iou``). ``progress`` is a :data:`ProgressCallback`. Raises :class:`~scenewright.synth.loading.ModelNotAvailableError` when the model
    cannot be loaded, :class:`~scenewright.layout.schema.LayoutError` / :class:`AgentError` when the prompt
    cannot be planned; a failure inside an attempt is recorded in it instead. ``start`` is a plan to draw first
    as it is (the web editor's edited boxes: not re-planned, not fitted); a re-plan remedy plans ``prompt`` anew.
    """
    # `planner="llm"` / `detector="shapes"` name the settings' choice; an object is used as it is.
    if isinstance(planner, str):
        options["planner"], planner = planner, None
    if isinstance(detector, str):
        options["detector"], detector = detector, None
    if settings is None:
        settings = load_settings(options, config_file)
    elif options:
        settings = load_settings({**_given_fields(settings), **options})
    report = progress or (lambda stage, attempt, step, total: None)
    if verifier is None:
        verifier = partial(verify, min_mean_iou=settings.min_mean_iou)
    if not isinstance(prompt, str) or not prompt.strip():
        raise LayoutError("`prompt` is empty; give the text the image should show")
    prompt = prompt.strip()

    # 1. The first plan, checked and repaired; an unplannable prompt ends the run before the model loads
    if planner is None:
        planner = get_planner(settings.planner, **settings.planner_options())
    started = time.perf_counter()
    report("plan", 1, None, None)
    planner_seed = 0
    current = start if start is not None else plan(prompt, planner, seed=planner_seed)
    if not current.layout.objects:
        raise AgentError(
            f"the {getattr(planner, 'name', 'given')} planner found no objects in {prompt!r} to place and verify; "
            "name the objects, e.g. 'two red circles to the left of a blue square'"
        )
    plan_seconds = time.perf_counter() - started

    # 2. The other stages' tools: detector and synthesizer
    if detector is None:
        detector = get_detector(settings.detector)
    if synthesizer is None:
        report("load", 0, None, None)
        synthesizer = _load_synthesizer(settings)
    # The plan's boxes fitted to the object sizes the model draws, where it declares them (scenewright.json)
    defaults = getattr(synthesizer, "defaults", None)  # a stand-in synthesizer may declare nothing
    fit = defaults.layout_fit() if defaults is not None else {}
    if fit and start is None:
        current = fit_to_model(current, object_sides=fit["object_sides"], object_gap=fit["object_gap"], size_sides=fit.get("size_sides"))
    recipe = Recipe(tuple(settings.methods), settings.options, seed=settings.seed, steps=settings.steps,
                    guidance_scale=settings.guidance_scale)  # fmt: skip
    if settings.compose:
        recipe = composed(recipe, settings.compose_spatial_temporal)

    # 3. Attempts: draw, verify, and apply the next remedy until one passes or the budget ends
    attempts: list[Attempt] = []
    remedy = "first"
    notes = [f"plan repaired: {change}" for change in current.notes]
    for index in range(1, settings.attempts + 1):
        if index > 1:
            remedy, notes = _next_remedy(attempts, settings, list(recipe.methods), recipe.compose)
            if remedy == "new seed":
                recipe = new_seed(recipe)
            elif remedy == "compose":
                recipe = composed(recipe, settings.compose_spatial_temporal)
            elif remedy == "stronger guidance":
                try:
                    recipe = boosted_scale(recipe, settings.guidance_boost)
                except (TypeError, ValueError) as err:  # options the engine rejects: it will say so when drawing
                    notes.append(f"scale_factor not boosted: {err}")
                recipe = with_extra_methods(recipe, settings.extra_methods)
            elif remedy == "re-plan":
                planner_seed += 1
                report("plan", index, None, None)
                started = time.perf_counter()
                try:
                    current, notes = replanned(current, planner, planner_seed, attempts[-1], notes, fit)
                except Exception as err:  # the planner's server may be down: keep the last layout, go on
                    notes.append(f"re-plan failed ({type(err).__name__}: {err}); kept the previous layout")
                plan_seconds = time.perf_counter() - started
        record = Attempt(
            index=index, remedy=remedy, seed=recipe.seed, planner_seed=planner_seed, methods=list(recipe.methods),
            options=dict(recipe.options), plan=current, notes=list(notes), timings={"plan": plan_seconds},
            composed=recipe.compose,
        )  # fmt: skip
        plan_seconds = 0.0
        _draw_and_verify(record, recipe, synthesizer, detector, verifier, report)
        attempts.append(record)
        if record.passed:
            break
    report("done", len(attempts), None, None)
    return RunResult(prompt=prompt, attempts=attempts, settings=settings)


def _draw_and_verify(record: Attempt, recipe: Recipe, synthesizer, detector, verifier: Verifier, report) -> None:
    """Draw, detect and verify one attempt (:func:`scenewright.eval.attempt.attempt`) into ``record``; an exception
    is recorded, not raised."""
    try:
        result = attempt(synthesizer, record.plan, recipe, detector, verifier=verifier,
                         progress=lambda stage, step, total: report(stage, record.index, step, total))  # fmt: skip
    except AttemptError as err:  # recorded: the next attempt may well succeed (other seed, layout, guidance)
        record.error, result = str(err), err.result
    record.guidance_scale = result.recipe.guidance_scale
    record.image, record.detections, record.timings = result.image, result.detections, {**record.timings, **result.timings}
    if result.appended_phrases:
        record.notes.append(f"appended to the prompt (not in it): {', '.join(result.appended_phrases)}")
    if record.error is not None or result.verdict is None:
        return
    verdict = result.verdict
    missing = [key for key in SCORE_KEYS if key not in verdict.scores]
    if missing:  # a stand-in verifier's verdict: the ranking (overall_score) needs every figure
        record.error = f"score failed: ValueError: the scorer returned no {', '.join(missing)}; a verdict's scores hold {', '.join(SCORE_KEYS)}"
        return
    record.verdict = verdict
    record.scores = {key: (None if value is None else float(value)) for key, value in verdict.scores.items()}
    record.passed = verdict.passed
    record.failures = verdict.failures


# ------------------------------------------------------------------ remedies: Recipe -> Recipe, Plan -> Plan
def new_seed(recipe: Recipe) -> Recipe:
    """The same plan and guidance from other initial noise."""
    return replace(recipe, seed=recipe.seed + 1)


def composed(recipe: Recipe, spatial_temporal: float) -> Recipe:
    """Each object drawn alone and composed into its box for the first steps (LMD, Lian et al. 2024), its phrase
    blended into its box throughout with local weight ``spatial_temporal`` (Wu et al. 2023; 0: off) so that the
    caption's later steps keep each object's own color."""
    return replace(recipe, compose=True, spatial_temporal=spatial_temporal if spatial_temporal > 0 else None, name="")


def boosted_scale(recipe: Recipe, boost: float) -> Recipe:
    """The ``scale_factor`` the engine would have used (:meth:`Recipe.engine_options`), times ``boost``."""
    return recipe.with_options(scale_factor=float(recipe.engine_options()["scale_factor"]) * boost)


def with_extra_methods(recipe: Recipe, extra_methods: Sequence[str]) -> Recipe:
    """``extra_methods`` added to the recipe's guidance methods (plain SD's "none" dropped)."""
    methods = [m for m in recipe.methods if m != "none"] + [m for m in extra_methods if m not in recipe.methods]
    return replace(recipe, methods=tuple(methods) or ("none",), name="")


def _next_remedy(attempts: list[Attempt], settings: AgentSettings, methods: list[str], composed: bool) -> tuple[str, list[str]]:
    """The remedy after ``attempts``: the next of :data:`REMEDIES`, skipping those that cannot apply."""
    last = attempts[-1].remedy
    start = 0 if last == "first" else REMEDIES.index(last) + 1
    notes: list[str] = []
    for offset in range(len(REMEDIES)):
        remedy = REMEDIES[(start + offset) % len(REMEDIES)]
        if remedy == "compose" and composed:
            continue  # already composing: nothing to add
        if remedy == "stronger guidance" and not [m for m in [*methods, *settings.extra_methods] if m != "none"]:
            notes.append("stronger guidance skipped: no guidance method is active (methods: none, no extra_methods)")
            continue
        return remedy, notes
    raise AssertionError("unreachable: 'new seed' always applies")  # pragma: no cover


def replanned(
    previous: Plan, planner: Planner, planner_seed: int, last: Attempt, notes: list[str], fit: dict[str, Any]
) -> tuple[Plan, list[str]]:
    """Plan again with the same spec (fitted to the model's object sizes, ``fit``); a planner that takes feedback
    hears what the last image got wrong."""
    feedback = None
    if accepts_feedback(planner):
        problems = last.failures or ([last.error] if last.error else [])
        feedback = "; ".join(problems) or None
    replanned = plan(previous.prompt, planner, seed=planner_seed, feedback=feedback, spec=previous.spec, **fit)
    said = f"with feedback: {feedback}" if feedback else "(this planner takes no feedback)"
    return replanned, [*notes, f"re-planned with planner seed {planner_seed} {said}", *(f"plan repaired: {c}" for c in replanned.notes)]


def _load_synthesizer(settings: AgentSettings):
    """``Synthesizer.from_pretrained`` on the settings' device and dtype (raises ModelNotAvailableError)."""
    from scenewright.synth import Synthesizer
    from scenewright.synth.loading import device_and_dtype  # `generate`'s defaults: cuda when there, fp16 on cuda

    device, dtype = device_and_dtype(settings.device, settings.dtype)
    return Synthesizer.from_pretrained(settings.model, torch_dtype=dtype, device=device)


def _given_fields(settings: AgentSettings) -> dict[str, Any]:
    """``settings`` as keyword arguments that rebuild it (secrets kept as they are)."""
    return {name: getattr(settings, name) for name in AgentSettings.model_fields}


def _jsonable(value: Any) -> Any:
    """Options as JSON values (tuples -> lists, numpy scalars -> numbers, the rest as text)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return repr(value)


__all__ = ["REMEDIES", "SCORE_KEYS", "AgentError", "Attempt", "ProgressCallback", "RunResult", "boosted_scale", "composed", "new_seed", "overall_score",
           "replanned", "run", "with_extra_methods"]
