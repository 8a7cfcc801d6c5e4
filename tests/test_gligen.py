"""GLIGEN in the one loop: equals diffusers' GLIGEN pipeline, grounding tokens matter, every loss works on it."""

from __future__ import annotations

import pytest
import torch

from scenewright.layout.schema import Layout
from scenewright.synth import Synthesizer
from scenewright.synth.gligen import GligenError, gated_layers
from scenewright.synth.testing import get_dummy_pipe

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


def test_a_bare_prompt_on_a_gligen_unet_is_plain_stable_diffusion(gligen_pipe, syn):
    # No boxes, nothing to ground: the gated layers stay out and the UNet is the SD model it was built on
    # (the shipped shapes model is such a UNet and must equal StableDiffusionPipeline on prompts).
    from diffusers import StableDiffusionPipeline

    plain_pipe = StableDiffusionPipeline(**{k: v for k, v in gligen_pipe.components.items()}, requires_safety_checker=False)
    plain_pipe.set_progress_bar_config(disable=True)
    ref = plain_pipe(PROMPT, num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(0), output_type="latent").images
    kwargs = dict(num_inference_steps=2, seed=0, output_type="latent", gligen_scheduled_sampling_beta=1.0)
    ours = syn.generate(PROMPT, **kwargs).images
    assert _diff(ours, ref) <= 1e-4
    # Asked for, GLIGEN still runs on a bare prompt: every slot a null token, so the result differs.
    nulls = syn.generate(PROMPT, gligen=True, **kwargs).images
    assert _diff(nulls, ref) > 1e-4


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
    from scenewright.synth.maps import MapRequest

    measured = syn.measure(layout, torch.randn(1, 4, 32, 32), 500, ["attention_refocusing"], **RES["attention_refocusing"])
    grounding = [e for e in measured.maps[0].entries if e.kind == "grounding"]
    assert grounding and all(e.size == (16, 16) and e.probs.shape[-1] == 256 + 30 for e in grounding)
    assert MapRequest("grounding", ((16, 16),)) in syn_requests(syn)


def syn_requests(syn):
    from scenewright.synth.methods import get_method

    method = get_method("attention_refocusing")
    return method.needs({**method.defaults, **RES["attention_refocusing"]}, (32, 32))


@pytest.mark.parametrize("method", ["car", "sar", "attend_excite", "astar", "layout_guidance", "boxdiff", "attention_refocusing"])
def test_every_loss_runs_on_gligen_and_its_step_lowers_it(syn, layout, method):
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    before = syn.measure(layout, latents, 700, [method], **RES[method])
    assert torch.isfinite(before.total).all() and before.grad.abs().sum() > 0
    step = 0.5 / float(before.grad.abs().max())  # a small step along the gradient
    after = syn.measure(layout, latents - step * before.grad, 700, [method], **RES[method])
    # Each step lowers its loss by 8e-4 (sar) to 3e-2 on the tiny model; float noise is ~1e-6.
    assert float(after.total) < float(before.total) - 1e-4, (method, float(before.total), float(after.total))


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


def _positional_gligen(pipe, sharpness: float = 24.0) -> list:
    """Hand-set a GLIGEN UNet whose fuser attention can only follow boxes; returns the hook handles.

    A trained GLIGEN's visual tokens know where they are (convolution features) and its position net
    encodes each box; random weights do neither. So: (1) the position net passes the lowest Fourier
    frequency of each box through, as e^{i x0} + e^{i x1} (and y); (2) a pre-hook on every fuser
    replaces the visual tokens with e^{i x}, e^{i y} of their pixel centres (raster order); (3) one
    head's query reads the pixel code, its key the box code, so a pixel's score for an object's token
    is ``sharpness * (cos(x - x0) + cos(x - x1) + cos(y - y0) + cos(y - y1))``, largest at the box's
    centre and falling off away from it. Visual and null tokens get zero keys (a constant score).
    Everything else — what the pipeline feeds the position net, slot order, the capture of the fuser's
    probabilities — is the real code, so the maps land in the boxes only if boxes arrive right.
    """
    net = pipe.unet.position_net
    big = 30.0  # SiLU(big + v) = big + v in fp32 for |v| <= 1: the MLP passes values through exactly
    with torch.no_grad():
        lin1, lin2, lin3 = net.linears[0], net.linears[2], net.linears[4]
        for layer in (lin1, lin2, lin3):
            layer.weight.zero_()
            layer.bias.zero_()
        fourier = net.positive_len  # Fourier features follow the phrase embedding; freq 0: sin xyxy, cos xyxy
        for k in range(8):
            lin1.weight[k, fourier + k] = 1.0
            lin1.bias[k] = big
            lin2.weight[k, k] = 1.0
        sin_x0, sin_y0, sin_x1, sin_y1, cos_x0, cos_y0, cos_x1, cos_y1 = range(8)
        codes = [(cos_x0, cos_x1), (sin_x0, sin_x1), (cos_y0, cos_y1), (sin_y0, sin_y1)]
        for out, (a, b) in enumerate(codes):  # out 0..3: the code; out 4..7: its negative (zero mean for LayerNorm)
            for sign, row in ((1.0, out), (-1.0, out + 4)):
                lin3.weight[row, a] = lin3.weight[row, b] = sign
                lin3.bias[row] = -2 * big * sign

    def visual_code(module, args):
        x, objs = args
        side = int(round(x.shape[1] ** 0.5))
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # row-major: token n = row * side + col
        code = torch.stack([xs.cos(), xs.sin(), ys.cos(), ys.sin()], dim=-1).flatten(0, 1)  # (N, 4)
        new = torch.zeros_like(x)
        new[..., 0:4], new[..., 4:8] = code, -code
        return new, objs

    handles = []
    with torch.no_grad():
        for fuser in gated_layers(pipe.unet):
            dim = fuser.linear.out_features
            fuser.linear.weight.zero_()
            fuser.linear.bias.zero_()
            for k in range(8):
                fuser.linear.weight[8 + k, k] = 1.0  # box code -> channels 8..15, apart from the pixel code
            attn = fuser.attn
            head_dim = attn.to_q.out_features // attn.heads
            attn.to_q.weight.zero_()
            attn.to_k.weight.zero_()
            # LayerNorm scales the pixel code by 4 and the box code by ~2 (64 channels); head 0 only.
            gain = (sharpness / (8 * attn.scale)) ** 0.5
            for k in range(4):
                attn.to_q.weight[k, k] = gain
                attn.to_k.weight[k, 8 + k] = gain
            assert head_dim >= 4 and dim >= 16
            handles.append(fuser.register_forward_pre_hook(visual_code))
    return handles


