"""The agent loop (agent.run) on a tiny Stable Diffusion saved to disk, with scripted detectors and scorers."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
from fake_openai import FakeOpenAIServer

from scenewright.agent import run
from scenewright.agent.loop import REMEDIES, overall_score
from scenewright.eval.detection import Detection
from scenewright.eval.verify import verify
from scenewright.layout.offline import OfflinePlanner
from scenewright.layout.plan import plan as make_plan
from scenewright.layout.plan import plan_layout

pytestmark = pytest.mark.usefixtures("no_ambient_config")

PROMPT = "two red circles to the left of a blue square"
# The tiny UNet attends at 16x16 only; one denoising step and no refinement keep guided attempts fast.
# Tests about the loop's bookkeeping draw unguided (TINY); those about guidance remedies draw GUIDED.
GUIDED = {"options": {"car_res": [16, 16], "sar_res": [16, 16], "max_refinement_steps": 0}, "steps": 1}
TINY = {"methods": "none", "steps": 1}
FAILING = {"count_acc": 0.5, "spatial_acc": 0.0, "box_iou50": 0.0, "mean_iou": 0.1}
PASSING = {"count_acc": 1.0, "spatial_acc": 1.0, "box_iou50": 1.0, "mean_iou": 0.9}


@pytest.fixture(scope="module")
def synthesizer(tmp_path_factory):
    from scenewright.synth import Synthesizer
    from scenewright.synth.testing import get_dummy_pipe

    folder = tmp_path_factory.mktemp("tiny-sd")
    get_dummy_pipe(seed=0).save_pretrained(folder)
    return Synthesizer.from_pretrained(str(folder))


class Recorder:
    """The real synthesizer, every generate call's arguments kept; ``fail_on`` call numbers raise instead."""

    def __init__(self, synthesizer, fail_on=()):
        self.synthesizer = synthesizer
        self.calls: list[dict] = []
        self.fail_on = set(fail_on)

    def generate(self, layout, **kwargs):
        self.calls.append({"layout": layout, **kwargs})
        if len(self.calls) in self.fail_on:
            raise RuntimeError("CUDA out of memory (scripted)")
        return self.synthesizer.generate(layout, **kwargs)


class Scripted:
    """A verifier whose figures come from a script, and a detector that finds nothing but records what it was asked."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.asked: list[list[str]] = []

    def verifier(self, plan, detections):
        scores = self.scores.pop(0) if len(self.scores) > 1 else self.scores[0]
        # The real requirements and their sentences (what the planner is told); the figures and the pass scripted.
        passed = scores["count_acc"] == 1.0 and scores["spatial_acc"] in (None, 1.0) and scores["mean_iou"] >= 0.3
        return replace(verify(plan, detections), scores=scores, passed=passed)

    def detector(self, image, names):
        self.asked.append(list(names))
        assert image.size == (64, 64)  # it is handed the drawn image
        return []


class FeedbackPlanner(OfflinePlanner):
    """The offline planner, taking (and recording) the agent's feedback as the llm/local planners do."""

    def __init__(self):
        self.feedback: list[str | None] = []

    def plan(self, prompt, *, seed=0, feedback=None):
        self.feedback.append(feedback)
        return super().plan(prompt, seed=seed)


def test_remedies_come_in_order_and_accumulate(synthesizer):
    from scenewright.synth.recipe import ENGINE_DEFAULTS

    recorder, script, planner = Recorder(synthesizer), Scripted([FAILING]), FeedbackPlanner()
    result = run(PROMPT, synthesizer=recorder, planner=planner, detector=script.detector, verifier=script.verifier,
                 attempts=5, seed=7, **GUIDED)  # fmt: skip
    assert [a.remedy for a in result.attempts] == ["first", *REMEDIES]
    assert [call["seed"] for call in recorder.calls] == [7, 8, 8, 8, 8]
    # 'compose' turns composition on for the rest, segmenting each object drawn alone with the agent's detector.
    assert [a.composed for a in result.attempts] == [False, False, True, True, True]
    assert [call["composition"] is not None for call in recorder.calls] == [False, False, True, True, True]
    assert recorder.calls[2]["composition"].segmenter is not None
    # ... and blends each object's phrase into its box (spatial-temporal control, weight 1 by default).
    assert [getattr(call["spatial_temporal"], "local_weight", None) for call in recorder.calls] == [None, None, 1.0, 1.0, 1.0]
    # 'stronger guidance' doubles the scale factor the engine would have used, and re-planning keeps it.
    _, engine = synthesizer._resolve_methods(["car", "sar"], dict(GUIDED["options"]))
    assert engine["scale_factor"] == ENGINE_DEFAULTS["scale_factor"]
    scales = [call.get("scale_factor") for call in recorder.calls]
    assert scales == [None, None, None, 2 * engine["scale_factor"], 2 * engine["scale_factor"]]
    # Re-planning: the planner's next seed, told what the image got wrong (the scripted scores fail counts).
    assert [a.planner_seed for a in result.attempts] == [0, 0, 0, 0, 1]
    assert planner.feedback[0] is None and len(planner.feedback) == 2
    assert "expected 2 x 'a red circle'" in planner.feedback[1]
    assert planner.feedback[1] == "; ".join(result.attempts[3].failures)
    verified = [names for names in script.asked if len(names) == 2]  # the rest: composition segmenting one object
    assert verified == [["circle", "square"]] * 5 and ["circle"] in script.asked
    assert all(call["num_inference_steps"] == 1 and call["methods"] == ["car", "sar"] for call in recorder.calls)
    assert not result.passed and len(result.attempts) == 5


