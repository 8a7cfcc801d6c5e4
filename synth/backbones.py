"""The backbones the one denoising loop drives: what differs between Stable Diffusion 1.x/2.x (and GLIGEN) and SDXL.

The loop (:meth:`scenewright.synth.pipeline.Synthesizer.generate`) asks its backbone three things, each done
exactly as the backbone's own diffusers pipeline does it, so that the unguided loop reproduces that pipeline:

- :meth:`encode`: the prompts -> a :class:`Conditioning`, the UNet's text inputs for the classifier-free-guidance
  batch and for the conditional-only guidance forward (SDXL adds its pooled text embedding and time ids);
- :meth:`decode`: final latents -> images (SD runs its safety checker; SDXL upcasts an fp16 VAE and may watermark);
- :attr:`native_size`: the height and width the model was trained at (512 px for SD 1.x, 1024 px for SDXL).

Adding a UNet backbone means one more class here; the loop, the capture and the losses do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass
class Conditioning:
    """The UNet's text inputs for one ``generate`` call: rows of the CFG batch and of the guided forward."""

    embeds: torch.Tensor  # (2B, 77, D) = [uncond, cond] with classifier-free guidance, else (B, 77, D)
    cond_embeds: torch.Tensor  # (B, 77, D): the guidance forward is conditional only
    added_cond: dict[str, torch.Tensor] | None = None  # SDXL: {"text_embeds": (2B, P), "time_ids": (2B, 6)}
    cond_added_cond: dict[str, torch.Tensor] | None = None  # SDXL: the conditional rows of ``added_cond``

    def unet_kwargs(self, cond_only: bool = False) -> dict[str, Any]:
        """Keyword arguments of ``unet(...)`` for the CFG batch, or (``cond_only``) the conditional rows alone."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.cond_embeds if cond_only else self.embeds}
        added = self.cond_added_cond if cond_only else self.added_cond
        if added is not None:
            kwargs["added_cond_kwargs"] = added
        return kwargs


class StableDiffusionBackbone:
    """SD 1.x/2.x and GLIGEN: one CLIP text encoder, a safety checker (``StableDiffusionPipeline.__call__``)."""

    name: ClassVar[str] = "sd"

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def native_size(self) -> tuple[int, int]:
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return side, side

    def encode(
        self, prompts: list[str], negative_prompts: list[str] | None, do_cfg: bool, device: torch.device,
        height: int, width: int,
    ) -> Conditioning:  # fmt: skip
        """``StableDiffusionPipeline.encode_prompt``; the CFG batch is ``[uncond, cond]`` as in its step 3."""
        embeds, negative = self.pipe.encode_prompt(prompts, device, 1, do_cfg, negative_prompts)
        return Conditioning(torch.cat([negative, embeds]) if do_cfg else embeds, embeds)

    def decode(self, latents: torch.Tensor, output_type: str, generator, device: torch.device, dtype: torch.dtype):
        """VAE decode, safety checker and post-processing as ``StableDiffusionPipeline.__call__``; (images, nsfw)."""
        vae = self.pipe.vae
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False, generator=generator)[0]
        images, has_nsfw = self.pipe.run_safety_checker(images, device, dtype)
        denormalize = [True] * images.shape[0] if has_nsfw is None else [not n for n in has_nsfw]
        return self.pipe.image_processor.postprocess(images, output_type=output_type, do_denormalize=denormalize), has_nsfw


class StableDiffusionXLBackbone:
    """SDXL: two CLIP text encoders, a pooled embedding and time ids (``StableDiffusionXLPipeline.__call__``).

    The UNet's cross-attention reads both encoders' hidden states concatenated along the features, token by
    token, so a phrase's token positions are the same in both and in the maps (both tokenizers are CLIP's BPE).
    ``original_size``, ``crops_coords_top_left`` and ``target_size`` are SDXL's micro-conditioning; None takes
    diffusers' defaults (the output size, (0, 0), the output size).
    """

    name: ClassVar[str] = "sdxl"

    def __init__(
        self, pipe, original_size: tuple[int, int] | None = None, crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
    ):  # fmt: skip
        self.pipe = pipe
        self.original_size = original_size
        self.crops_coords_top_left = tuple(crops_coords_top_left)
        self.target_size = target_size

    @property
    def native_size(self) -> tuple[int, int]:
        side = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return side, side

    def encode(
        self, prompts: list[str], negative_prompts: list[str] | None, do_cfg: bool, device: torch.device,
        height: int, width: int,
    ) -> Conditioning:  # fmt: skip
        """``StableDiffusionXLPipeline`` steps 3 and 7: both encoders, pooled text embeddings, added time ids."""
        pipe = self.pipe
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
            negative_prompt=negative_prompts,
        )  # fmt: skip
        if pipe.text_encoder_2 is None:
            projection_dim = int(pooled.shape[-1])
        else:
            projection_dim = pipe.text_encoder_2.config.projection_dim
        time_ids = pipe._get_add_time_ids(
            self.original_size or (height, width), self.crops_coords_top_left, self.target_size or (height, width),
            dtype=embeds.dtype, text_encoder_projection_dim=projection_dim,
        ).to(device)  # fmt: skip  # (1, 6)
        batch = embeds.shape[0]
        cond_added = {"text_embeds": pooled.to(device), "time_ids": time_ids.repeat(batch, 1)}
        if not do_cfg:
            return Conditioning(embeds, embeds, cond_added, cond_added)
        added = {
            "text_embeds": torch.cat([negative_pooled, pooled]).to(device),
            "time_ids": torch.cat([time_ids, time_ids]).repeat(batch, 1),  # diffusers' order: [neg, pos] * B
        }
        return Conditioning(torch.cat([negative, embeds]), embeds, added, cond_added)

    def decode(self, latents: torch.Tensor, output_type: str, generator, device: torch.device, dtype: torch.dtype):
        """VAE decode as ``StableDiffusionXLPipeline.__call__``: fp16 VAEs upcast, latents' mean/std; (images, None)."""
        pipe, vae = self.pipe, self.pipe.vae
        needs_upcasting = vae.dtype == torch.float16 and vae.config.force_upcast
        if needs_upcasting:
            pipe.upcast_vae()
            latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        if needs_upcasting:
            vae.to(dtype=torch.float16)
        if getattr(pipe, "watermark", None) is not None:
            images = pipe.watermark.apply_watermark(images)
        return pipe.image_processor.postprocess(images, output_type=output_type), None


def backbone_for(pipe) -> StableDiffusionBackbone | StableDiffusionXLBackbone:
    """The backbone of a loaded diffusers pipeline: SDXL when it has a second text encoder slot, else SD."""
    if "text_encoder_2" in getattr(pipe, "components", {}):
        if getattr(pipe, "text_encoder", None) is None:
            raise ValueError(
                "this SDXL pipeline has no first text encoder: it is the refiner "
                "(stabilityai/stable-diffusion-xl-refiner-1.0), which only denoises the last steps of an image; "
                "load the base model (stabilityai/stable-diffusion-xl-base-1.0) and, if you want, refine its output "
                "with StableDiffusionXLImg2ImgPipeline as a second stage"
            )
        return StableDiffusionXLBackbone(pipe)
    return StableDiffusionBackbone(pipe)

