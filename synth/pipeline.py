"""`Synthesizer`: the one denoising loop of scenewright, with step controllers around its denoising step.

Read :meth:`Synthesizer.generate` top to bottom; its numbered steps follow diffusers'
``StableDiffusionPipeline.__call__``. What differs between SD 1.x/2.x, SDXL, FLUX.1 and SD3 (text encoding,
timesteps, latents, the model's prediction, decoding) is the backbone's (:mod:`scenewright.synth.backbones`).
At each step of the loop (step 7) every step controller (:mod:`scenewright.synth.controllers`) runs its
``before_step``, then its ``guide``, then the backbone's prediction and the scheduler's step follow. With
``methods=["none"]`` and no layout features no controller runs and it reproduces the backbone's pipeline
(``StableDiffusion(XL)Pipeline``, ``FluxPipeline``, ``StableDiffusion3Pipeline``) exactly.

Each feature is one controller, built at step 6.1:

- guidance methods (Attend-and-Excite, Chefer et al. 2023; Attention Refocusing CAR/SAR, Phung et al.
  2024; A-STAR, Agarwal et al. 2023; layout guidance, Chen et al. 2024; BoxDiff, Xie et al. 2023) on A&E's
  schedule or Attention Refocusing's (:mod:`scenewright.synth.guidance`); on FLUX.1 and SD3 their maps are the
  joint attention's text -> image and image <-> image maps of the blocks the engine option ``mmdit_blocks``
  names (default: the backbone's ``guidance_blocks``), the phrases' positions those of the text keys the
  transformer reads (FLUX: T5 tokens; SD3: CLIP then T5 tokens), the gradient step on the latents as they are
  (FLUX: packed) (:mod:`scenewright.synth.joint_attention`);
- GLIGEN's scheduled sampling (Li et al. 2023, :mod:`scenewright.synth.gligen`): step 3.1 turns the layout
  into grounding tokens, and the gated layers are switched off after ``gligen_scheduled_sampling_beta``
  of the steps (then it reproduces ``StableDiffusionGLIGENPipeline``);
- box-confined spatial-temporal control (Wu et al. 2023, :mod:`scenewright.synth.spatial_temporal`), which
  blends each object's phrase into its box in every cross-attention layer (step 4.1); on FLUX.1 and SD3 the same
  ``spatial_temporal=`` is regional attention (Chen et al. 2024, :mod:`scenewright.synth.regional_attention`):
  each phrase's own tokens attend only to the image tokens in its box, and they to it;
- LMD's latent composition (Lian et al. 2024, :mod:`scenewright.synth.composition`), a pre-pass (step 3.2)
  that draws each layout object alone, whose moved latents are pasted into the scene at the start of the
  first steps, guidance waiting until it ends;
- any controller the caller passes (``controllers=[...]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenewright.errors import InputError
from scenewright.layout.schema import Layout

from .attention import CrossAttentionBlend, attention_capture
from .backbones import FluxBackbone, SD3Backbone, backbone_for
from .composition import CompositionOptions, LatentComposition, compose_layout
from .controllers import GligenScheduledSampling, LatentCompositionPaste, StepController, run_guides
from .gligen import check_gligen_unet, fuser_enabled, grounding_kwargs, is_gligen_unet, num_grounding_steps
from .guidance import (
    AttendExciteGuidance,
    GuidanceMeasure,
    GuidancePass,
    RefocusingGuidance,
    StepRecord,
    loss_and_grad,
    mmdit_capture,
    step_sizes,
    update_latents,
)
from .loading import ModelDefaults, load_stable_diffusion, model_defaults
from .maps import GuidanceTargets, downscaled_size
from .methods import RefocusingSchedule
from .recipe import ENGINE_DEFAULTS, ActiveMethod, resolve_methods
from .regional_attention import (
    RegionalAttention,
    box_token_masks,
    regional_conditioning,
    regional_layers,
)
from .sampling import decode_latents, denoise_step, extra_step_kwargs, make_generators
from .spatial_temporal import ClipTuning, SpatialTemporalBlend, SpatialTemporalControl, fixed_schedule


OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class SynthesisOutput:
    """Images plus everything needed to inspect how they were made."""

    images: Any  # list of PIL images | np.ndarray (B, H, W, 3) | torch.Tensor (B, 3, H, W) in [0, 1] | latents
    prompts: list[str]  # the prompts actually encoded (phrases may have been appended, LMD style)
    layouts: list[Layout | None]
    targets: list[GuidanceTargets]
    latents: torch.Tensor | None = None  # final latents (B, C, h, w)
    steps: list[StepRecord] = field(default_factory=list)
    appended_phrases: list[list[str]] = field(default_factory=list)
    nsfw_content_detected: list[bool] | None = None
    spatial_temporal_history: dict[int, list[float]] = field(default_factory=dict)  # step -> CLIP loss per epoch
    trajectory: list[torch.Tensor] = field(default_factory=list)  # return_trajectory: latents at each step's start


class Synthesizer:
    """Text/layout -> image with training-free attention control on a diffusers SD, SDXL, FLUX.1 or SD3 pipeline."""

    def __init__(self, pipe, defaults: ModelDefaults | None = None, **backbone_options: Any):
        denoiser = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
        required = (denoiser, "vae", "text_encoder", "tokenizer", "scheduler", "encode_prompt", "image_processor")
        missing = [name for name in required if getattr(pipe, name, None) is None]
        if missing:
            raise TypeError(
                f"`pipe` lacks {missing}; pass a diffusers StableDiffusionPipeline, StableDiffusionGLIGENPipeline, "
                "StableDiffusionXLPipeline, FluxPipeline or StableDiffusion3Pipeline (or one with the same components)"
            )
        self.pipe = pipe
        #: What differs between SD 1.x/2.x, SDXL, FLUX.1 and SD3: text conditioning, latents, timesteps, the
        #: model's prediction, decoding, native size (:mod:`scenewright.synth.backbones`).
        self.backbone = backbone_for(pipe, **backbone_options)
        if defaults is None:  # what the folder the pipe was loaded from declares (scenewright.json), else SD's
            source = getattr(getattr(pipe, "config", None), "_name_or_path", None)
            defaults = model_defaults(source if source and Path(str(source)).is_dir() else None)
            if self.is_mmdit and defaults == ModelDefaults():  # nothing declared: the pipeline's own guidance scale
                defaults = replace(defaults, guidance_scale=self.backbone.default_guidance_scale)
        if not isinstance(defaults, ModelDefaults):
            raise TypeError(f"`defaults` must be a synth.loading.ModelDefaults, got {defaults!r}")
        #: The model's attention-map size (latent / attention_downscale) and CFG scale when none is given.
        self.defaults = defaults
        self._exit_plans: dict[int, dict] = {}  # id(unet) -> learnt early exits of guidance passes

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipe(cls, pipe, defaults: ModelDefaults | None = None, **backbone_options: Any) -> Synthesizer:
        """Wrap a loaded ``StableDiffusionPipeline``, ``StableDiffusionGLIGENPipeline``, ``StableDiffusionXLPipeline``,
        ``FluxPipeline`` or ``StableDiffusion3Pipeline``.

        Components are shared, not copied. An SDXL refiner (no first text encoder) is refused, naming the base.

        ``defaults`` (:class:`scenewright.synth.loading.ModelDefaults`): the model's default attention-map size and CFG
        scale; None reads what the pipe's folder declares in ``scenewright.json``, else SD's (FLUX: 3.5, SD3: 7.0).
        ``backbone_options`` go to the backbone (:mod:`scenewright.synth.backbones`): FLUX's and SD3's
        ``max_sequence_length`` (the T5 length), FLUX's ``true_cfg_scale``, SDXL's ``original_size``...
        """
        return cls(pipe, defaults=defaults, **backbone_options)

    @classmethod
    def from_pretrained(
        cls,
        model: str = "runwayml/stable-diffusion-v1-5",
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        gligen: bool | None = None,
        defaults: ModelDefaults | None = None,
        backbone_options: Mapping[str, Any] | None = None,
        **kwargs,
    ) -> Synthesizer:
        """Load an SD, SDXL, FLUX.1 or SD3 (or, ``gligen=True``, GLIGEN) checkpoint from a hub id or local folder.

        The pipeline class is the one ``model_index.json`` names (:mod:`scenewright.synth.loading`); a GLIGEN
        request on weights without gated layers is an error naming a GLIGEN checkpoint to load instead.
        ``defaults`` as in :meth:`from_pipe` (a local folder's ``scenewright.json`` is read, e.g. the embedded
        shapes model's). ``backbone_options`` as :meth:`from_pipe`'s (FLUX's and SD3's ``max_sequence_length``, FLUX's
        ``true_cfg_scale``, SDXL's ``original_size``...); ``kwargs`` go to diffusers' ``from_pretrained``.
        """
        pipe = load_stable_diffusion(model, torch_dtype=torch_dtype, device=device, gligen=gligen, **kwargs)
        return cls(pipe, defaults=defaults, **dict(backbone_options or {}))

    @property
    def is_mmdit(self) -> bool:
        """True on FLUX.1 and SD3 (MM-DiT transformers: joint attention, no cross-attention UNet blocks)."""
        return isinstance(self.backbone, (FluxBackbone, SD3Backbone))

    @property
    def unet(self):
        if self.is_mmdit:
            raise AttributeError(f"a {self.backbone.name} pipeline has no UNet; its denoiser is `backbone.model`")
        return self.pipe.unet

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def image_size(self, latents: torch.Tensor | tuple[int, int]) -> tuple[int, int]:
        """(height, width) in pixels of latents (B, C, h, w), or of a latent grid (h, w) (SD and SDXL's latents)."""
        h, w = latents.shape[-2:] if isinstance(latents, torch.Tensor) else latents
        return int(h) * self.pipe.vae_scale_factor, int(w) * self.pipe.vae_scale_factor

    # ------------------------------------------------------------------ the loop
    @torch.no_grad()
    def generate(
        self,
        layout_or_prompt: Layout | str | Sequence[Layout | str],
        methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("none",),
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        seed: int | Sequence[int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int = 1,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback: Callable[[int, int, StepRecord | None], None] | None = None,
        token_indices: Sequence[int] | Sequence[Sequence[int]] | None = None,
        missing_phrases: str = "append",
        cross_attention_kwargs: dict[str, Any] | None = None,
        gligen: bool | None = None,
        gligen_scheduled_sampling_beta: float = 0.3,
        spatial_temporal: SpatialTemporalControl | bool | None = None,
        composition: CompositionOptions | bool | None = None,
        return_trajectory: bool = False,
        controllers: Sequence[StepController] = (),
        guidance_rescale: float = 0.0,
        **method_options: Any,
    ) -> SynthesisOutput:
        """Generate ``batch_size`` images per layout/prompt, guided by ``methods`` (any combination).

        ``methods`` names come from :data:`scenewright.synth.methods.METHODS`; give per-method options either as
        keyword arguments (sent to every active method that has an option of that name, plus the
        engine options ``max_iter_to_alter``, ``thresholds``, ``scale_factor``, ``max_refinement_steps``)
        or as ``methods={"car": {...}, "sar": {...}}``. ``guidance_scale=None`` takes the model's declared
        default (:class:`scenewright.synth.loading.ModelDefaults`: 7.5 for SD, 2.0 for the shapes model).
        ``seed=s`` draws the initial latents exactly as diffusers does with
        ``generator=torch.Generator("cpu").manual_seed(s)``; ``seed=[s0, s1, ...]`` gives one generator
        per image so that a batch equals the same images made one by one.
        ``callback(step, total, record)`` runs after every step (``record`` is the step's
        :class:`StepRecord`, None for unguided steps). A&E users keep diffusers' names:
        ``token_indices``, ``max_iter_to_alter``, ``thresholds``, ``scale_factor``, ``attn_res``.

        ``gligen``: None uses GLIGEN's grounding tokens whenever the UNet has gated layers, True requires
        them; the gated layers run for the first ``gligen_scheduled_sampling_beta`` share of the steps, as
        diffusers' GLIGEN pipeline. ``spatial_temporal=True`` (or a :class:`SpatialTemporalControl`) turns
        on box-confined spatial-temporal attention control (Wu et al. 2023) for layouts; on FLUX.1 it is regional
        attention (:mod:`scenewright.synth.regional_attention`), training-free and without a backward.
        ``composition=True`` (or a :class:`scenewright.synth.composition.CompositionOptions`) draws each layout object
        alone and composes its latents into its box for the first steps (LMD's stage 2, Lian et al. 2024).
        ``return_trajectory=True`` keeps the latents at the start of every step in ``output.trajectory``
        (after every controller's ``before_step``).
        ``controllers``: extra :class:`scenewright.synth.controllers.StepController` objects, run after the
        built-in ones at every step (their ``before_step``, then their ``guide``).

        On FLUX.1 and SD3 every method reads the joint attention of the blocks ``mmdit_blocks=[...]`` names
        (indices in execution order; default the backbone's ``guidance_blocks``, the first third); the maps are
        at the image-token grid, so leave the ``*_res`` options unset. Phrases are found among the T5 tokens
        (FLUX) or the CLIP and T5 tokens (SD3) the transformer reads; ``token_indices`` are T5 positions on FLUX
        (0 = first piece), CLIP positions on SD3. FLUX.1-dev's guided forward gets the loop's distilled
        ``guidance_scale``.
        """
        # 0. Default height and width to the model's native size (512 px for SD 1.x, 1024 px for SDXL and FLUX)
        height = height or self.backbone.native_size[0]
        width = width or self.backbone.native_size[1]
        if not (isinstance(guidance_rescale, (int, float)) and 0.0 <= guidance_rescale <= 1.0):
            raise InputError(f"`guidance_rescale` must be a number in [0, 1] (diffusers' phi; 0.7 suggested), got {guidance_rescale!r}")

        # 1. Check inputs and resolve methods and their options
        items = self._check_inputs(layout_or_prompt, num_inference_steps, batch_size, height, width, output_type)
        active, engine = self._resolve_methods(methods, method_options)
        self._check_mmdit_features(gligen)
        own_controllers = _checked_controllers(controllers)
        batch = len(items) * batch_size
        if seed is not None and generator is not None:
            raise InputError("pass either `seed` or `generator`, not both")
        if generator is None:
            generator = make_generators(seed, batch)
        elif isinstance(generator, list) and len(generator) != batch:
            raise InputError(f"`generator` has {len(generator)} generators for {batch} images; give one per image")
        device = self.device

        # 2. Prompts and guidance targets: a layout's phrases -> token groups, boxes -> targets
        layouts = [item if isinstance(item, Layout) else None for item in items]
        prompts, targets, appended = self._targets(items, token_indices, missing_phrases, active)
        prompts = [p for p in prompts for _ in range(batch_size)]  # diffusers' num_images_per_prompt order
        targets = [replace(t) for t in targets for _ in range(batch_size)]  # one object per image
        appended = [a for a in appended for _ in range(batch_size)]
        if negative_prompt is None and any(lay is not None and lay.negative for lay in layouts):
            negative_prompt = [lay.negative if lay is not None else "" for lay in layouts]  # the layout's own
            negative_prompt = [n for n in negative_prompt for _ in range(batch_size)]
        elif negative_prompt is not None and not isinstance(negative_prompt, str):
            if len(negative_prompt) != len(items):
                raise InputError(
                    f"`negative_prompt` has {len(negative_prompt)} entries for {len(items)} layouts/prompts; "
                    "give one each"
                )
            negative_prompt = [n for n in negative_prompt for _ in range(batch_size)]
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompts)  # diffusers wants the prompt's type
        layouts = [lay for lay in layouts for _ in range(batch_size)]

        # 3. Encode the prompts; for classifier-free guidance the batch is [uncond, cond]
        guidance_scale = self.defaults.guidance_scale if guidance_scale is None else guidance_scale
        do_cfg = guidance_scale > 1.0
        conditioning = self.backbone.encode(prompts, negative_prompt, do_cfg, device, height, width)
        prompt_embeds = conditioning.embeds  # SD: (2B, 77, D) [uncond, cond] with CFG; FLUX/SD3: (B, L, D)

        # 3.1 GLIGEN: each layout object's phrase and box -> a grounding token; the unconditional half
        # and empty slots get the position net's null tokens (StableDiffusionGLIGENPipeline, step 5.1)
        cfg_kwargs, guide_kwargs = cross_attention_kwargs, cross_attention_kwargs  # CFG batch / cond only
        use_gligen = self._use_gligen(gligen, layouts)
        if use_gligen:
            full, cond = grounding_kwargs(self.pipe, layouts, do_cfg, device)
            cfg_kwargs = {**(cross_attention_kwargs or {}), "gligen": full}
            guide_kwargs = {**(cross_attention_kwargs or {}), "gligen": cond}

        # 3.2 Latent composition, a pre-pass (before the scheduler is set: it runs its own plain loop per
        # object): each layout object drawn alone, its latents moved into its box
        compositions = self._compositions(composition, items, seed, generator, batch_size,
                                          num_inference_steps, guidance_scale, height, width)  # fmt: skip

        # 4. Prepare timesteps (FLUX and SD3 shift their flow-matching sigmas by the image's token count)
        timesteps = self.backbone.set_timesteps(num_inference_steps, device, self.backbone.image_seq_len(height, width))

        # 4.1 Spatial-temporal control: each object's phrase is its local description, blended into its box
        # (FLUX: as regional attention, the phrases' tokens appended to the text the transformer reads)
        latent_hw = self.backbone.latent_grid(height, width)  # SD: latents (h, w); FLUX/SD3: image tokens (h, w)
        if self.is_mmdit:
            blend = self._regional_attention(spatial_temporal, layouts, len(timesteps), height, width, device)
            if blend is not None:  # the base prompt's tokens, then each object's phrase tokens
                phrases = self._phrase_embeds(layouts, blend.region_length, height, width)
                conditioning = regional_conditioning(conditioning, phrases, blend.present)
        else:
            clip_tuning = ClipTuning(self, conditioning, prompts, layouts, guide_kwargs)
            blend = self._spatial_temporal(spatial_temporal, layouts, len(timesteps), latent_hw, device, clip_tuning)

        # 5. Prepare latents exactly as the backbone's pipeline (FLUX: packed 2x2 patches, (B, h * w, 4C))
        latents = self.backbone.prepare_latents(batch, height, width, generator, prompt_embeds.dtype, device, latents)

        # 6. Extra scheduler kwargs (eta, generator) and the maps the guidance methods read
        step_kwargs = extra_step_kwargs(self.scheduler, generator, eta)
        self._fill_resolutions(active, latent_hw)
        requests = [r for a in active for r in a.method.needs(a.options, latent_hw)]
        records: list[StepRecord] = []
        trajectory: list[torch.Tensor] = []

        with self._capture(requests, blend, latent_hw, engine["mmdit_blocks"]) as capture, \
                fuser_enabled(self.backbone.model) as set_fuser:  # fmt: skip
            # 6.1 The step controllers: the built-in features, in the order they run, then the caller's
            set_fuser(True)
            guidance = GuidancePass(self.backbone, capture, active, conditioning, targets, latent_hw, guide_kwargs,
                                    engine["gradient_checkpointing"], guidance_scale)  # fmt: skip
            steppers = self._step_controllers(compositions, batch_size, blend, guidance, engine, len(timesteps),
                                              set_fuser if use_gligen else None, gligen_scheduled_sampling_beta)
            steppers += own_controllers

            # 7. Denoising loop
            for i, t in enumerate(timesteps):
                for stepper in steppers:
                    latents = stepper.before_step(i, t, latents)
                if return_trajectory:
                    trajectory.append(latents.clone())
                latents, record = run_guides(steppers, i, t, latents)
                if record is not None:
                    records.append(record)
                latents = denoise_step(self.backbone, self.scheduler, latents, t, conditioning, guidance_scale,
                                       cfg_kwargs, step_kwargs, guidance_rescale)  # fmt: skip
                if callback is not None:
                    callback(i, len(timesteps), record)

        # 8. Decode and post-process as the backbone's diffusers pipeline
        images, has_nsfw = decode_latents(self.backbone, latents, output_type, generator, device, prompt_embeds.dtype,
                                          height, width)  # fmt: skip
        self.pipe.maybe_free_model_hooks()
        return SynthesisOutput(
            images=images, prompts=prompts, layouts=layouts, targets=targets, latents=latents,
            steps=records, appended_phrases=appended, nsfw_content_detected=has_nsfw,
            spatial_temporal_history=blend.history if isinstance(blend, SpatialTemporalBlend) else {},
            trajectory=trajectory,
        )  # fmt: skip

    @torch.no_grad()
    def measure(
        self,
        layout_or_prompt: Layout | str | Sequence[Layout | str],
        latents: torch.Tensor,
        timestep: int | torch.Tensor,
        methods: Sequence[str] | Mapping[str, Mapping[str, Any]],
        step: int = 0,
        token_indices: Sequence[int] | Sequence[Sequence[int]] | None = None,
        missing_phrases: str = "append",
        gligen: bool | None = None,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float | None = None,
        **method_options: Any,
    ) -> GuidanceMeasure:
        """Each method's loss and the summed loss's gradient at ``latents`` (one item per latent): for inspection.

        On a GLIGEN UNet (unless ``gligen=False``) the layouts' grounding tokens are in, gated layers on.
        FLUX's packed latents (B, h*w, 4C) need the image's ``height`` and ``width``; FLUX.1-dev's guided
        forward gets ``guidance_scale`` (None: the model's default) as its distilled guidance.
        """
        items = list(layout_or_prompt) if isinstance(layout_or_prompt, (list, tuple)) else [layout_or_prompt]
        if len(items) != latents.shape[0]:
            raise InputError(
                f"`latents` has {latents.shape[0]} samples for {len(items)} layouts/prompts; give one each"
            )
        active, engine = self._resolve_methods(methods, method_options)
        self._check_mmdit_features(gligen)
        if not active:
            raise InputError("`methods` has no guidance method to measure; name one of synth.methods.METHODS")
        prompts, targets, _ = self._targets(items, token_indices, missing_phrases, active)
        height, width = self.backbone.image_size_of(latents, height, width)
        conditioning = self.backbone.encode(prompts, None, False, self.device, height, width)
        kwargs = None
        layouts = [item if isinstance(item, Layout) else None for item in items]
        if self._use_gligen(gligen, layouts):
            kwargs = {"gligen": grounding_kwargs(self.pipe, layouts, False, self.device)[1]}
        latent_hw = self.backbone.latent_grid(height, width)  # SD: the latents' (h, w); FLUX/SD3: image tokens'
        self._fill_resolutions(active, latent_hw)
        requests = [r for a in active for r in a.method.needs(a.options, latent_hw)]
        if not self.is_mmdit:  # the flow transformers' guided forward reads no scheduler (no input scaling)
            self.scheduler.set_timesteps(self.scheduler.config.num_train_timesteps, device=self.device)
        t = torch.as_tensor(timestep, device=self.device)
        guidance_scale = self.defaults.guidance_scale if guidance_scale is None else guidance_scale
        with self._capture(requests, None, latent_hw, engine["mmdit_blocks"]) as capture, \
                fuser_enabled(self.backbone.model) as set_fuser:  # fmt: skip
            set_fuser(True)
            guidance = GuidancePass(self.backbone, capture, active, conditioning, targets, latent_hw, kwargs,
                                    engine["gradient_checkpointing"], guidance_scale)  # fmt: skip
            measured = loss_and_grad(guidance, latents.to(self.device), t, step)
        measured.targets = targets
        return measured

    # ------------------------------------------------------------------ helpers
    def _fill_resolutions(self, active: list[ActiveMethod], latent_hw: tuple[int, int]) -> None:
        """Unset map sizes (``attn_res``, ``car_res``, ...) -> latent / the model's ``attention_downscale`` (SD: 4).

        FLUX/SD3: the image-token grid itself, where every joint-attention block attends (no down/up levels).
        """
        size = latent_hw if self.is_mmdit else downscaled_size(latent_hw, self.defaults.attention_downscale)
        for a in active:
            for key, value in a.options.items():
                if key.endswith("_res") and value is None:
                    a.options[key] = size

    def _check_inputs(self, layout_or_prompt, num_inference_steps, batch_size, height, width, output_type) -> list:
        items = list(layout_or_prompt) if isinstance(layout_or_prompt, (list, tuple)) else [layout_or_prompt]
        if not items:
            raise InputError("`layout_or_prompt` is empty; give a Layout, a prompt string, or a list of them")
        for k, item in enumerate(items):
            if not isinstance(item, (Layout, str)) or (isinstance(item, str) and not item.strip()):
                raise TypeError(
                    f"`layout_or_prompt[{k}]` is {type(item).__name__} {item!r}; "
                    "give a layout.Layout or a non-empty prompt"
                )
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"`num_inference_steps` must be a positive int, got {num_inference_steps!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"`batch_size` (images per layout/prompt) must be a positive int, got {batch_size!r}")
        self.backbone.check_size(height, width)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        return items

    def _resolve_methods(
        self, methods: Sequence[str] | Mapping[str, Mapping[str, Any]], options: dict[str, Any]
    ) -> tuple[list[ActiveMethod], dict[str, Any]]:
        """Method names -> registry entries with their options; engine options from user > methods > A&E
        (:func:`scenewright.synth.recipe.resolve_methods`)."""
        return resolve_methods(methods, options)

    def _targets(
        self,
        items: list[Layout | str],
        token_indices: Sequence[int] | Sequence[Sequence[int]] | None,
        missing_phrases: str,
        active: list[ActiveMethod],
    ) -> tuple[list[str], list[GuidanceTargets], list[list[str]]]:
        """Per layout/prompt: the prompt to encode, its targets, and any phrases appended to it."""
        if not active and token_indices is not None:
            raise InputError("`token_indices` were given but no guidance method is on; add methods=['attend_excite']")
        if not active:  # unguided: the prompt is encoded as given, nothing to map
            prompts = [item.prompt if isinstance(item, Layout) else item for item in items]
            empty = [GuidanceTargets(token_groups=[], boxes=torch.zeros(0, 4), eot_index=0) for _ in items]
            return prompts, empty, [[] for _ in items]
        if token_indices is not None and len(token_indices) and isinstance(token_indices[0], (int, np.integer)):
            token_indices = [token_indices] * len(items)  # type: ignore[list-item]
        if token_indices is not None and len(token_indices) != len(items):
            raise InputError(
                f"`token_indices` has {len(token_indices)} lists for {len(items)} prompts; give one list per prompt"
            )
        if token_indices is None:  # A&E users may give them as the method's option, as in diffusers
            token_indices = next((a.options["token_indices"] for a in active if a.options.get("token_indices")), None)
            if token_indices is not None and isinstance(token_indices[0], (int, np.integer)):
                token_indices = [token_indices] * len(items)
        needs_boxes = [a.name for a in active if a.method.uses_boxes]
        prompts, targets, appended = [], [], []
        for k, item in enumerate(items):
            prompt = item.prompt if isinstance(item, Layout) else item
            phrases = item.phrases if isinstance(item, Layout) else []
            names = item.names if isinstance(item, Layout) else None
            # the positions of the text keys the model's attention reads (SD: CLIP; FLUX: T5; SD3: CLIP then T5)
            mapping = self.backbone.token_mapping(prompt, phrases, names, missing_phrases)
            groups = [list(g) for g in mapping.token_groups]
            if token_indices is not None:
                indices = [int(i) for i in token_indices[k]]
                self.backbone.check_token_indices(mapping.prompt, indices)
                groups = [[i] for i in indices]
            boxes = torch.tensor(item.boxes if isinstance(item, Layout) else [], dtype=torch.float32).reshape(-1, 4)
            if active and not groups:
                raise InputError(
                    f"item {k} ({prompt!r}) gives no tokens to guide; pass a Layout with objects or `token_indices`"
                )
            if needs_boxes and len(boxes) != len(groups):
                raise InputError(
                    f"methods {needs_boxes} need one box per object but item {k} has {len(boxes)} boxes for "
                    f"{len(groups)} token groups; pass a Layout (boxes come from its objects)"
                )
            prompts.append(mapping.prompt)
            targets.append(GuidanceTargets(token_groups=groups, boxes=boxes, eot_index=mapping.eot_index))
            appended.append(list(mapping.appended))
        return prompts, targets, appended

    def _compositions(self, composition, items, seed, generator, batch_size, num_inference_steps,
                      guidance_scale, height, width) -> list[LatentComposition | None]:  # fmt: skip
        """Per layout/prompt, its :class:`scenewright.synth.composition.LatentComposition` (None for prompts), or [] when off.

        The objects' seeds follow the image's seed (the first of its images' seeds), so a seeded run repeats.
        """
        if composition is None or composition is False:
            return []
        options = CompositionOptions() if composition is True else composition
        if not isinstance(options, CompositionOptions):
            raise TypeError(f"`composition` must be True or a synth.composition.CompositionOptions, got {composition!r}")
        out: list[LatentComposition | None] = []
        for k, item in enumerate(items):
            if not isinstance(item, Layout):
                out.append(None)
                continue
            if isinstance(seed, (int, np.integer)):
                base = int(seed)
            elif seed is not None:
                base = int(list(seed)[k * batch_size])
            else:
                gen = generator[k * batch_size] if isinstance(generator, list) else generator
                base = int(torch.randint(0, 2**31 - 1, (1,), generator=gen if gen is not None and gen.device.type == "cpu" else None))
            out.append(compose_layout(self, item, options, num_inference_steps=num_inference_steps,
                                      guidance_scale=guidance_scale, seed=base, height=height, width=width))  # fmt: skip
        return out

    def _use_gligen(self, gligen: bool | None, layouts: Sequence[Layout | None]) -> bool:
        """Grounding tokens on: ``gligen`` if given (True requires gated layers), else when the UNet has them
        and some layout has a box to ground; with none, the UNet runs as the plain SD model it was built on
        (so bare prompts on a GLIGEN-trained shapes model equal ``StableDiffusionPipeline``'s images)."""
        if gligen:
            check_gligen_unet(self.unet)
            return True
        has_boxes = any(layout is not None and layout.objects for layout in layouts)
        return is_gligen_unet(self.backbone.model) and has_boxes if gligen is None else False

    def _check_mmdit_features(self, gligen: bool | None) -> None:
        """On FLUX/SD3, a clear error for what needs a UNet: GLIGEN's gated layers. Everything else runs there: guidance
        methods on the joint attention (:meth:`_capture`; which blocks they read is checked there), LMD's composition
        (:mod:`scenewright.synth.composition`: FLUX's packed latents move on their token grid)."""
        if not self.is_mmdit:
            return
        model = {"flux": "FLUX.1", "sd3": "SD3"}[self.backbone.name]
        if gligen:
            raise InputError(f"`gligen=True` needs GLIGEN's gated UNet layers; there are no GLIGEN weights for {model}")

    def _step_controllers(
        self,
        compositions: list[LatentComposition | None],
        images_per_item: int,
        blend: SpatialTemporalBlend | None,
        guidance: GuidancePass,
        engine: dict[str, Any],
        num_steps: int,
        set_fuser: Callable[[bool], None] | None,
        gligen_scheduled_sampling_beta: float,
    ) -> list[StepController]:
        """The built-in features as step controllers, in the order the loop runs them (module docstring).

        ``set_fuser`` is None when GLIGEN's grounding tokens are off.
        """
        steppers: list[StepController] = []
        paste = LatentCompositionPaste(compositions, images_per_item) if compositions else None
        if paste is not None:
            steppers.append(paste)
        if set_fuser is not None:
            grounding_steps = num_grounding_steps(gligen_scheduled_sampling_beta, num_steps)
            steppers.append(GligenScheduledSampling(set_fuser, grounding_steps))
        if blend is not None:
            steppers.append(blend)
        if not guidance.active:
            return steppers
        first_step = paste.steps if paste is not None else 0  # pastes would overwrite earlier guidance
        if engine["schedule"] == "attention_refocusing":
            loss_scale = 1.0 if set_fuser is not None else engine["plain_sd_loss_scale"]
            steppers.append(RefocusingGuidance(guidance, RefocusingSchedule(), loss_scale, first_step))
        else:
            sizes = step_sizes(engine["scale_factor"], num_steps)
            steppers.append(AttendExciteGuidance(guidance, sizes, engine["thresholds"], engine["max_refinement_steps"],
                                                 last_step=engine["max_iter_to_alter"], first_step=first_step))  # fmt: skip
        return steppers

    def _spatial_temporal(
        self,
        control: SpatialTemporalControl | bool | None,
        layouts: list[Layout | None],
        num_steps: int,
        latent_hw: tuple[int, int],
        device: torch.device,
        clip_tuning: ClipTuning,
    ) -> SpatialTemporalBlend | None:
        """Spatial-temporal control's per-image local descriptions (phrases), boxes and weights; None when off."""
        control = _checked_spatial_temporal(control, layouts)
        if control is None:
            return None
        boxes, present = _layout_boxes(layouts)
        boxes = boxes.to(device)
        batch, n = present.shape
        dim = self.unet.config.cross_attention_dim
        local = torch.zeros(batch, n, self.tokenizer.model_max_length, dim, device=device)
        for b, lay in enumerate(layouts):
            if lay is not None and lay.objects:
                embeds = self.backbone.encode(lay.phrases, None, False, device, *self.image_size(latent_hw)).cond_embeds
                local[b, : len(lay.objects)] = embeds.float()
        if control.weights is None:
            weights = fixed_schedule(num_steps, n, control.local_weight, batch)
        else:
            weights = control.checked_weights(num_steps, batch, n)
        return SpatialTemporalBlend(
            local, boxes, weights * present, latent_hw=latent_hw, softness=control.softness, present=present,
            control=control, clip_tuning=clip_tuning,
        )  # fmt: skip

    def _regional_attention(
        self,
        control: SpatialTemporalControl | bool | None,
        layouts: list[Layout | None],
        num_steps: int,
        height: int,
        width: int,
        device: torch.device,
    ) -> RegionalAttention | None:
        """Spatial-temporal control on FLUX and SD3 as box-confined regional attention (Chen et al. 2024); None when
        off. SD3's real CFG keeps its negative rows unguided (:mod:`scenewright.synth.regional_attention`)."""
        control = _checked_spatial_temporal(control, layouts)
        if control is None:
            return None
        if isinstance(self.backbone, FluxBackbone) and self.backbone.true_cfg_scale > 1:  # a separate negative forward
            raise InputError("`spatial_temporal` on FLUX is not yet combined with true CFG; load the Synthesizer "
                             "with true_cfg_scale=1 (FLUX.1's distilled guidance)")  # fmt: skip
        if control.clip is not None:
            raise InputError("`SpatialTemporalControl.clip` tunes weights with a backward; FLUX's and SD3's regional "
                             "attention has none yet: leave `clip` unset")  # fmt: skip
        boxes, present = _layout_boxes(layouts)
        batch, n = present.shape
        last_step = math.ceil(control.regional_steps * num_steps)
        if control.weights is None:  # constant: the layout is laid down in the first steps, which a ramp would skip
            weights = torch.full((num_steps, batch, n), float(control.local_weight))
        else:
            weights = control.checked_weights(num_steps, batch, n)
        if not bool(((weights >= 0) & (weights <= 1)).all()):
            raise InputError("on FLUX and SD3, `spatial_temporal` weights blend regional with base attention: keep "
                             "`local_weight` / `weights` in [0, 1]")  # fmt: skip
        weights[last_step:] = 0
        grid = self.backbone.latent_grid(height, width)
        return RegionalAttention(
            inside=box_token_masks(boxes, grid).to(device), present=present.to(device), weights=weights * present,
            base_length=self.backbone.text_length, region_length=self._region_length(layouts),
            regional_layers=regional_layers(self.backbone.model, control.regional_blocks),
        )  # fmt: skip

    def _region_length(self, layouts: list[Layout | None]) -> int:
        """Text tokens kept per object: the longest phrase's (:meth:`FluxBackbone.phrase_token_spans`); more regional
        tokens than the base prompt's text is an error."""
        phrases = [phrase for lay in layouts if lay is not None for phrase in lay.phrases]
        spans = self.backbone.phrase_token_spans(phrases)
        length = sum(span.stop - span.start for span in spans.values())
        most = max(len(lay.objects) for lay in layouts if lay is not None)
        limit = self.backbone.text_length
        if most * length > limit:
            raise InputError(
                f"a layout has {most} phrases of up to {length} {' + '.join(spans)} tokens: {most * length} regional "
                f"tokens, more than the base prompt's {limit} text tokens (max_sequence_length="
                f"{self.backbone.max_sequence_length}); use fewer or shorter phrases, or load the Synthesizer with a "
                "larger `max_sequence_length` (at most 512)"
            )
        return length

    def _phrase_embeds(
        self, layouts: list[Layout | None], region_length: int, height: int, width: int
    ) -> torch.Tensor:
        """Each object's phrase encoded on its own, its ``region_length`` tokens (FLUX: T5; SD3: CLIP, then T5):
        (B, N, Lr, D), zeros where an image has fewer objects."""
        n = max(len(lay.objects) if lay is not None else 0 for lay in layouts)
        spans = self.backbone.phrase_token_spans([p for lay in layouts if lay is not None for p in lay.phrases])
        embeds = None
        for b, lay in enumerate(layouts):
            if lay is None or not lay.objects:
                continue
            encoded = self.backbone.encode(lay.phrases, None, False, self.device, height, width).embeds
            tokens = torch.cat([encoded[:, span] for span in spans.values()], dim=1)  # (objects, Lr, D)
            if embeds is None:
                embeds = encoded.new_zeros(len(layouts), n, region_length, encoded.shape[-1])
            embeds[b, : len(lay.objects)] = tokens
        return embeds

    def _capture(
        self, requests: list, cross_blend: CrossAttentionBlend | RegionalAttention | None = None,
        latent_hw: tuple[int, int] | None = None, mmdit_blocks: Sequence[int] | None = None,
    ):  # fmt: skip
        """Attention capture on this UNet, sharing the early-exit points learnt by earlier runs.

        FLUX/SD3: the requested maps from the joint attention of blocks ``mmdit_blocks`` (None: the backbone's
        ``guidance_blocks``) at the image-token grid ``latent_hw`` (:meth:`backbones.FluxBackbone.guidance_capture`),
        inside regional attention when it is on (:func:`guidance.mmdit_capture`); every other block keeps diffusers'
        processor.
        """
        if self.is_mmdit:
            return mmdit_capture(self.backbone, requests, cross_blend, latent_hw, mmdit_blocks)
        if mmdit_blocks is not None:
            raise InputError("`mmdit_blocks` picks FLUX.1/SD3 transformer blocks; on a UNet the methods' resolution "
                             "options (`attn_res`, `car_res`, ...) pick the layers: leave it unset")  # fmt: skip
        exit_plan = self._exit_plans.setdefault(id(self.unet), {})
        return attention_capture(self.unet, requests, exit_plan=exit_plan, cross_blend=cross_blend)


def _layout_boxes(layouts: list[Layout | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's object boxes (B, N, 4) normalized xyxy, zeros past its objects; ``present`` (B, N) 1 where set."""
    n = max(len(lay.objects) if lay is not None else 0 for lay in layouts)
    boxes, present = torch.zeros(len(layouts), n, 4), torch.zeros(len(layouts), n)
    for b, lay in enumerate(layouts):
        if lay is not None and lay.objects:
            boxes[b, : len(lay.objects)] = torch.tensor(lay.boxes, dtype=torch.float32)
            present[b, : len(lay.objects)] = 1
    return boxes, present


def _checked_spatial_temporal(
    control: SpatialTemporalControl | bool | None, layouts: list[Layout | None]
) -> SpatialTemporalControl | None:
    """``spatial_temporal=`` as a :class:`SpatialTemporalControl` (None when off); errors name the fix."""
    if control is None or control is False:
        return None
    if control is True:
        control = SpatialTemporalControl()
    if not isinstance(control, SpatialTemporalControl):
        raise TypeError(
            f"`spatial_temporal` must be True or a synth.spatial_temporal.SpatialTemporalControl, got {control!r}"
        )
    if not any(lay is not None and lay.objects for lay in layouts):
        raise InputError("`spatial_temporal` needs layouts with objects (their phrases and boxes); pass a Layout")
    return control


def _checked_controllers(controllers: Sequence[StepController]) -> list[StepController]:
    """The caller's ``controllers`` as a list; anything but a StepController is an error naming the fix."""
    checked = list(controllers)
    for k, controller in enumerate(checked):
        if not isinstance(controller, StepController):
            raise TypeError(
                f"`controllers[{k}]` is {type(controller).__name__}; subclass synth.controllers.StepController "
                "and override before_step and/or guide"
            )
    return checked


__all__ = [
    "ENGINE_DEFAULTS",
    "GuidanceMeasure",
    "StepRecord",
    "SynthesisOutput",
    "Synthesizer",
    "step_sizes",
    "update_latents",
]
