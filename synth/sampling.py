"""The plain denoising pieces every loop of scenewright shares, each as diffusers' ``StableDiffusionPipeline``.

:meth:`scenewright.synth.pipeline.Synthesizer.generate` is built from them (with step controllers around
the CFG step), and so is :func:`sample_unguided`, the plain loop latent composition
(:mod:`scenewright.synth.composition`) draws its objects with.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor

from .backbones import Conditioning


def make_generators(seed: int | Sequence[int] | None, batch: int) -> torch.Generator | list[torch.Generator] | None:
    """CPU generators drawing exactly as diffusers does: one for ``seed=s``, one per sample for a list."""
    if seed is None:
        return None
    if isinstance(seed, (int, np.integer)):
        return torch.Generator("cpu").manual_seed(int(seed))
    seeds = list(seed)
    if len(seeds) != batch:
        raise ValueError(f"`seed` has {len(seeds)} values for {batch} images; give one seed per image or a single int")
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def prepare_latents(
    scheduler, shape: tuple[int, ...], generator, device: torch.device, dtype: torch.dtype,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Initial latents (B, C, h, w) exactly as diffusers' ``prepare_latents``: drawn (or given), times init sigma."""
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != tuple(shape):
        raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {tuple(shape)} for these inputs")
    return latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma


def extra_step_kwargs(scheduler, generator, eta: float) -> dict[str, Any]:
    """eta/generator only for schedulers whose ``step`` takes them (diffusers' prepare_extra_step_kwargs)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def cfg_step(
    unet,
    scheduler,
    latents: torch.Tensor,
    t: torch.Tensor,
    conditioning: Conditioning,
    guidance_scale: float,
    cross_attention_kwargs: dict[str, Any] | None,
    step_kwargs: dict[str, Any],
    guidance_rescale: float = 0.0,
) -> torch.Tensor:
    """One classifier-free-guidance denoising step (Ho & Salimans 2022), as StableDiffusion(XL)Pipeline (no grad).

    ``conditioning.embeds`` is (2B, 77, D) ``[uncond, cond]`` when ``guidance_scale > 1``, else (B, 77, D).
    ``guidance_rescale`` > 0 rescales the guided prediction toward the text prediction's std (Lin et al. 2023,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4), as diffusers does.
    """
    do_cfg = guidance_scale > 1.0
    latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
    latent_model_input = scheduler.scale_model_input(latent_model_input, t)
    noise_pred = unet(
        latent_model_input, t, **conditioning.unet_kwargs(),
        cross_attention_kwargs=cross_attention_kwargs, return_dict=False,
    )[0]  # fmt: skip
    if do_cfg:
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        if guidance_rescale > 0.0:
            noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=guidance_rescale)
    return scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]


def decode_latents(backbone, latents: torch.Tensor, output_type: str, generator, device, dtype) -> tuple[Any, list | None]:
    """(images, nsfw flags) from final latents, decoded and post-processed as the backbone's pipeline does."""
    if output_type == "latent":
        return latents, None
    return backbone.decode(latents, output_type, generator, device, dtype)


@dataclass
class UnguidedSample:
    """What :func:`sample_unguided` drew: final latents, the latents at each step's start, decoded images."""

    latents: torch.Tensor  # (B, C, h, w)
    trajectory: list[torch.Tensor]  # per step: (B, C, h, w) at the step's start
    images: Any  # as ``output_type``: np.ndarray (B, H, W, 3) in [0, 1], or the latents


@torch.no_grad()
def sample_unguided(
    synthesizer,
    prompts: list[str],
    seeds: Sequence[int],
    *,
    num_inference_steps: int,
    guidance_scale: float | None,
    height: int,
    width: int,
    output_type: str = "latent",
) -> UnguidedSample:
    """One image per prompt and seed, unguided: ``generate(prompts, methods=["none"], seed=seeds)``'s images.

    No layout, no controllers: the plain loop latent composition draws its objects with.
    """
    pipe, unet, scheduler, device = synthesizer.pipe, synthesizer.unet, synthesizer.scheduler, synthesizer.device
    guidance_scale = synthesizer.defaults.guidance_scale if guidance_scale is None else guidance_scale
    generator = make_generators(seeds, len(prompts))
    conditioning = synthesizer.backbone.encode(prompts, None, guidance_scale > 1.0, device, height, width)
    prompt_embeds = conditioning.embeds
    scheduler.set_timesteps(num_inference_steps, device=device)
    vae_scale = pipe.vae_scale_factor
    shape = (len(prompts), unet.config.in_channels, int(height) // vae_scale, int(width) // vae_scale)
    latents = prepare_latents(scheduler, shape, generator, device, prompt_embeds.dtype)
    step_kwargs = extra_step_kwargs(scheduler, generator, 0.0)
    trajectory = []
    with synthesizer._capture([]):  # generate's processors, so a drawing equals generate's bit for bit
        for t in scheduler.timesteps:
            trajectory.append(latents.clone())
            latents = cfg_step(unet, scheduler, latents, t, conditioning, guidance_scale, None, step_kwargs)
    images, _ = decode_latents(synthesizer.backbone, latents, output_type, generator, device, prompt_embeds.dtype)
    pipe.maybe_free_model_hooks()
    return UnguidedSample(latents=latents, trajectory=trajectory, images=images)


__all__ = [
    "UnguidedSample",
    "cfg_step",
    "decode_latents",
    "extra_step_kwargs",
    "make_generators",
    "prepare_latents",
    "sample_unguided",
]
