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
