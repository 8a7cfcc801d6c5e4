"""The backbones the one denoising loop drives: SD 1.x/2.x (and GLIGEN), SDXL, FLUX.1 and SD3/SD3.5.

The loop (:meth:`scenewright.synth.pipeline.Synthesizer.generate`) asks its backbone for every step that differs,
each done exactly as the backbone's own diffusers pipeline does it, so that the unguided loop reproduces it:

- :meth:`encode`: the prompts -> a :class:`Conditioning` (the UNet's text inputs for the classifier-free-guidance
  batch and for the conditional-only guidance forward; SDXL adds its pooled text embedding and time ids) or a
  :class:`JointConditioning` (the MM-DiTs' T5/CLIP tokens and pooled CLIP vector);
- :meth:`set_timesteps`: the scheduler's timesteps (FLUX and SD3: flow-matching sigmas, shifted by ``mu`` from the
  image's token count where the pipeline computes it);
- :meth:`prepare_latents`: the initial noise (FLUX packs 2x2 latent patches into tokens, (B, h * w, 4C));
- :meth:`predict`: one step's noise or velocity prediction (SD/SDXL's CFG batch and ``guidance_rescale``, FLUX's
  distilled guidance embedding or true CFG, SD3's batched CFG); the loop then runs ``scheduler.step``;
- :meth:`decode`: final latents -> images (SD runs its safety checker; SDXL upcasts an fp16 VAE and may watermark;
  FLUX unpacks);
- :meth:`check_size`, :meth:`latent_grid`, :attr:`native_size`, :attr:`model` (the UNet or transformer);
- :meth:`latent_cells` / :meth:`cells_to_latents`: the (B, C, h, w) grid LMD's composition moves latents on
  (:mod:`scenewright.synth.composition`; FLUX's packed tokens as their token grid, the others' latents as they are);
- the MM-DiTs' :attr:`text_length` and :meth:`phrase_token_spans`: the text tokens the transformer reads, and
  which of a phrase's own encoded tokens regional attention appends (:mod:`scenewright.synth.regional_attention`);
- for the guidance engine (:mod:`scenewright.synth.guidance`): :meth:`token_mapping` (each layout object's
  positions among the text keys the model's attention reads: CLIP tokens on SD/SDXL, T5 tokens on FLUX.1, CLIP
  then T5 tokens on SD3) and :meth:`guidance_forward` (the conditional-only forward on fp32 latents); the MM-DiTs
  add :attr:`guidance_blocks` (the blocks whose joint-attention maps guidance reads by default) and
  :meth:`guidance_capture`.

Adding a backbone means one more class here; the loop does not change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from diffusers.utils.torch_utils import randn_tensor

from scenewright.errors import InputError

from .joint_attention import joint_attention_layers, mmdit_guidance_capture
from .maps import MapRequest
from .t5_tokens import t5_token_groups_for_layout, validate_t5_token_indices
from .tokens import TokenMapping, token_groups_for_layout, validate_token_indices


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


def prepare_latents(
    scheduler, shape: tuple[int, ...], generator, device: torch.device, dtype: torch.dtype,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Initial latents (B, C, h, w) exactly as diffusers' ``prepare_latents``: drawn (or given), times init sigma."""
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != tuple(shape):
        raise InputError(f"`latents` has shape {tuple(latents.shape)}, expected {tuple(shape)} for these inputs")
    return latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma


