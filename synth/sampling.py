"""The plain denoising pieces every loop of scenewright shares, each as diffusers' ``StableDiffusionPipeline``.

:meth:`scenewright.synth.pipeline.Synthesizer.generate` is built from them (with step controllers around
the denoising step), and so is :func:`sample_unguided`, the plain loop latent composition
(:mod:`scenewright.synth.composition`) draws its objects with.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scenewright.errors import InputError

from .backbones import Conditioning, JointConditioning


def make_generators(seed: int | Sequence[int] | None, batch: int) -> torch.Generator | list[torch.Generator] | None:
    """CPU generators drawing exactly as diffusers does: one for ``seed=s``, one per sample for a list."""
    if seed is None:
        return None
    if isinstance(seed, (int, np.integer)):
        return torch.Generator("cpu").manual_seed(int(seed))
    seeds = list(seed)
    if len(seeds) != batch:
        raise InputError(f"`seed` has {len(seeds)} values for {batch} images; give one seed per image or a single int")
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def extra_step_kwargs(scheduler, generator, eta: float) -> dict[str, Any]:
    """eta/generator only for schedulers whose ``step`` takes them (diffusers' prepare_extra_step_kwargs)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def denoise_step(
    backbone,
    scheduler,
    latents: torch.Tensor,
    t: torch.Tensor,
    conditioning: Conditioning | JointConditioning,
    guidance_scale: float,
    attention_kwargs: dict[str, Any] | None,
    step_kwargs: dict[str, Any],
    guidance_rescale: float = 0.0,
) -> torch.Tensor:
    """One denoising step (no grad): the backbone's prediction (SD/SDXL's CFG, FLUX's, SD3's), the scheduler's step."""
    noise_pred = backbone.predict(latents, t, conditioning, guidance_scale, attention_kwargs, guidance_rescale)
    return scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]


def decode_latents(
    backbone, latents: torch.Tensor, output_type: str, generator, device, dtype, height: int, width: int
) -> tuple[Any, list | None]:
    """(images, nsfw flags) from final latents, decoded and post-processed as the backbone's pipeline does.

    ``height``/``width``: the image's, which FLUX's packed latents (B, h * w, 4C) do not say.
    """
    if output_type == "latent":
        return latents, None
    return backbone.decode(latents, output_type, generator, device, dtype, height=height, width=width)


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
    pipe, backbone, scheduler = synthesizer.pipe, synthesizer.backbone, synthesizer.scheduler
    device = synthesizer.device
    guidance_scale = synthesizer.defaults.guidance_scale if guidance_scale is None else guidance_scale
    generator = make_generators(seeds, len(prompts))
    conditioning = backbone.encode(prompts, None, guidance_scale > 1.0, device, height, width)
    prompt_embeds = conditioning.embeds
    timesteps = backbone.set_timesteps(num_inference_steps, device, backbone.image_seq_len(height, width))
    latents = backbone.prepare_latents(len(prompts), height, width, generator, prompt_embeds.dtype, device)
    step_kwargs = extra_step_kwargs(scheduler, generator, 0.0)
    trajectory = []
    with synthesizer._capture([]):  # generate's processors, so a drawing equals generate's bit for bit
        for t in timesteps:
            trajectory.append(latents.clone())
            latents = denoise_step(backbone, scheduler, latents, t, conditioning, guidance_scale, None, step_kwargs)
    images, _ = decode_latents(backbone, latents, output_type, generator, device, prompt_embeds.dtype, height, width)
    pipe.maybe_free_model_hooks()
    return UnguidedSample(latents=latents, trajectory=trajectory, images=images)


__all__ = [
    "UnguidedSample",
    "decode_latents",
    "denoise_step",
    "extra_step_kwargs",
    "make_generators",
    "sample_unguided",
]
