"""One attempt: draw a :class:`~scenewright.layout.plan.Plan` with a :class:`~scenewright.synth.recipe.Recipe`,
detect what the image shows, and verify it (:func:`scenewright.eval.verify.verify`).

The agent loop (``scenewright run``), the bench and the web editor draw through :func:`attempt`, so the path
draw -> detect -> verify exists once. Without a detector it only draws (``scenewright generate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scenewright.eval.detect import Detector, detector_segmenter
from scenewright.eval.detection import Detection
from scenewright.eval.verify import Verdict, verify
from scenewright.layout.plan import Plan
from scenewright.synth.composition import CompositionOptions
from scenewright.synth.guidance import StepRecord
from scenewright.synth.recipe import Recipe

#: ``progress(stage, step, total)``: stage is "synthesize", "detect" or "score" (verify); step/total count denoising steps.
AttemptProgress = Callable[[str, int | None, int | None], None]
#: ``verifier(plan, detections)``: :func:`scenewright.eval.verify.verify` (with its thresholds), or a stand-in.
Verifier = Callable[[Plan, Sequence[Detection]], Verdict]


class AttemptError(RuntimeError):
    """A stage of an attempt raised; the message names the stage, ``__cause__`` is the original error."""

    def __init__(self, stage: str, err: Exception, result: AttemptResult):
        super().__init__(f"{stage} failed: {type(err).__name__}: {err}")
        self.stage = stage
        self.result = result  # what was done before the stage failed (e.g. the image, when detection failed)


@dataclass
class AttemptResult:
    """What one attempt drew, found and concluded."""

    plan: Plan
    recipe: Recipe  # as drawn: guidance_scale resolved to the model's default where the recipe left it open
    image: Any = None  # PIL image (the first of ``images``)
    images: list = field(default_factory=list)  # every image drawn (``batch_size`` of them; detection reads the first)
    encoded_prompt: str | None = None  # the prompt the text encoder saw (phrases appended where missing)
    appended_phrases: list[str] = field(default_factory=list)  # layout phrases the prompt did not contain
    detections: list[Detection] = field(default_factory=list)
    verdict: Verdict | None = None  # None without a detector
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed


def attempt(
    synthesizer,
    plan: Plan,
    recipe: Recipe,
    detector: Detector | None = None,
    *,
    verifier: Verifier = verify,
    composition: CompositionOptions | bool | None = None,
    progress: AttemptProgress | None = None,
    on_step: Callable[[int, int, StepRecord | None], None] | None = None,
    **generate_options: Any,
) -> AttemptResult:
    """Draw ``plan`` with ``recipe`` on ``synthesizer`` (a :class:`scenewright.synth.Synthesizer`), detect, verify.

    A composed recipe segments each object drawn alone with ``detector`` (LMD uses SAM; the verifier's own
    detector here) unless ``composition`` is given. ``generate_options`` go to ``generate`` over the recipe's own
    (``num_inference_steps``, ``guidance_scale``, ``height``, ``batch_size``...); ``on_step(step, total, record)`` is
    ``generate``'s callback (``record``: the guided step's losses). Raises :class:`AttemptError` naming the stage.
    """
    report = progress or (lambda stage, step, total: None)
    if recipe.guidance_scale is None:  # the model's declared default (synth.loading.ModelDefaults), recorded
        recipe = replace(recipe, guidance_scale=getattr(getattr(synthesizer, "defaults", None), "guidance_scale", None))
    if composition is None and recipe.compose and detector is not None:
        composition = CompositionOptions(segmenter=detector_segmenter(detector))
    result = AttemptResult(plan=plan, recipe=recipe)
    stage = "synthesize"
    try:
        started = time.perf_counter()
        report(stage, 0, recipe.steps)

        def each_step(step: int, total: int, record: StepRecord | None) -> None:
            report("synthesize", step + 1, total)
            if on_step is not None:
                on_step(step, total, record)

        output = synthesizer.generate(
            plan.layout,
            **{**recipe.generate_kwargs(composition), **generate_options},
            output_type="pil",
            callback=each_step,
        )
        result.images = list(output.images)
        result.image = result.images[0]
        result.encoded_prompt = output.prompts[0] if output.prompts else None
        result.appended_phrases = list(output.appended_phrases[0]) if output.appended_phrases else []
        result.timings[stage] = time.perf_counter() - started
        if detector is None:
            return result

        stage = "detect"
        started = time.perf_counter()
        report(stage, None, None)
        result.detections = list(detector(result.image, list(dict.fromkeys(plan.layout.names))))
        result.timings[stage] = time.perf_counter() - started

        stage = "score"
        started = time.perf_counter()
        report(stage, None, None)
        result.verdict = verifier(plan, result.detections)
        result.timings[stage] = time.perf_counter() - started
    except Exception as err:  # re-raised with the stage named; the caller decides whether to go on
        raise AttemptError(stage, err, result) from err
    return result


__all__ = ["AttemptError", "AttemptProgress", "AttemptResult", "Verifier", "attempt"]