def test_composed_attempts_blend_phrases_unless_turned_off(synthesizer):
    for weight, expected in ((3.0, 3.0), (0.0, None)):
        recorder, script = Recorder(synthesizer), Scripted([FAILING])
        run(PROMPT, synthesizer=recorder, detector=script.detector, verifier=script.verifier, attempts=1, compose=True,
            compose_spatial_temporal=weight, **GUIDED)  # fmt: skip
        (call,) = recorder.calls
        assert call["composition"] is not None and getattr(call["spatial_temporal"], "local_weight", None) == expected
    with pytest.raises(ValueError, match="--compose-spatial-temporal: Input should be greater than or equal to 0"):
        run(PROMPT, synthesizer=synthesizer, attempts=1, compose_spatial_temporal=-1, **GUIDED)


def test_plans_are_fitted_to_the_object_sizes_the_model_declares(synthesizer):
    from dataclasses import replace

    recorder, script = Recorder(synthesizer), Scripted([FAILING])
    recorder.defaults = replace(synthesizer.defaults, object_sides=(0.1, 0.2), object_gap=0.05)
    result = run("a purple circle", synthesizer=recorder, planner=FeedbackPlanner(), detector=script.detector,
                 verifier=script.verifier, attempts=4, **TINY)  # fmt: skip
    planned = plan_layout("a purple circle", OfflinePlanner())[0].boxes[0]
    assert planned[2] - planned[0] > 0.5  # the planner gives a lone object most of the canvas
    assert result.attempts[-1].remedy == "re-plan"
    for attempt, call in zip(result.attempts, recorder.calls):
        (box,) = attempt.layout.boxes
        assert call["layout"] == attempt.layout  # what was drawn is the fitted plan
        assert box[2] - box[0] == pytest.approx(0.2) and box[3] - box[1] == pytest.approx(0.2)
    for attempt in (result.attempts[0], result.attempts[-1]):  # the plan and the re-plan say what was fitted
        assert any("scaled to the model's object sizes" in note for note in attempt.notes)
    # A model that declares nothing (Stable Diffusion) draws the plan as it is.
    plain = run("a purple circle", synthesizer=Recorder(synthesizer), detector=script.detector,
                verifier=script.verifier, attempts=1, **TINY)  # fmt: skip
    assert plain.attempts[0].layout.boxes[0] == pytest.approx(planned)


def test_stronger_guidance_adds_extra_methods_and_is_skipped_without_any(synthesizer):
    recorder, script = Recorder(synthesizer), Scripted([FAILING])
    options = {**GUIDED["options"], "attn_res": [16, 16]}
    result = run(PROMPT, synthesizer=recorder, detector=script.detector, verifier=script.verifier, attempts=3,
                 steps=1, options=options, methods="attend_excite", extra_methods="car", compose=True)  # fmt: skip
    assert [call["methods"] for call in recorder.calls] == [["attend_excite"], ["attend_excite"], ["attend_excite", "car"]]

    recorder, script = Recorder(synthesizer), Scripted([FAILING])
    result = run(PROMPT, synthesizer=recorder, detector=script.detector, verifier=script.verifier, attempts=3, compose=True,
                 **TINY)  # fmt: skip
    assert [a.remedy for a in result.attempts] == ["first", "new seed", "re-plan"]  # composing from the start
    result = run(PROMPT, synthesizer=recorder, detector=script.detector, verifier=script.verifier, attempts=5, **TINY)
    assert [a.remedy for a in result.attempts] == ["first", "new seed", "compose", "re-plan", "new seed"]
    assert "stronger guidance skipped" in result.attempts[3].notes[0]
    assert all("scale_factor" not in call for call in recorder.calls)