def test_fuser_attention_for_each_objects_token_is_larger_inside_its_box():
    pipe = get_dummy_pipe(gligen=True)  # own copy: its weights are hand-set below
    boxes = [[0.05, 0.05, 0.9, 0.35], [0.1, 0.55, 0.45, 0.95]]  # a band across the top; bottom left
    layout = Layout.from_gligen(PROMPT, PHRASES, boxes)
    handles = _positional_gligen(pipe)
    try:
        measured = Synthesizer.from_pipe(pipe).measure(
            layout, torch.randn(1, 4, 32, 32), 500, ["attention_refocusing"], **RES["attention_refocusing"]
        )
    finally:
        for handle in handles:
            handle.remove()
    layers = [e for e in measured.maps[0].entries if e.kind == "grounding" and e.size == (16, 16)]
    attention = torch.stack([e.probs.float() for e in layers]).mean(dim=(0, 1))  # (256 + 30, 256 + 30)
    to_tokens = attention[:256, 256:]  # pixel queries -> the 30 grounding slots
    centres = (torch.arange(16) + 0.5) / 16
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        inside = ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).flatten()
        own = to_tokens[:, k]
        ratio = float(own[inside].mean() / own[~inside].mean())
        print(f"object {k} {PHRASES[k]!r}: mean attention to its token inside / outside its box = {ratio:.2f}")
        assert ratio > 1.5
        # ... and inside its box a pixel attends its own object's token more than the other's
        assert (own[inside] > to_tokens[inside, 1 - k]).float().mean() > 0.9
    # The x/y convention is pinned: the transposed first box (a band down the left) is not where its token looks.
    transposed = ((ys >= 0.05) & (ys <= 0.9) & (xs >= 0.05) & (xs <= 0.35)).flatten()
    top_band = ((xs >= 0.05) & (xs <= 0.9) & (ys >= 0.05) & (ys <= 0.35)).flatten()
    assert to_tokens[top_band & ~transposed, 0].mean() > 1.5 * to_tokens[transposed & ~top_band, 0].mean()


def test_composition_and_spatial_temporal_control_run_on_gligen(syn, layout):
    from scenewright.synth.composition import CompositionOptions, compose_layout
    from scenewright.synth.spatial_temporal import SpatialTemporalControl

    kwargs = dict(num_inference_steps=4, guidance_scale=5.0, seed=0, output_type="latent", return_trajectory=True)
    plain = syn.generate(layout, **kwargs)  # grounding tokens on: the UNet has gated layers and the layout boxes
    options = CompositionOptions(steps=0.5, candidates=1, attention_res=(16, 16))
    composed = syn.generate(layout, composition=options, **kwargs)
    placed = compose_layout(syn, layout, options, num_inference_steps=4, guidance_scale=5.0, seed=0, height=64, width=64)
    torch.testing.assert_close(composed.trajectory[0], placed.apply(0, plain.trajectory[0]))
    assert (composed.images - plain.images).abs().max() > 1e-2  # the pasted objects changed the result
    zero = syn.generate(layout, spatial_temporal=SpatialTemporalControl(local_weight=0.0), **kwargs)
    torch.testing.assert_close(zero.images, plain.images, rtol=0, atol=0)  # weight 0 is the grounded loop exactly
    blended = syn.generate(layout, spatial_temporal=SpatialTemporalControl(local_weight=3.0), **kwargs)
    assert (blended.images - plain.images).abs().max() > 1e-3
