"""GLIGEN in the one loop: equals diffusers' GLIGEN pipeline, grounding tokens matter, every loss works on it."""

from __future__ import annotations

import pytest
import torch

from layout.schema import Layout
from synth import Synthesizer
from synth.gligen import GligenError, gated_layers
from synth.testing import get_dummy_pipe

PROMPT = "a cat and a dog"
PHRASES = ["a cat", "a dog"]
BOXES = [[0.05, 0.1, 0.45, 0.9], [0.55, 0.1, 0.95, 0.9]]


@pytest.fixture(scope="module")
def gligen_pipe():
    return get_dummy_pipe(gligen=True)


@pytest.fixture(scope="module")
def syn(gligen_pipe) -> Synthesizer:
    return Synthesizer.from_pipe(gligen_pipe)


@pytest.fixture(scope="module")
def layout() -> Layout:
    return Layout.from_gligen(PROMPT, PHRASES, BOXES)


# The tiny UNet's attention runs at 16x16 = latent / 2 (SD1.5's "16x16" is latent / 4): say so per method.
R = (16, 16)
RES = {
    "car": {"car_res": R}, "sar": {"sar_res": R}, "attend_excite": {"attn_res": R}, "astar": {"attn_res": R},
    "layout_guidance": {"up_res": R}, "boxdiff": {"attn_res": R},
    "attention_refocusing": {"car_res": R, "sar_res": R, "grounding_res": R},
}  # fmt: skip


def _diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def test_unguided_equals_stable_diffusion_gligen_pipeline(gligen_pipe, syn, layout):
    # 2 steps, beta 0.5: the gated layers run at step 0 and are switched off at step 1.
    ref = gligen_pipe(
        PROMPT, gligen_phrases=PHRASES, gligen_boxes=BOXES, gligen_scheduled_sampling_beta=0.5,
        num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(0), output_type="latent",
    ).images  # fmt: skip
    for layer in gated_layers(syn.unet):
        layer.enabled = True  # diffusers leaves them off after its run; ours must restore what it found
    ours = syn.generate(layout, num_inference_steps=2, seed=0, output_type="latent", gligen_scheduled_sampling_beta=0.5)
    diff = _diff(ours.images, ref)
    print(f"unguided GLIGEN vs StableDiffusionGLIGENPipeline: max abs diff {diff:.2e}")
    assert diff <= 1e-4
    assert all(layer.enabled for layer in gated_layers(syn.unet))  # scheduled sampling's switch is undone
    # Grounding matters: without the tokens, or with a box moved, the result differs.
    kwargs = dict(num_inference_steps=2, seed=0, output_type="latent", gligen_scheduled_sampling_beta=0.5)
    plain = syn.generate(layout, gligen=False, **kwargs).images
    moved = syn.generate(Layout.from_gligen(PROMPT, PHRASES, [BOXES[0], [0.6, 0.6, 0.7, 0.7]]), **kwargs).images
    assert _diff(ours.images, plain) > 1e-3
    assert _diff(ours.images, moved) > 1e-4


def test_grounding_tokens_carry_each_objects_phrase_and_box(gligen_pipe, syn, layout):
    # What reaches the position net: box k and phrase k in slot k for the conditional half, null
    # tokens (mask 0) for the unconditional half and the unused slots.
    seen = []
    hook = syn.unet.position_net.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs), with_kwargs=True)
    try:
        syn.generate(layout, num_inference_steps=1, seed=0, output_type="latent")
    finally:
        hook.remove()
    inputs = seen[0]
    assert inputs["boxes"].shape == (2, 30, 4)
    torch.testing.assert_close(inputs["boxes"][1, :2], torch.tensor(BOXES))
    assert inputs["masks"][0].sum() == 0 and inputs["masks"][1].tolist() == [1.0, 1.0] + [0.0] * 28
    tokens = gligen_pipe.tokenizer(PHRASES, padding=True, return_tensors="pt")
    pooled = gligen_pipe.text_encoder(**tokens).pooler_output
    torch.testing.assert_close(inputs["positive_embeddings"][1, :2], pooled)


def test_fuser_attention_is_captured_by_the_one_capture_mechanism(syn, layout):
    from synth.maps import MapRequest

    measured = syn.measure(layout, torch.randn(1, 4, 32, 32), 500, ["attention_refocusing"], **RES["attention_refocusing"])
    grounding = [e for e in measured.maps[0].entries if e.kind == "grounding"]
    assert grounding and all(e.size == (16, 16) and e.probs.shape[-1] == 256 + 30 for e in grounding)
    assert MapRequest("grounding", ((16, 16),)) in syn_requests(syn)


def syn_requests(syn):
    from synth.methods import get_method

    method = get_method("attention_refocusing")
    return method.needs({**method.defaults, **RES["attention_refocusing"]}, (32, 32))


@pytest.mark.parametrize("method", ["car", "sar", "attend_excite", "astar", "layout_guidance", "boxdiff", "attention_refocusing"])
def test_every_loss_runs_on_gligen_and_its_step_lowers_it(syn, layout, method):
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    before = syn.measure(layout, latents, 700, [method], **RES[method])
    assert torch.isfinite(before.total).all() and before.grad.abs().sum() > 0
    step = 0.5 / float(before.grad.abs().max())  # a small step along the gradient
    after = syn.measure(layout, latents - step * before.grad, 700, [method], **RES[method])
    assert float(after.total) < float(before.total), (method, float(before.total), float(after.total))


def test_guided_generation_on_gligen_records_losses(syn, layout):
    out = syn.generate(layout, methods={"car": RES["car"], "sar": RES["sar"]}, num_inference_steps=2, seed=0, output_type="latent")
    assert len(out.steps) == 2 and all(torch.isfinite(torch.tensor(r.total_loss)).all() for r in out.steps)


def test_more_than_30_objects_is_a_clear_error(syn):
    boxes = [[(i % 6) / 6, (i // 6) / 6, (i % 6) / 6 + 0.1, (i // 6) / 6 + 0.1] for i in range(31)]
    many = Layout.model_construct(prompt="many cats", objects=Layout.from_gligen("c", ["a cat"], [boxes[0]]).objects * 31)
    with pytest.raises(GligenError, match="31 objects.*at most 30"):
        syn.generate(many, num_inference_steps=1, output_type="latent")


def test_gligen_asked_of_plain_weights_names_what_to_load(dummy_pipe, layout):
    with pytest.raises(GligenError, match="position_net.*gligen"):
        Synthesizer.from_pipe(dummy_pipe).generate(layout, gligen=True, num_inference_steps=1, output_type="latent")


def test_from_pretrained_gligen_round_trip_and_plain_folder_error(tmp_path, gligen_pipe, dummy_pipe):
    gligen_pipe.save_pretrained(tmp_path / "gligen")
    dummy_pipe.save_pretrained(tmp_path / "plain")
    loaded = Synthesizer.from_pretrained(str(tmp_path / "gligen"), gligen=True)
    assert type(loaded.pipe).__name__ == "StableDiffusionGLIGENPipeline"
    assert loaded.unet.position_net is not None
    auto = Synthesizer.from_pretrained(str(tmp_path / "gligen"))  # no flag: the gated UNet is detected
    assert auto.unet.position_net is not None
    with pytest.raises(GligenError, match="masterful/gligen"):
        Synthesizer.from_pretrained(str(tmp_path / "plain"), gligen=True)