def test_the_loop_stops_at_the_first_pass_and_returns_it(synthesizer):
    script = Scripted([FAILING, {**FAILING, "count_acc": 1.0}, PASSING, FAILING])
    result = run(PROMPT, synthesizer=synthesizer, detector=script.detector, verifier=script.verifier, attempts=4, **TINY)
    assert [a.passed for a in result.attempts] == [False, False, True]
    assert result.best is result.attempts[2] and result.passed
    assert result.scores == PASSING and result.image is result.attempts[2].image


def test_without_a_pass_the_best_score_wins_and_ties_go_to_the_earlier(synthesizer):
    better = {**FAILING, "count_acc": 1.0}
    script = Scripted([FAILING, better, better, FAILING])
    result = run(PROMPT, synthesizer=synthesizer, detector=script.detector, verifier=script.verifier, attempts=4, **TINY)
    assert len(result.attempts) == 4 and not result.passed
    assert result.best is result.attempts[1]
    assert result.attempts[1].score == overall_score(better) > overall_score(FAILING)


def test_a_failing_attempt_is_recorded_and_the_loop_goes_on(synthesizer, tmp_path):
    recorder, script = Recorder(synthesizer, fail_on={1}), Scripted([FAILING])
    result = run(PROMPT, synthesizer=recorder, detector=script.detector, verifier=script.verifier, attempts=2, **TINY)
    first, second = result.attempts
    assert first.image is None and first.scores is None and "CUDA out of memory" in first.error
    assert first.error.startswith("synthesize failed: RuntimeError")
    assert second.image is not None and second.error is None and second.remedy == "new seed"
    assert result.best is second
    report = json.loads((result.save(tmp_path)["report"]).read_text())
    assert [a["error"] is None for a in report["attempts"]] == [False, True]

    recorder = Recorder(synthesizer, fail_on={1, 2})
    result = run(PROMPT, synthesizer=recorder, detector=script.detector, verifier=script.verifier, attempts=2, **TINY)
    assert result.best is None and result.image is None
    paths = result.save(tmp_path / "none")
    assert sorted(paths) == ["layout", "report"]  # no image to write, but the record of what happened


def test_a_scorer_without_the_keys_fails_that_attempt_clearly(synthesizer):
    result = run(PROMPT, synthesizer=synthesizer, detector=lambda image, names: [], verifier=lambda plan, d: replace(verify(plan, d), scores={"count_acc": 1}),
                 attempts=1, **TINY)  # fmt: skip
    assert "the scorer returned no spatial_acc, box_iou50, mean_iou" in result.attempts[0].error


def test_llm_replan_sends_the_failures_to_the_server(synthesizer, tmp_path, monkeypatch):
    monkeypatch.setenv("SCENEWRIGHT_CACHE_DIR", str(tmp_path / "cache"))
    answer = json.dumps({"objects": [
        {"name": "circle", "phrase": "a red circle", "box": [0.05, 0.3, 0.3, 0.6]},
        {"name": "circle", "phrase": "a red circle", "box": [0.35, 0.3, 0.6, 0.6]},
        {"name": "square", "phrase": "a blue square", "box": [0.7, 0.3, 0.95, 0.6]},
    ], "background": "", "negative": ""})  # fmt: skip
    secret = "sk-agent-DO-NOT-LEAK-42"
    script = Scripted([FAILING])
    with FakeOpenAIServer([answer, answer]) as server:
        result = run(PROMPT, synthesizer=synthesizer, detector=script.detector, verifier=script.verifier, attempts=4,
                     planner="llm", planner_model="test-model", llm_base_url=server.url, openai_api_key=secret,
                     compose=True, **TINY)  # fmt: skip
    assert len(server.requests) == 2, [r["messages"][-1]["content"][:300] for r in server.requests]
    first, replan = server.requests
    assert "did not show" not in first["messages"][-1]["content"]
    caption_turn = replan["messages"][-1]["content"]
    assert caption_turn.startswith(f"Caption: {PROMPT}") and "did not show what the caption asks" in caption_turn
    assert "expected 2 x 'a red circle'" in caption_turn
    # Composing from the start and unguided (methods none): 'compose' and 'stronger guidance' are skipped,
    # so the third attempt re-plans.
    assert result.attempts[2].remedy == "re-plan" and any("with feedback" in n for n in result.attempts[2].notes)
    report = json.dumps(result.report())
    assert secret not in report and result.report()["settings"]["openai_api_key"] == "**********"


