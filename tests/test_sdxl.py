"""SDXL: the tiny SDXL pipeline (diffusers' test config, real CLIP BPE) through our loading and backbone code."""

from __future__ import annotations

import json

import pytest
import torch

from scenewright.errors import ModelNotAvailableError
from scenewright.synth.backbones import StableDiffusionXLBackbone, backbone_for
from scenewright.synth.loading import load_stable_diffusion
from scenewright.synth.testing import get_dummy_sdxl_pipe


@pytest.fixture(scope="module")
def sdxl_pipe():
    return get_dummy_sdxl_pipe(seed=0)


@pytest.fixture(scope="module")
def sdxl_dir(sdxl_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sdxl")
    sdxl_pipe.save_pretrained(folder)
    return folder


def test_the_pipeline_class_comes_from_model_index_json(sdxl_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    assert isinstance(load_stable_diffusion(str(sdxl_dir)), StableDiffusionXLPipeline)
    # The refiner's folder says StableDiffusionXLImg2ImgPipeline: a clear error naming the base model.
    refiner = tmp_path / "refiner"
    refiner.mkdir()
    (refiner / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLImg2ImgPipeline"}))
    with pytest.raises(ModelNotAvailableError, match="SDXL refiner.*base model"):
        load_stable_diffusion(str(refiner))
    (refiner / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    with pytest.raises(ModelNotAvailableError, match="StableVideoDiffusionPipeline; scenewright draws with"):
        load_stable_diffusion(str(refiner))


def test_a_refiner_pipe_without_its_first_text_encoder_is_refused(sdxl_pipe):
    from diffusers import StableDiffusionXLPipeline

    refiner_like = StableDiffusionXLPipeline(**{**sdxl_pipe.components, "text_encoder": None, "tokenizer": None})
    with pytest.raises(ValueError, match="refiner"):
        backbone_for(refiner_like)
    assert isinstance(backbone_for(sdxl_pipe), StableDiffusionXLBackbone)
    assert backbone_for(sdxl_pipe).native_size == (64, 64)


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_the_backbones_conditioning_and_decode_reproduce_the_sdxl_pipeline(sdxl_pipe, size):
    """A plain CFG loop on the backbone's Conditioning and decode equals StableDiffusionXLPipeline exactly."""
    from diffusers.utils.torch_utils import randn_tensor

    height, width = size
    expected = sdxl_pipe("a cat and a dog", num_inference_steps=3, guidance_scale=5.0, height=height, width=width,
                         generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    backbone, device = backbone_for(sdxl_pipe), torch.device("cpu")
    with torch.no_grad():
        conditioning = backbone.encode(["a cat and a dog"], None, True, device, height, width)
        scheduler = sdxl_pipe.scheduler
        scheduler.set_timesteps(3, device=device)
        generator = torch.Generator().manual_seed(0)
        latents = randn_tensor((1, 4, height // 2, width // 2), generator=generator) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            uncond, cond = sdxl_pipe.unet(model_input, t, **conditioning.unet_kwargs(), return_dict=False)[0].chunk(2)
            latents = scheduler.step(uncond + 5.0 * (cond - uncond), t, latents, return_dict=False)[0]
        images, nsfw = backbone.decode(latents, "np", generator, device, torch.float32)
    assert nsfw is None and images.shape == (1, height, width, 3)
    assert abs(images - expected).max() <= 1e-4
    # The guided forward's rows are the conditional half of the CFG batch's.
    kwargs, cond_kwargs = conditioning.unet_kwargs(), conditioning.unet_kwargs(cond_only=True)
    torch.testing.assert_close(kwargs["encoder_hidden_states"][1:], cond_kwargs["encoder_hidden_states"])
    for key in ("text_embeds", "time_ids"):
        torch.testing.assert_close(kwargs["added_cond_kwargs"][key][1:], cond_kwargs["added_cond_kwargs"][key])
    assert cond_kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[height, width, 0, 0, height, width]]


# ----------------------------------------------------------------------------- the loop on SDXL
R = (16, 16)  # the tiny SDXL UNet's cross-attention grid (real SDXL at 1024 px: 64x64 and 32x32)
RES = {
    "car": {"car_res": R}, "sar": {"sar_res": R}, "attend_excite": {"attn_res": R}, "astar": {"attn_res": R},
    "layout_guidance": {"up_res": R}, "boxdiff": {"attn_res": R},
    "attention_refocusing": {"car_res": R, "sar_res": R, "grounding_res": R},  # CAR + SAR on the official schedule
}  # fmt: skip
CAT_AND_DOG = {
    "prompt": "a cat and a dog",
    "objects": [
        {"name": "cat", "phrase": "a cat", "box": [0.0, 0.0, 0.5, 0.5]},
        {"name": "dog", "phrase": "a dog", "box": [0.5, 0.5, 1.0, 1.0]},
    ],
}


@pytest.fixture(scope="module")
def syn(sdxl_pipe):
    from scenewright.synth.pipeline import Synthesizer

    return Synthesizer.from_pipe(sdxl_pipe)


@pytest.fixture(scope="module")
def layout():
    from scenewright.layout.schema import Layout

    return Layout.parse(CAT_AND_DOG)


@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_unguided_generate_reproduces_stable_diffusion_xl_pipeline(sdxl_pipe, syn, scheduler, size):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    original = sdxl_pipe.scheduler
    sdxl_pipe.scheduler = (DDIMScheduler if scheduler == "ddim" else EulerDiscreteScheduler).from_config(original.config)
    try:
        height, width = size
        kwargs = dict(num_inference_steps=3, guidance_scale=5.0, height=height, width=width, output_type="np")
        expected = sdxl_pipe("a cat and a dog", generator=torch.Generator().manual_seed(0), **kwargs).images
        ours = syn.generate("a cat and a dog", seed=0, **kwargs).images
    finally:
        sdxl_pipe.scheduler = original
    assert abs(ours - expected).max() <= 1e-4


def test_guidance_rescale_and_the_native_size_follow_the_pipeline(sdxl_pipe, syn):
    kwargs = dict(num_inference_steps=2, guidance_scale=5.0, guidance_rescale=0.7, output_type="np")
    expected = sdxl_pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    ours = syn.generate("a cat", seed=0, **kwargs).images  # no size: the model's native 64 px
    assert ours.shape == (1, 64, 64, 3) and abs(ours - expected).max() <= 1e-4
    with pytest.raises(ValueError, match="guidance_rescale"):
        syn.generate("a cat", num_inference_steps=1, guidance_rescale=2.0)


def test_from_pretrained_draws_with_sdxl(sdxl_dir):
    from scenewright.synth.pipeline import Synthesizer

    loaded = Synthesizer.from_pretrained(str(sdxl_dir))
    assert isinstance(loaded.backbone, StableDiffusionXLBackbone)
    assert loaded.generate("a cat", num_inference_steps=1, seed=0, output_type="np").images.shape == (1, 64, 64, 3)


def test_phrase_tokens_are_the_positions_both_encoders_see(sdxl_pipe, syn, layout):
    # The UNet reads text_encoder's and text_encoder_2's hidden states concatenated per token, so a phrase's
    # position must be the same in both tokenizations; both are CLIP's BPE here, as in SDXL.
    ids = [tok(layout.prompt).input_ids for tok in (sdxl_pipe.tokenizer, sdxl_pipe.tokenizer_2)]
    assert ids[0] == ids[1]
    measured = syn.measure(layout, torch.zeros(1, 4, 32, 32), 500, ["car"], car_res=R)
    groups = measured.targets[0].token_groups
    assert [sdxl_pipe.tokenizer.decode([ids[0][g[-1]]]) for g in groups] == ["cat", "dog"]


@pytest.mark.parametrize("method", list(RES))
def test_every_loss_runs_on_sdxl_and_its_step_lowers_it(syn, layout, method):
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    before = syn.measure(layout, latents, 700, [method], **RES[method])
    assert before.grad.dtype == torch.float32 and torch.isfinite(before.total).all()
    step = 0.5 / float(before.grad.abs().max())  # move each latent cell by at most 0.5
    after = syn.measure(layout, latents - step * before.grad, 700, [method], **RES[method])
    # Each loss falls by 3.9e-4 (car) to 1.1e-2 (layout guidance) on the tiny SDXL; float noise is ~1e-6.
    assert float(after.total) < float(before.total) - 1e-4, (method, float(before.total), float(after.total))


def test_attend_and_excite_on_sdxl_equals_the_reference_rule_on_the_xl_maps(sdxl_pipe, syn):
    """No A&E XL port runs on current diffusers, so diffusers' own A&E pieces (its attention store and processor,
    its max-attention and loss functions) are run on the SDXL UNet with its added conditioning, and their loss and
    gradient compared with ours at the same latent."""
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (  # noqa: E501
        AttentionStore,
        StableDiffusionAttendAndExcitePipeline,
    )

    from diffusers import DDIMScheduler

    prompt, indices, t = "a cat and a dog", [2, 5], 700  # "cat", "dog" (0 is <|startoftext|>)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    # DDIM, whose scale_model_input is the identity: the reference feeds the latent to the UNet unscaled
    # (as the published XL ports do, also under Euler, where we scale it as diffusers' loop does).
    euler, sdxl_pipe.scheduler = sdxl_pipe.scheduler, DDIMScheduler.from_config(sdxl_pipe.scheduler.config)
    try:
        ours = syn.measure(prompt, latents, t, ["attend_excite"], token_indices=indices, attn_res=R)
    finally:
        sdxl_pipe.scheduler = euler

    reference = StableDiffusionAttendAndExcitePipeline(
        vae=sdxl_pipe.vae, text_encoder=sdxl_pipe.text_encoder, tokenizer=sdxl_pipe.tokenizer, unet=sdxl_pipe.unet,
        scheduler=sdxl_pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    conditioning = syn.backbone.encode([prompt], None, False, torch.device("cpu"), 64, 64)
    original = sdxl_pipe.unet.attn_processors
    try:
        reference.attention_store = AttentionStore(R)
        reference.register_attention_control()
        with torch.enable_grad():
            z = latents.clone().requires_grad_(True)
            sdxl_pipe.unet(z, t, **conditioning.unet_kwargs(cond_only=True))
            maxima = reference._aggregate_and_get_max_attention_per_token(indices=indices)
            loss = reference._compute_loss(maxima)
            (grad,) = torch.autograd.grad(loss, [z])
    finally:
        sdxl_pipe.unet.set_attn_processor(original)
    assert abs(float(ours.losses["attend_excite"][0]) - float(loss.detach())) <= 1e-5
    # The update rule is z - step_size * grad on both sides: the gradients must agree.
    torch.testing.assert_close(ours.grad, grad, rtol=1e-3, atol=1e-6)


def test_composition_and_spatial_temporal_control_run_on_sdxl(syn, layout):
    from scenewright.synth.composition import CompositionOptions, compose_layout
    from scenewright.synth.spatial_temporal import SpatialTemporalControl

    kwargs = dict(num_inference_steps=4, guidance_scale=5.0, seed=0, output_type="latent", return_trajectory=True)
    plain = syn.generate(layout, **kwargs)
    options = CompositionOptions(steps=0.5, candidates=1, attention_res=R)
    composed = syn.generate(layout, composition=options, **kwargs)
    placed = compose_layout(syn, layout, options, num_inference_steps=4, guidance_scale=5.0, seed=0, height=64, width=64)
    torch.testing.assert_close(composed.trajectory[0], placed.apply(0, plain.trajectory[0]))
    assert (composed.images - plain.images).abs().max() > 1e-2  # the pasted objects changed the result
    zero = syn.generate(layout, spatial_temporal=SpatialTemporalControl(local_weight=0.0), **kwargs)
    torch.testing.assert_close(zero.images, plain.images, rtol=0, atol=0)  # weight 0 is the plain loop exactly
    blended = syn.generate(layout, spatial_temporal=SpatialTemporalControl(local_weight=3.0), **kwargs)
    assert (blended.images - plain.images).abs().max() > 1e-3


def test_bad_requests_on_sdxl_say_what_to_do(syn, layout):
    from scenewright.synth.gligen import GligenError

    with pytest.raises(GligenError, match="SDXL UNet has no gated layers, and no GLIGEN weights exist for SDXL"):
        syn.generate(layout, gligen=True, num_inference_steps=1)
    with pytest.raises(ValueError, match="`height` must be a multiple of 4"):
        syn.generate("a cat", height=66, num_inference_steps=1)