class _UNetBackbone:
    """What SD and SDXL share: the UNet's size check, DDPM-style latents and timesteps, and its CFG step."""

    pipe: Any

    @property
    def model(self):
        """The denoiser the loop calls and the attention processors are installed on."""
        return self.pipe.unet

    @property
    def size_multiple(self) -> int:
        """The VAE's downsampling times the UNet's (2 per level below the top): 64 px for SD 1.x."""
        return self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    def check_size(self, height: int, width: int) -> None:
        """A clear error for a size the UNet's down- and upsampling cannot round-trip."""
        multiple = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value % multiple != 0:
                raise InputError(
                    f"`{name}` must be a multiple of {multiple} for this model (VAE factor x UNet downsampling), "
                    f"got {value}; try {max(multiple, round(value / multiple) * multiple)}"
                )

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """The latents' grid (h, w): the image's size over the VAE's downsampling."""
        return height // self.pipe.vae_scale_factor, width // self.pipe.vae_scale_factor

    def latent_cells(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The latents (B, C, h, w) as the grid composition moves them on: as they are."""
        return latents

    def cells_to_latents(self, cells: torch.Tensor) -> torch.Tensor:
        """:meth:`latent_cells`' inverse (also for (1, 1, h, w) masks): as they are."""
        return cells

    def image_seq_len(self, height: int, width: int) -> int:
        """The number of latent pixels (the UNet's schedulers do not read it; the MM-DiTs' shift by it)."""
        h, w = self.latent_grid(height, width)
        return h * w

    def set_timesteps(self, num_inference_steps: int, device: torch.device, image_seq_len: int) -> torch.Tensor:
        """``StableDiffusionPipeline`` step 4: the scheduler's own timesteps (``image_seq_len`` is unused)."""
        self.pipe.scheduler.set_timesteps(num_inference_steps, device=device)
        return self.pipe.scheduler.timesteps

    def prepare_latents(
        self, batch: int, height: int, width: int, generator, dtype: torch.dtype, device: torch.device,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``StableDiffusionPipeline.prepare_latents``: noise (B, C, H / 8, W / 8) times the init sigma."""
        shape = (batch, self.pipe.unet.config.in_channels, *self.latent_grid(height, width))
        return prepare_latents(self.pipe.scheduler, shape, generator, device, dtype, latents)

    def image_size_of(self, latents: torch.Tensor, height: int | None, width: int | None) -> tuple[int, int]:
        """(height, width) of latents (B, C, h, w); ``height``/``width`` are implied by them (as SD's pipeline)."""
        return int(latents.shape[-2]) * self.pipe.vae_scale_factor, int(latents.shape[-1]) * self.pipe.vae_scale_factor

    def token_mapping(self, prompt: str, phrases: Sequence[str], names: Sequence[str | None] | None,
                      missing: str) -> TokenMapping:  # fmt: skip
        """Each object's positions among the cross-attention keys: the 77 CLIP tokens (0 = <|startoftext|>)."""
        return token_groups_for_layout(self.pipe.tokenizer, prompt, phrases, names=names, missing=missing)

    def check_token_indices(self, prompt: str, indices: Sequence[int]) -> list[int]:
        """A&E-style explicit ``token_indices``: CLIP positions of ``prompt``'s words."""
        return validate_token_indices(self.pipe.tokenizer, prompt, indices)

    def guidance_forward(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: Conditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None,
    ):  # fmt: skip
        """The guided forward: the conditional rows alone through the UNet, fp32 latents cast to its dtype.

        Its output is not read: the capture stores the maps (and may stop the forward after the last one).
        """
        model_input = self.pipe.scheduler.scale_model_input(latents, t).to(self.pipe.unet.dtype)
        return self.pipe.unet(
            model_input, t, **conditioning.unet_kwargs(cond_only=True), cross_attention_kwargs=attention_kwargs,
            return_dict=False,
        )  # fmt: skip

    def predict(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: Conditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None = None, guidance_rescale: float = 0.0,
    ) -> torch.Tensor:  # fmt: skip
        """One classifier-free-guidance noise prediction (Ho & Salimans 2022), as StableDiffusion(XL)Pipeline.

        ``conditioning.embeds`` is (2B, 77, D) ``[uncond, cond]`` when ``guidance_scale > 1``, else (B, 77, D).
        ``guidance_rescale`` > 0 rescales the guided prediction toward the text prediction's std (Lin et al. 2023,
        "Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4), as diffusers does.
        """
        # Lazy: diffusers' pipeline modules load transformers; the backbone module stays light for `--help`.
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

        do_cfg = guidance_scale > 1.0
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
        latent_model_input = self.pipe.scheduler.scale_model_input(latent_model_input, t)
        noise_pred = self.pipe.unet(
            latent_model_input, t, **conditioning.unet_kwargs(), cross_attention_kwargs=attention_kwargs,
            return_dict=False,
        )[0]  # fmt: skip
        if do_cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            if guidance_rescale > 0.0:
                noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=guidance_rescale)
        return noise_pred  # (B, C, h, w)


class StableDiffusionBackbone(_UNetBackbone):
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

    def decode(
        self, latents: torch.Tensor, output_type: str, generator, device: torch.device, dtype: torch.dtype, *,
        height: int | None = None, width: int | None = None,
    ):  # fmt: skip
        """VAE decode, safety checker and post-processing as ``StableDiffusionPipeline.__call__``; (images, nsfw)."""
        vae = self.pipe.vae
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False, generator=generator)[0]
        images, has_nsfw = self.pipe.run_safety_checker(images, device, dtype)
        denormalize = [True] * images.shape[0] if has_nsfw is None else [not n for n in has_nsfw]
        return self.pipe.image_processor.postprocess(images, output_type=output_type, do_denormalize=denormalize), has_nsfw


class StableDiffusionXLBackbone(_UNetBackbone):
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

    def decode(
        self, latents: torch.Tensor, output_type: str, generator, device: torch.device, dtype: torch.dtype, *,
        height: int | None = None, width: int | None = None,
    ):  # fmt: skip
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


@dataclass
class JointConditioning:
    """An MM-DiT's text inputs for one ``generate`` call: T5 (and CLIP) token embeddings and a pooled CLIP vector.

    The rows are the prompts' (conditional); ``negative_*`` are the negative prompts' rows, present only when the
    backbone guides with real CFG (SD3 always with ``do_cfg``; FLUX only for ``true_cfg_scale > 1``).
    """

    embeds: torch.Tensor  # (B, L, D): FLUX: T5 tokens (L = max_sequence_length); SD3: 77 CLIP + T5 tokens
    pooled: torch.Tensor  # (B, P): the pooled CLIP embedding(s)
    negative_embeds: torch.Tensor | None = None  # (B, L, D)
    negative_pooled: torch.Tensor | None = None  # (B, P)
    text_ids: torch.Tensor | None = None  # FLUX: (L, 3) RoPE positions of the text tokens (all zeros)
    image_ids: torch.Tensor | None = None  # FLUX: (h * w, 3) RoPE positions (0, row, column) of the image tokens


class _FlowTransformerBackbone:
    """What FLUX and SD3 share: native size, the size check, the image-token grid and the guided forward."""

    size_reason: ClassVar[str]  # why sizes must be multiples of :attr:`size_multiple`, for the error message
    display_name: ClassVar[str]  # the model's name in error messages
    first_prompt_key: ClassVar[int]  # the first text key that is a prompt token (maps.AttentionMaps.first_prompt_key)

    pipe: Any

    @property
    def model(self):
        """The denoiser the loop calls and the attention processors are installed on."""
        return self.pipe.transformer

    @property
    def guidance_blocks(self) -> tuple[int, ...]:
        """The joint-attention blocks guidance reads by default: the first third, in execution order.

        Zhang et al. 2025 ("Hierarchical and Step-Layer-Wise Tuning of Attention Specialty for Multi-Instance
        Synthesis in Diffusion Transformers", arXiv:2504.10148) find on FLUX and SD3.5 that the object (instance)
        tokens' text -> image attention dominates the early layers (background in the middle, attributes late), and
        the objects' placement is what the losses steer; the guided forward also stops after the last block read.
        FLUX.1: blocks 0-18 of 57, exactly its 19 dual-stream blocks; SD3 medium: 0-7 of 24; SD3.5 large: 0-12
        of 38. Override per call with the engine option ``mmdit_blocks``.
        """
        return tuple(range(math.ceil(len(joint_attention_layers(self.model)) / 3)))

    def guidance_capture(self, requests: Sequence[MapRequest], grid: tuple[int, int], blocks: Sequence[int] | None):
        """The capture of the maps the methods request, read from ``blocks`` (None: :attr:`guidance_blocks`)."""
        blocks = self.guidance_blocks if blocks is None else blocks
        return mmdit_guidance_capture(self.model, requests, blocks, grid, self.first_prompt_key,
                                      model=f"this {self.display_name} transformer")  # fmt: skip

    def guidance_forward(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None,
    ):  # fmt: skip
        """The guided forward: the prompts' rows alone (no CFG batch) on fp32 latents cast to the model's dtype.

        FLUX's latents are packed (B, h*w, 4C) and are fed as they are; its output is not read (the capture stores
        the maps and stops the forward after the last block read).
        """
        kwargs = self.transformer_kwargs(latents.to(self.model.dtype), t, conditioning, guidance_scale)
        return self.model(**kwargs, joint_attention_kwargs=attention_kwargs)

    def image_size_of(self, latents: torch.Tensor, height: int | None, width: int | None) -> tuple[int, int]:
        """(height, width) in pixels of ``latents``, checked against the ``height``/``width`` given (if any)."""
        raise NotImplementedError

    def transformer_kwargs(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        negative: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Keyword arguments of one ``transformer(...)`` forward; each backbone's own."""
        raise NotImplementedError

    @property
    def native_size(self) -> tuple[int, int]:
        side = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return side, side

    def _given_latents(self, latents: torch.Tensor, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
        """Latents the caller passed, used as given (as the pipelines do) once their shape is checked."""
        if tuple(latents.shape) != shape:
            raise InputError(f"`latents` has shape {tuple(latents.shape)}, expected {shape} for these inputs")
        return latents.to(device=device, dtype=dtype)

    def predict(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None = None, guidance_rescale: float = 0.0,
    ) -> torch.Tensor:  # fmt: skip
        """One step's velocity as the pipeline's loop (:meth:`velocity`).

        ``attention_kwargs`` go to the attention processors (diffusers' ``joint_attention_kwargs``).
        ``guidance_rescale`` corrects an epsilon-prediction CFG; the flow pipelines have no such option.
        """
        if guidance_rescale:
            raise InputError(
                f"`guidance_rescale` is for SD/SDXL's noise prediction; FLUX and SD3 pipelines have none, got "
                f"{guidance_rescale!r}; leave it at 0"
            )
        return self.velocity(latents, t, conditioning, guidance_scale, attention_kwargs)

    def velocity(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None,
    ) -> torch.Tensor:  # fmt: skip
        """The flow velocity, as latents' shape, computed as the backbone's pipeline does; each backbone's own."""
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        """16 px for FLUX.1 and SD3: the VAE's 8x downsampling times one 2x2 token patch."""
        return self.pipe.vae_scale_factor * self.token_patch

    @property
    def token_patch(self) -> int:
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """A clear error for a size the backbone cannot draw exactly (FLUX's pipeline would silently resize)."""
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise InputError(
                f"`height` and `width` must be multiples of {multiple} ({self.size_reason}), got {height}x{width}; "
                f"use {height - height % multiple or multiple}x{width - width % multiple or multiple}"
            )

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """The image tokens' grid (h, w): one token per 2x2 patch of latents."""
        return height // self.size_multiple, width // self.size_multiple

    def image_seq_len(self, height: int, width: int) -> int:
        """The number of image tokens, from which FLUX (and SD3 with dynamic shifting) shift the sigmas."""
        h, w = self.latent_grid(height, width)
        return h * w

    def latent_cells(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The latents as the (B, C, h, w) grid composition moves them on: SD3's (B, C, H / 8, W / 8) as they are."""
        return latents

    def cells_to_latents(self, cells: torch.Tensor) -> torch.Tensor:
        """:meth:`latent_cells`' inverse (also for (1, 1, h, w) masks): as they are."""
        return cells


class FluxBackbone(_FlowTransformerBackbone):
    """FLUX.1 [dev] / [schnell]: CLIP pooled + T5 tokens, packed 2x2 latents with RoPE ids (``FluxPipeline.__call__``).

    ``guidance_scale`` (in :meth:`predict`) is FLUX.1-dev's distilled guidance, fed to the transformer's guidance
    embedding; schnell has none and ignores it. Real CFG (two forwards) runs only for ``true_cfg_scale > 1`` with
    negative prompts, as ``FluxPipeline``. ``max_sequence_length`` is the T5 length (512 for dev, 256 for schnell).
    """

    name: ClassVar[str] = "flux"
    display_name: ClassVar[str] = "FLUX.1"
    default_guidance_scale: ClassVar[float] = 3.5  # FluxPipeline's distilled guidance
    size_reason: ClassVar[str] = "the VAE's downsampling x FLUX's 2x2 latent packing"
    first_prompt_key: ClassVar[int] = 0  # the text keys are T5's tokens alone: no start token

    def __init__(self, pipe, max_sequence_length: int = 512, true_cfg_scale: float = 1.0):
        if max_sequence_length > 512:
            raise InputError(f"`max_sequence_length` is at most 512 (FLUX's T5 length), got {max_sequence_length}")
        self.pipe = pipe
        self.max_sequence_length = max_sequence_length
        self.true_cfg_scale = true_cfg_scale

    @property
    def token_patch(self) -> int:
        return 2  # FLUX packs 2x2 latent pixels into one token (the transformer's patch_size is 1)

    @property
    def text_length(self) -> int:
        """The text tokens the transformer reads for a prompt: the T5 length."""
        return self.max_sequence_length

    def phrase_token_spans(self, phrases: list[str]) -> dict[str, slice]:
        """Where phrases encoded alone (:meth:`encode`) have their tokens: the longest's T5 pieces through ``</s>``."""
        length = max(len(ids) for ids in self.pipe.tokenizer_2(list(phrases)).input_ids)
        return {"T5": slice(0, min(length, self.max_sequence_length))}

    def latent_cells(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Packed latents (B, h * w, 4C) as their token grid (B, 4C, h, w) (``_pack_latents``' token order).

        Composition moves whole tokens on it: each 2x2 latent patch stays the patch the transformer reads, and the
        cells are the image tokens regional attention and the joint-attention maps address.
        """
        h, w = self.latent_grid(height, width)
        return latents.transpose(1, 2).unflatten(-1, (h, w))

    def cells_to_latents(self, cells: torch.Tensor) -> torch.Tensor:
        """:meth:`latent_cells`' inverse: (B, 4C, h, w) -> packed (B, h * w, 4C); a (1, 1, h, w) mask: (1, h * w, 1)."""
        return cells.flatten(2).transpose(1, 2)

    def token_mapping(self, prompt: str, phrases: Sequence[str], names: Sequence[str | None] | None,
                      missing: str) -> TokenMapping:  # fmt: skip
        """Each object's positions among the joint attention's text keys: FLUX's T5 tokens (0 = first piece).

        The pooled CLIP vector is not a key (it modulates the blocks), so the T5 tokens are all the text there is.
        """
        return t5_token_groups_for_layout(self.pipe.tokenizer, self.pipe.tokenizer_2, prompt, phrases,
                                          max_length=self.max_sequence_length, names=names, missing=missing)  # fmt: skip

    def check_token_indices(self, prompt: str, indices: Sequence[int]) -> list[int]:
        """A&E-style explicit ``token_indices``: T5 positions of ``prompt``'s pieces (0 = first piece)."""
        return validate_t5_token_indices(self.pipe.tokenizer_2, prompt, indices, self.max_sequence_length)

    def image_size_of(self, latents: torch.Tensor, height: int | None, width: int | None) -> tuple[int, int]:
        """Packed latents (B, h*w, 4C) do not say their grid: ``height`` and ``width`` must be given and fit."""
        if height is None or width is None:
            raise InputError("FLUX's packed latents (B, h*w, 4C) do not say the image's size; pass `height` and `width`")
        self.check_size(height, width)
        if latents.shape[1] != self.image_seq_len(height, width):
            raise InputError(f"`latents` has {latents.shape[1]} image tokens but {height}x{width} px has "
                             f"{self.image_seq_len(height, width)}; pass the size the latents were drawn at")  # fmt: skip
        return height, width

    def encode(
        self, prompts: list[str], negative_prompts: list[str] | None, do_cfg: bool, device: torch.device,
        height: int, width: int,
    ) -> JointConditioning:  # fmt: skip
        """``FluxPipeline.encode_prompt`` (and for true CFG the negative prompts'); image ids for ``height x width``.

        ``do_cfg`` is not FLUX's switch: FLUX.1 is guidance-distilled; real CFG needs ``true_cfg_scale > 1``.
        """
        self.check_size(height, width)
        pipe = self.pipe
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )  # fmt: skip
        negative_embeds = negative_pooled = None
        if self.true_cfg_scale > 1 and negative_prompts is not None:
            negative_embeds, negative_pooled, _ = pipe.encode_prompt(
                prompt=negative_prompts, prompt_2=None, device=device, num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )  # fmt: skip
        h, w = self.latent_grid(height, width)
        image_ids = pipe._prepare_latent_image_ids(len(prompts), h, w, device, embeds.dtype)
        return JointConditioning(embeds, pooled, negative_embeds, negative_pooled, text_ids, image_ids)

    def prepare_latents(
        self, batch: int, height: int, width: int, generator, dtype: torch.dtype, device: torch.device,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``FluxPipeline.prepare_latents``: noise drawn as (B, C, 2h, 2w), packed to (B, h * w, 4C) tokens."""
        self.check_size(height, width)
        if latents is not None:
            shape = (batch, self.image_seq_len(height, width), self.pipe.transformer.config.in_channels)
            return self._given_latents(latents, shape, dtype, device)
        channels = self.pipe.transformer.config.in_channels // 4
        latents, _ = self.pipe.prepare_latents(batch, channels, height, width, dtype, device, generator)
        return latents  # (B, h * w, 4C); the image ids are the conditioning's (same height and width)

    def set_timesteps(self, num_inference_steps: int, device: torch.device, image_seq_len: int) -> torch.Tensor:
        """``FluxPipeline`` step 5: sigmas 1 -> 1/N, shifted by ``mu`` (linear in the token count) when dynamic."""
        # Lazy: diffusers' pipeline modules load transformers; the backbone module stays light for `--help`.
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        scheduler = self.pipe.scheduler
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = calculate_shift(
            image_seq_len,
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        return timesteps

    def transformer_kwargs(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        negative: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Keyword arguments of one ``transformer(...)`` forward on the prompts' (or ``negative``) rows."""
        batch = latents.shape[0]
        guidance = None
        if self.pipe.transformer.config.guidance_embeds:
            guidance = torch.full([1], guidance_scale, device=latents.device, dtype=torch.float32).expand(batch)
        return {
            "hidden_states": latents,
            "timestep": t.expand(batch).to(latents.dtype) / 1000,
            "guidance": guidance,
            "pooled_projections": conditioning.negative_pooled if negative else conditioning.pooled,
            "encoder_hidden_states": conditioning.negative_embeds if negative else conditioning.embeds,
            "txt_ids": conditioning.text_ids,
            "img_ids": conditioning.image_ids,
            "return_dict": False,
        }

    def velocity(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None,
    ) -> torch.Tensor:  # fmt: skip
        """``FluxPipeline``'s loop: distilled guidance; true CFG when negatives were encoded."""
        transformer = self.pipe.transformer
        kwargs = self.transformer_kwargs(latents, t, conditioning, guidance_scale)
        noise_pred = transformer(**kwargs, joint_attention_kwargs=attention_kwargs)[0]
        if conditioning.negative_embeds is not None:
            kwargs = self.transformer_kwargs(latents, t, conditioning, guidance_scale, negative=True)
            negative = transformer(**kwargs, joint_attention_kwargs=attention_kwargs)[0]
            noise_pred = negative + self.true_cfg_scale * (noise_pred - negative)
        return noise_pred  # (B, h * w, 4C)

    def decode(
        self, latents: torch.Tensor, output_type: str, generator, device: torch.device, dtype: torch.dtype, *,
        height: int, width: int,
    ):  # fmt: skip
        """Unpack, undo the VAE's scaling and shift, decode, post-process, as ``FluxPipeline.__call__``; (images, None).

        Packed latents (B, h * w, 4C) do not say their grid, so FLUX's decode takes the image's ``height``/``width``.
        """
        pipe, vae = self.pipe, self.pipe.vae
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)  # (B, C, 2h, 2w)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return pipe.image_processor.postprocess(images, output_type=output_type), None


#: The transformer inputs with one row per sample: concatenated [negative, prompt] for SD3's batched CFG.
TRANSFORMER_BATCH_KEYS = ("hidden_states", "timestep", "encoder_hidden_states", "pooled_projections")


class SD3Backbone(_FlowTransformerBackbone):
    """SD3 / SD3.5: two CLIPs (pooled and tokens) + T5 tokens, batched real CFG (``StableDiffusion3Pipeline.__call__``).

    ``text_encoder_3=None`` (no T5) is allowed as diffusers allows it: the T5 rows are zeros. ``max_sequence_length``
    is the T5 length (256 in the pipeline); the transformer reads 77 CLIP tokens, then the T5 tokens.
    """

    name: ClassVar[str] = "sd3"
    display_name: ClassVar[str] = "SD3"
    default_guidance_scale: ClassVar[float] = 7.0  # StableDiffusion3Pipeline's
    size_reason: ClassVar[str] = "the VAE's downsampling x SD3's 2x2 patch embedding"
    first_prompt_key: ClassVar[int] = 1  # the text keys start with CLIP's <|startoftext|>

    def __init__(self, pipe, max_sequence_length: int = 256):
        if max_sequence_length > 512:
            raise InputError(f"`max_sequence_length` is at most 512 (SD3's T5 length), got {max_sequence_length}")
        self.pipe = pipe
        self.max_sequence_length = max_sequence_length

    @property
    def token_patch(self) -> int:
        return self.pipe.patch_size  # the transformer's patch embedding: 2 in SD3 and SD3.5

    @property
    def text_length(self) -> int:
        """The text tokens the transformer reads for a prompt: 77 CLIP tokens, then the T5 length."""
        return self.pipe.tokenizer_max_length + self.max_sequence_length

    def phrase_token_spans(self, phrases: list[str]) -> dict[str, slice]:
        """Where phrases encoded alone (:meth:`encode`) have their tokens: the longest's CLIP tokens through its
        end-of-text token, then (with T5; without, its rows are zeros) its T5 pieces through ``</s>``."""
        clip_length = self.pipe.tokenizer_max_length
        clip = min(max(len(ids) for ids in self.pipe.tokenizer(list(phrases)).input_ids), clip_length)
        spans = {"CLIP": slice(0, clip)}
        if self.pipe.text_encoder_3 is not None:
            t5 = max(len(ids) for ids in self.pipe.tokenizer_3(list(phrases)).input_ids)
            spans["T5"] = slice(clip_length, clip_length + min(t5, self.max_sequence_length))
        return spans

    def token_mapping(self, prompt: str, phrases: Sequence[str], names: Sequence[str | None] | None,
                      missing: str) -> TokenMapping:  # fmt: skip
        """Each object's positions among the joint attention's text keys: its CLIP tokens, then its T5 tokens.

        SD3's context is 77 CLIP tokens (both CLIPs' features side by side, token by token, so one position per
        token, 0 = <|startoftext|>) followed by the T5 tokens (position 77 + i). The image reads both, so an object
        is grounded on both: its CLIP positions, and with T5 loaded its T5 positions too; without T5 the T5 rows
        are zeros, which ground nothing. A&E-style methods excite each group's last token, the T5 piece when
        there is one.
        """
        clip = token_groups_for_layout(self.pipe.tokenizer, prompt, phrases, names=names, missing=missing)
        if self.pipe.text_encoder_3 is None:
            return clip
        t5 = t5_token_groups_for_layout(
            self.pipe.tokenizer, self.pipe.tokenizer_3, prompt, phrases, max_length=self.max_sequence_length,
            names=names, missing=missing, offset=self.pipe.tokenizer_max_length,
        )  # fmt: skip
        return replace(clip, token_groups=[c + t for c, t in zip(clip.token_groups, t5.token_groups)])

    def check_token_indices(self, prompt: str, indices: Sequence[int]) -> list[int]:
        """A&E-style explicit ``token_indices``: CLIP positions of ``prompt``'s words (the context's first 77)."""
        return validate_token_indices(self.pipe.tokenizer, prompt, indices)

    def image_size_of(self, latents: torch.Tensor, height: int | None, width: int | None) -> tuple[int, int]:
        """(height, width) of latents (B, C, H / 8, W / 8)."""
        size = tuple(int(n) * self.pipe.vae_scale_factor for n in latents.shape[-2:])
        if (height, width) not in ((None, None), size):
            raise InputError(f"`latents` are {size[0]}x{size[1]} px, not the `height`x`width` given ({height}x{width})")
        self.check_size(*size)
        return size  # type: ignore[return-value]

    def encode(
        self, prompts: list[str], negative_prompts: list[str] | None, do_cfg: bool, device: torch.device,
        height: int, width: int,
    ) -> JointConditioning:  # fmt: skip
        """``StableDiffusion3Pipeline.encode_prompt``: the prompts' rows, and the negative ones with ``do_cfg``."""
        self.check_size(height, width)
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, negative_prompt=negative_prompts,
            do_classifier_free_guidance=do_cfg, device=device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )  # fmt: skip
        return JointConditioning(embeds, pooled, negative, negative_pooled)

    def prepare_latents(
        self, batch: int, height: int, width: int, generator, dtype: torch.dtype, device: torch.device,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``StableDiffusion3Pipeline.prepare_latents``: noise (B, C, H / 8, W / 8)."""
        self.check_size(height, width)
        channels = self.pipe.transformer.config.in_channels
        if latents is not None:
            scale = self.pipe.vae_scale_factor
            return self._given_latents(latents, (batch, channels, height // scale, width // scale), dtype, device)
        return self.pipe.prepare_latents(batch, channels, height, width, dtype, device, generator)

    def set_timesteps(self, num_inference_steps: int, device: torch.device, image_seq_len: int) -> torch.Tensor:
        """``StableDiffusion3Pipeline`` step 5: the scheduler's shifted sigmas; ``mu`` only with dynamic shifting."""
        # Lazy: diffusers' pipeline modules load transformers; the backbone module stays light for `--help`.
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
            calculate_shift,
            retrieve_timesteps,
        )

        scheduler = self.pipe.scheduler
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", None):
            kwargs["mu"] = calculate_shift(
                image_seq_len,
                scheduler.config.get("base_image_seq_len", 256),
                scheduler.config.get("max_image_seq_len", 4096),
                scheduler.config.get("base_shift", 0.5),
                scheduler.config.get("max_shift", 1.16),
            )
        timesteps, _ = retrieve_timesteps(scheduler, num_inference_steps, device, **kwargs)
        return timesteps

    def transformer_kwargs(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float = 1.0,
        negative: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Keyword arguments of one ``transformer(...)`` forward on the prompts' (or ``negative``) rows.

        As :meth:`FluxBackbone.transformer_kwargs`; SD3 has no guidance embedding, so ``guidance_scale`` is unused.
        """
        embeds = conditioning.negative_embeds if negative else conditioning.embeds
        pooled = conditioning.negative_pooled if negative else conditioning.pooled
        return {
            "hidden_states": latents,
            "timestep": t.expand(latents.shape[0]),
            "encoder_hidden_states": embeds,
            "pooled_projections": pooled,
            "return_dict": False,
        }

    def velocity(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: JointConditioning, guidance_scale: float,
        attention_kwargs: dict[str, Any] | None,
    ) -> torch.Tensor:  # fmt: skip
        """``StableDiffusion3Pipeline``'s loop: one batched [negative, prompt] forward, then CFG."""
        transformer = self.pipe.transformer
        positive = self.transformer_kwargs(latents, t, conditioning)
        if conditioning.negative_embeds is None:
            return transformer(**positive, joint_attention_kwargs=attention_kwargs)[0]
        negative = self.transformer_kwargs(latents, t, conditioning, negative=True)
        batched = {key: torch.cat([negative[key], positive[key]]) for key in TRANSFORMER_BATCH_KEYS}
        uncond, cond = transformer(**{**positive, **batched}, joint_attention_kwargs=attention_kwargs)[0].chunk(2)
        return uncond + guidance_scale * (cond - uncond)  # (B, C, H / 8, W / 8)

    def decode(
        self, latents: torch.Tensor, output_type: str, generator, device: torch.device, dtype: torch.dtype, *,
        height: int | None = None, width: int | None = None,
    ):  # fmt: skip
        """Undo the VAE's scaling and shift, decode, post-process, as ``StableDiffusion3Pipeline``; (images, None)."""
        vae = self.pipe.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(images, output_type=output_type), None


def backbone_for(pipe, **options) -> StableDiffusionBackbone | StableDiffusionXLBackbone | FluxBackbone | SD3Backbone:
    """The backbone of a loaded diffusers pipeline: by its component slots (SD3, FLUX, SDXL, else SD).

    ``options`` go to the backbone's constructor (e.g. FLUX's ``max_sequence_length`` or ``true_cfg_scale``).
    """
    components = getattr(pipe, "components", {})
    if "text_encoder_3" in components:
        return SD3Backbone(pipe, **options)
    if "transformer" in components and "text_encoder_2" in components:
        return FluxBackbone(pipe, **options)
    if "text_encoder_2" in components:
        if getattr(pipe, "text_encoder", None) is None:
            raise InputError(
                "this SDXL pipeline has no first text encoder: it is the refiner "
                "(stabilityai/stable-diffusion-xl-refiner-1.0), which only denoises the last steps of an image; "
                "load the base model (stabilityai/stable-diffusion-xl-base-1.0) and, if you want, refine its output "
                "with StableDiffusionXLImg2ImgPipeline as a second stage"
            )
        return StableDiffusionXLBackbone(pipe, **options)
    return StableDiffusionBackbone(pipe, **options)

