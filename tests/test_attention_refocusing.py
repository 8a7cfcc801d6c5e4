"""The attention_refocusing preset: GLIGEN + CAR + SAR (+ the code's grounding loss) on the official schedule."""

from __future__ import annotations

import pytest

from scenewright.layout.schema import Layout
from scenewright.synth import Synthesizer
from scenewright.synth.methods import RefocusingSchedule, get_method
from scenewright.synth.testing import get_dummy_pipe

R = (16, 16)  # the tiny UNet's attention grid (latent / 2)
OPTIONS = {"car_res": R, "sar_res": R, "grounding_res": R}
LAYOUT = Layout.from_gligen("a cat and a dog", ["a cat", "a dog"], [[0.05, 0.1, 0.45, 0.9], [0.55, 0.1, 0.95, 0.9]])


def test_schedule_guides_the_first_ten_steps_then_every_fifth_up_to_35():
    schedule = RefocusingSchedule()
    assert [i for i in range(50) if schedule.guides(i)] == [*range(10), 10, 15, 20, 25, 30, 35]
    # Official plms.py: (loss scale, iteration cap) by step.
    expected = {0: (4, 2), 1: (4, 2), 2: (4, 6), 4: (4, 6), 5: (3, 3), 9: (3, 3), 10: (3, 2), 15: (3, 2), 20: (1, 2), 35: (1, 2)}
    assert {i: (schedule.loss_scale(i), schedule.max_iterations(i)) for i in expected} == expected
    assert schedule.uses_threshold(9) and not schedule.uses_threshold(10)  # later steps refine by peak alone


def test_preset_is_car_sar_and_the_grounding_loss_weighted_as_the_official_code():
    method = get_method("attention_refocusing")
    weights = {fn.__name__: method.defaults[key] for fn, key in method.losses}
    assert weights == {
        "cross_attention_refocusing_loss": 1.0,
        "self_attention_refocusing_loss": 1.0,
        "grounding_refocusing_loss": 3.0,
    }
    assert method.defaults["schedule"] == "attention_refocusing"


@pytest.fixture(scope="module")
def gligen_syn() -> Synthesizer:
    return Synthesizer.from_pipe(get_dummy_pipe(gligen=True))


def test_preset_on_gligen_follows_its_iteration_caps_and_lowers_its_loss(gligen_syn):
    out = gligen_syn.generate(
        LAYOUT, methods={"attention_refocusing": OPTIONS}, num_inference_steps=3, seed=0, output_type="latent"
    )
    assert [r.step for r in out.steps] == [0, 1, 2]
    schedule = RefocusingSchedule()
    for record in out.steps:
        # The tiny random model never reaches the 0.2 in-box peak, so each step runs to its cap.
        assert record.refinement_iterations == [schedule.max_iterations(record.step)]
        assert record.last_loss[0] < record.total_loss[0]  # the updates went downhill


def test_preset_on_plain_stable_diffusion_runs_without_grounding_maps(dummy_pipe):
    syn = Synthesizer.from_pipe(dummy_pipe)
    out = syn.generate(
        LAYOUT, methods={"attention_refocusing": OPTIONS}, num_inference_steps=2, seed=0, output_type="latent"
    )
    assert len(out.steps) == 2
    assert all(r.last_loss[0] < r.total_loss[0] for r in out.steps)


def test_bad_schedule_option_is_rejected(gligen_syn):
    with pytest.raises(ValueError, match="schedule"):
        gligen_syn.generate(LAYOUT, methods={"car": {"car_res": R}}, schedule="fast", num_inference_steps=1)


def test_off_gligen_the_loss_scale_is_the_authors_larger_one(dummy_pipe):
    # The authors' advice for plain SD: loss scale 40 where the GLIGEN schedule has 4 (plain_sd_loss_scale 10).
    syn = Synthesizer.from_pipe(dummy_pipe)
    kwargs = dict(num_inference_steps=1, seed=0, output_type="latent")
    unguided = syn.generate(LAYOUT, **kwargs).images
    moved = {}
    for scale in (1.0, None):
        options = {**OPTIONS, **({} if scale is None else {"plain_sd_loss_scale": scale})}
        out = syn.generate(LAYOUT, methods={"attention_refocusing": options}, **kwargs)
        moved[scale] = float((out.images - unguided).abs().max())
    assert get_method("attention_refocusing").defaults["plain_sd_loss_scale"] == 10.0
    assert moved[None] > 3 * moved[1.0] > 0
