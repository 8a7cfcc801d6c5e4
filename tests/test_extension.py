"""Extending the loop from outside the package: a toy guidance method and toy step controllers, no edit to `generate`."""

from __future__ import annotations

import pytest
import torch

from scenewright.synth import Synthesizer
from scenewright.synth.controllers import StepController
from scenewright.synth.maps import AttentionMaps, GuidanceTargets, MapRequest
from scenewright.synth.methods import GuidanceMethod, get_method, register_method, unregister_method
from scenewright.synth.testing import get_dummy_pipe

PROMPT = "a cat and a dog"
TOKEN = 2  # "cat"
GRID = (16, 16)  # the tiny UNet attends at 16x16


def corner_loss(maps: AttentionMaps, targets: GuidanceTargets, step: int, corner_share: float = 0.25, **_) -> torch.Tensor:
    """1 - the share of the token's cross-attention (mean over layers and heads) in the top-left corner."""
    attention = maps.mean("cross", GRID)[..., TOKEN]  # (16, 16)
    rows, cols = int(GRID[0] * corner_share), int(GRID[1] * corner_share)
    return 1.0 - attention[:rows, :cols].sum() / attention.sum()


TOY = GuidanceMethod(
    name="toy_corner",
    losses=(corner_loss,),
    needs=lambda options, latent_hw: [MapRequest("cross", (GRID,))],
    defaults={"corner_share": 0.25},
    refinement_loss=corner_loss,  # A&E-style refinement descends it too, at the `thresholds` steps
    citation="a test's toy: pulls one token's attention into the top-left corner",
)


class ScaleLatents(StepController):
    """Multiplies the latents by ``factor`` before step ``at``."""

    def __init__(self, factor: float, at: int):
        self.factor, self.at = factor, at

    def before_step(self, i, t, latents):
        return latents * self.factor if i == self.at else latents


class StepLog(StepController):
    """Records which hook saw which step and timestep, in call order."""

    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def before_step(self, i, t, latents):
        self.calls.append(("before_step", i, int(t)))
        return latents

    def guide(self, i, t, latents):
        self.calls.append(("guide", i, int(t)))
        return latents, None


@pytest.fixture(scope="module")
def syn() -> Synthesizer:
    return Synthesizer.from_pipe(get_dummy_pipe())


@pytest.fixture
def toy_method():
    register_method(TOY)
    yield TOY
    unregister_method(TOY.name)


def test_a_registered_method_runs_and_lowers_its_loss(syn, toy_method):
    latent = torch.randn(1, 4, 32, 32, generator=torch.Generator("cpu").manual_seed(7))
    records = []
    kwargs = dict(num_inference_steps=2, seed=0, output_type="latent", return_trajectory=True, latents=latent)
    guided = syn.generate(PROMPT, methods=["toy_corner"], token_indices=[TOKEN], max_iter_to_alter=1,
                          thresholds={0: 0.99}, scale_factor=2000.0,  # refine at step 0 (20 updates at most)
                          callback=lambda i, n, record: records.append(record), **kwargs)  # fmt: skip
    plain = syn.generate(PROMPT, **kwargs)
    assert [r is not None for r in records] == [True, False]  # guided at step 0 only (max_iter_to_alter=1)
    assert list(records[0].losses) == ["toy_corner"] and records[0].refinement_iterations[0] > 0

    # Measured at the latent step 1 starts from, at step 1's timestep: the guided run's token sits in the corner
    # more (0.937 -> 0.917 on the tiny UNet, whose random attention moves little; float noise is ~1e-6).
    t1 = int(syn.scheduler.timesteps[1])
    before = syn.measure(PROMPT, plain.trajectory[1], t1, ["toy_corner"], token_indices=[TOKEN]).total.item()
    after = syn.measure(PROMPT, guided.trajectory[1], t1, ["toy_corner"], token_indices=[TOKEN]).total.item()
    print(f"toy corner loss: plain {before:.5f}, guided {after:.5f}")
    assert after < before - 0.01, f"toy guidance did not lower its loss: {before} -> {after}"


def test_register_method_refuses_a_taken_name_and_unregister_removes_it(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        register_method(toy_method)
    assert register_method(toy_method, replace=True) is toy_method
    with pytest.raises(TypeError, match="GuidanceMethod"):
        register_method("toy_corner")  # type: ignore[arg-type]
    unregister_method(toy_method.name)
    with pytest.raises(ValueError, match="unknown guidance method 'toy_corner'"):
        get_method("toy_corner")
    register_method(toy_method)  # for the fixture's teardown


def test_a_controller_scales_the_latents_exactly_where_asked(syn):
    kwargs = dict(num_inference_steps=3, seed=0, output_type="latent", return_trajectory=True)
    plain = syn.generate(PROMPT, **kwargs)
    scaled = syn.generate(PROMPT, controllers=[ScaleLatents(0.5, at=1)], **kwargs)
    torch.testing.assert_close(scaled.trajectory[0], plain.trajectory[0], rtol=0, atol=0)  # untouched before step 1
    # The trajectory holds the latents after before_step: step 1's are exactly half of the plain run's.
    torch.testing.assert_close(scaled.trajectory[1], 0.5 * plain.trajectory[1], rtol=0, atol=0)
    assert (scaled.images - plain.images).abs().max() > 0.1  # and the rest of the run follows from them


def test_a_controller_sees_every_step_in_order_alongside_guidance(syn, toy_method):
    log = StepLog()
    out = syn.generate(PROMPT, methods=["toy_corner"], token_indices=[TOKEN], max_iter_to_alter=1, thresholds={},
                       num_inference_steps=3, seed=0, output_type="latent", controllers=[log])  # fmt: skip
    timesteps = [int(t) for t in syn.scheduler.timesteps]
    assert log.calls == [(hook, i, t) for i, t in enumerate(timesteps) for hook in ("before_step", "guide")]
    assert [r.step for r in out.steps] == [0]  # the built-in guidance still guided its step


def test_controllers_must_be_step_controllers_and_one_guides_a_step(syn, toy_method):
    with pytest.raises(TypeError, match=r"`controllers\[0\]` is function; subclass synth.controllers.StepController"):
        syn.generate(PROMPT, controllers=[lambda i, t, z: z], num_inference_steps=1)

    class RecordingGuide(StepController):
        def guide(self, i, t, latents):
            return latents, object()  # claims to have guided every step

    with pytest.raises(ValueError, match="step 0 was guided by both AttendExciteGuidance and RecordingGuide"):
        syn.generate(PROMPT, methods=["toy_corner"], token_indices=[TOKEN], controllers=[RecordingGuide()],
                     num_inference_steps=1, thresholds={})  # fmt: skip
