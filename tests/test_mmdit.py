"""FLUX.1 and SD3: tiny pipelines (diffusers' test configs, offline tokenizers) through our backbones and capture."""

from __future__ import annotations

import pytest
import torch

from scenewright.synth.backbones import FluxBackbone, SD3Backbone, backbone_for
from scenewright.synth.testing import get_dummy_flux_pipe, get_dummy_sd3_pipe

PROMPT = "a cat and a dog"
SIZES = [(32, 32), (32, 48)]
T5_LENGTH = 32  # a short T5 length keeps the tiny models fast; the default is the pipelines' (512 / 256)


@pytest.fixture(scope="module")
def flux_dev():
    return get_dummy_flux_pipe(seed=0, guidance_embeds=True)


@pytest.fixture(scope="module")
def flux_schnell():
    return get_dummy_flux_pipe(seed=0, guidance_embeds=False)


@pytest.fixture(scope="module")
def sd3():
    return get_dummy_sd3_pipe(seed=0, with_t5=True)


@pytest.fixture(scope="module")
def sd3_without_t5():
    return get_dummy_sd3_pipe(seed=0, with_t5=False)


def _plain_loop(backbone, size, guidance_scale, steps=3, negative=None):
    """The unguided loop on the backbone's pieces only: encode, latents, timesteps, predict + step, decode."""
    height, width = size
    device, scheduler = torch.device("cpu"), backbone.pipe.scheduler
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conditioning = backbone.encode([PROMPT], negative, guidance_scale > 1, device, height, width)
        latents = backbone.prepare_latents(1, height, width, generator, conditioning.embeds.dtype, device)
        timesteps = backbone.set_timesteps(steps, device, backbone.image_seq_len(height, width))
        for t in timesteps:
            noise_pred = backbone.predict(latents, t, conditioning, guidance_scale)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        images, nsfw = backbone.decode(latents, "np", generator, device, torch.float32, height=height, width=width)
    assert nsfw is None
    return images


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["flux_dev", "flux_schnell"])
def test_the_flux_backbone_reproduces_the_flux_pipeline(request, variant, size):
    """Distilled guidance (dev) or none (schnell): the plain loop equals FluxPipeline to 1e-4."""
    pipe = request.getfixturevalue(variant)
    height, width = size
    expected = pipe(PROMPT, num_inference_steps=3, guidance_scale=3.5, height=height, width=width,
                    max_sequence_length=T5_LENGTH, generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    images = _plain_loop(FluxBackbone(pipe, max_sequence_length=T5_LENGTH), size, guidance_scale=3.5)
    assert images.shape == (1, height, width, 3)
    assert abs(images - expected).max() <= 1e-4


def test_the_flux_backbone_reproduces_true_cfg(flux_dev):
    expected = flux_dev(PROMPT, negative_prompt="blurry", true_cfg_scale=2.0, num_inference_steps=3, height=32,
                        width=48, max_sequence_length=T5_LENGTH, generator=torch.Generator().manual_seed(0),
                        output_type="np").images  # fmt: skip
    backbone = FluxBackbone(flux_dev, max_sequence_length=T5_LENGTH, true_cfg_scale=2.0)
    images = _plain_loop(backbone, (32, 48), guidance_scale=3.5, negative=["blurry"])
    assert abs(images - expected).max() <= 1e-4
    without = _plain_loop(FluxBackbone(flux_dev, max_sequence_length=T5_LENGTH), (32, 48), guidance_scale=3.5)
    assert abs(images - without).max() > 1e-3  # true CFG really ran


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["sd3", "sd3_without_t5"])
def test_the_sd3_backbone_reproduces_the_sd3_pipeline(request, variant, size):
    """Batched real CFG, with and without T5: the plain loop equals StableDiffusion3Pipeline to 1e-4."""
    pipe = request.getfixturevalue(variant)
    height, width = size
    expected = pipe(PROMPT, num_inference_steps=3, guidance_scale=5.0, height=height, width=width,
                    max_sequence_length=T5_LENGTH, generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    images = _plain_loop(SD3Backbone(pipe, max_sequence_length=T5_LENGTH), size, guidance_scale=5.0)
    assert images.shape == (1, height, width, 3)
    assert abs(images - expected).max() <= 1e-4


def test_backbone_for_tells_flux_and_sd3_apart(flux_dev, flux_schnell, sd3, sd3_without_t5):
    assert isinstance(backbone_for(flux_dev), FluxBackbone) and isinstance(backbone_for(flux_schnell), FluxBackbone)
    assert isinstance(backbone_for(sd3), SD3Backbone) and isinstance(backbone_for(sd3_without_t5), SD3Backbone)
    assert backbone_for(flux_dev).native_size == (256, 256)  # default_sample_size 128 x VAE factor 2
    assert backbone_for(sd3).native_size == (32, 32)  # the transformer's sample_size 16 x VAE factor 2


def test_sizes_that_do_not_pack_are_a_clear_error(flux_dev, sd3):
    with pytest.raises(ValueError, match=r"multiples of 4 .*2x2 latent packing.*got 30x32; use 28x32"):
        FluxBackbone(flux_dev).prepare_latents(1, 30, 32, None, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"multiples of 4 .*patch.*got 32x34"):
        SD3Backbone(sd3).encode([PROMPT], None, True, torch.device("cpu"), 32, 34)
    with pytest.raises(ValueError, match="at most 512"):
        FluxBackbone(flux_dev, max_sequence_length=1024)


@pytest.mark.parametrize("variant", ["flux_schnell", "sd3_without_t5"])
def test_load_stable_diffusion_loads_flux_and_sd3_folders(request, variant, tmp_path):
    """model_index.json's FluxPipeline / StableDiffusion3Pipeline load, and reproduce the saved pipeline."""
    from scenewright.synth.loading import load_stable_diffusion

    pipe = request.getfixturevalue(variant)
    pipe.save_pretrained(tmp_path)
    # A folder without T5 loads as diffusers documents it: the missing slots passed as None.
    without_t5 = {"text_encoder_3": None, "tokenizer_3": None} if variant == "sd3_without_t5" else {}
    loaded = load_stable_diffusion(str(tmp_path), **without_t5)
    assert type(loaded) is type(pipe) and type(backbone_for(loaded)) is type(backbone_for(pipe))
    kwargs = dict(num_inference_steps=2, height=32, width=32, max_sequence_length=T5_LENGTH, output_type="np")
    expected = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert abs(loaded(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images - expected).max() <= 1e-6