def test_an_unplannable_prompt_fails_before_any_attempt(synthesizer):
    from scenewright.agent.loop import AgentError

    with pytest.raises(AgentError, match="found no objects"):
        run("a beautiful morning", synthesizer=synthesizer, attempts=1, **TINY)


# ------------------------------------------------------------------ the local scorer
def _detections(layout, colors=None, shift=0.0):
    colors = colors or [("red" if o.name == "circle" else "blue") for o in layout.objects]
    return [
        Detection(name=o.name, box=(o.box[0] + shift, o.box[1], o.box[2] + shift, o.box[3]), score=1.0, color=c)
        for o, c in zip(layout.objects, colors)
    ]


def test_scores_of_an_exact_image_and_of_broken_ones():
    plan = make_plan(PROMPT)
    layout = plan.layout
    exact = _detections(layout)
    verdict = verify(plan, exact)
    assert verdict.scores == {"count_acc": 1.0, "spatial_acc": 1.0, "box_iou50": 1.0, "mean_iou": 1.0}
    assert verdict.failures == [] and verdict.passed

    missing_square = exact[:2]
    verdict = verify(plan, missing_square)
    scores = verdict.scores
    assert scores["count_acc"] == 0.0 and scores["spatial_acc"] == 0.0 and scores["box_iou50"] == pytest.approx(2 / 3)
    assert any("expected 1 x 'a blue square'" in f for f in verdict.failures) and not verdict.passed

    # A purple circle is not one of "two red circles": the count and its box both miss.
    purple = _detections(layout, colors=["purple", "red", "blue"])
    assert verify(plan, purple).scores["count_acc"] == 0.0
    assert verify(plan, purple).scores["mean_iou"] == pytest.approx(2 / 3)
    assert any("a purple circle" in f for f in verify(plan, purple).failures)
    # A detector that reports no colors cannot tell: every circle fits.
    colorless = [Detection(name=d.name, box=d.box, score=d.score) for d in purple]
    assert verify(plan, colorless).scores["count_acc"] == 1.0

    # Boxes drawn a little off: counts and relations hold, the IoU says how far off.
    shifted = _detections(layout, shift=0.02)
    scores = verify(plan, shifted).scores
    assert scores["count_acc"] == scores["spatial_acc"] == 1.0 and 0.5 < scores["mean_iou"] < 1.0


def test_the_pass_rule_and_the_feedback_come_from_one_list_of_requirements():
    plan = make_plan(PROMPT)
    far = _detections(plan.layout, shift=0.2)  # counts and relations hold, the boxes are drawn well off
    verdict = verify(plan, far, min_mean_iou=0.3)
    by_key = {r.key: r for r in verdict.requirements}
    assert by_key["count:circle"].passed and by_key["count:circle"].figure == 2.0
    assert by_key["relation:0"].passed and not by_key["box:0"].passed
    assert not by_key["mean_iou"].passed and not verdict.passed
    assert verdict.failures == [r.sentence for r in verdict.requirements if not r.passed]
    assert any("mean IoU" in f and "< 0.3" in f for f in verdict.failures)
    assert verify(plan, far, min_mean_iou=0.0).passed  # single boxes are feedback; the mean decides
    with pytest.raises(ValueError, match="iou_threshold"):
        verify(plan, far, iou_threshold=0.0)


def test_the_prompt_is_parsed_once_per_run(synthesizer, monkeypatch):
    import scenewright.layout.parse as parse

    calls: list[str] = []
    original = parse.parse_prompt

    def counting(text):
        calls.append(text)
        return original(text)

    for module in [m for name, m in sys.modules.items() if name.startswith("scenewright")]:
        if getattr(module, "parse_prompt", None) is original:  # every module that imported it by name
            monkeypatch.setattr(module, "parse_prompt", counting)
    fitting = Recorder(synthesizer)
    fitting.defaults = replace(synthesizer.defaults, object_sides=(0.1, 0.2), object_gap=0.05)
    script = Scripted([FAILING])
    result = run(PROMPT, synthesizer=fitting, detector=script.detector, attempts=1, **TINY)
    assert len(result.attempts) == 1 and result.attempts[0].verdict is not None
    assert calls == [PROMPT]  # plan, repair, size fit and verify all read the one Plan's spec
    calls.clear()
    result = run(PROMPT, synthesizer=fitting, detector=script.detector, verifier=script.verifier, attempts=4, **TINY)
    assert result.attempts[-1].remedy == "re-plan" and calls == [PROMPT]  # the re-plan reuses the spec
