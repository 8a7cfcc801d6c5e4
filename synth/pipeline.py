"""`Synthesizer`: the one denoising loop of scenewright, with the attention-guidance engine inside it.

Read :meth:`Synthesizer.generate` top to bottom; its numbered steps follow diffusers'
``StableDiffusionPipeline.__call__``. Step 7.1 is the guidance engine shared by every method
(Attend-and-Excite, Chefer et al. 2023; Attention Refocusing CAR/SAR, Phung et al. 2024; A-STAR,
Agarwal et al. 2023; layout guidance, Chen et al. 2024; BoxDiff, Xie et al. 2023): at the first
``max_iter_to_alter`` steps it runs ONE batched conditional-only UNet forward with attention capture
(:mod:`scenewright.synth.attention`), sums the active methods' losses per sample, and moves the latent down their
gradient, ``z <- z - step_size[i] * grad`` with A&E's schedule ``scale_factor * sqrt(linspace(1, 0.5, T))``,
refining iteratively at the threshold steps. Then it takes the ordinary classifier-free-guidance step.
With ``methods=["none"]`` it reproduces ``StableDiffusionPipeline`` exactly.

Variations of the same loop, not second loops: on a GLIGEN UNet (Li et al. 2023, :mod:`scenewright.synth.gligen`)
step 3.1 turns the layout into grounding tokens and step 7 switches the gated layers off after
``gligen_scheduled_sampling_beta`` of the steps (then it reproduces ``StableDiffusionGLIGENPipeline``);
the ``attention_refocusing`` schedule (:class:`scenewright.synth.methods.RefocusingSchedule`) replaces A&E's at
step 7.1; box-confined spatial-temporal control (Wu et al. 2023, :mod:`scenewright.synth.spatial_temporal`) blends
each object's phrase into its box in every cross-attention layer (steps 4.1 and 7.0); LMD's latent
composition (Lian et al. 2024, :mod:`scenewright.synth.composition`) draws each layout object alone first (step 3.2)
and pastes its moved latents into the scene at the start of the first steps, guidance waiting until it ends.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from scenewright.layout.schema import Layout

from .attention import AttentionCapture, attention_capture
from .composition import CompositionOptions, LatentComposition, compose_layout
from .gligen import check_gligen_unet, fuser_enabled, grounding_kwargs, is_gligen_unet, num_grounding_steps
from .loading import ModelDefaults, model_defaults
from .maps import AttentionMaps, GuidanceTargets, downscaled_size
from .methods import RefocusingSchedule
from .recipe import ENGINE_DEFAULTS, resolve_methods
from .spatial_temporal import RegionalControl, SpatialTemporalControl, fixed_schedule, optimize_step_weights


OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class StepRecord:
    """What the guidance engine did at one denoising step (lists are per sample)."""

    step: int
    timestep: int
    losses: dict[str, list[float]]  # method -> loss per sample, before this step's update
    total_loss: list[float]  # summed over methods, before this step's update
    refinement_iterations: list[int]  # extra A&E refinement updates taken at this step
    skipped: list[bool]  # update skipped because the loss or gradient was not finite
    last_loss: list[float] | None = None  # refocusing: summed loss at the last latent measured (before its update)


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


@dataclass
class GuidanceMeasure:
    """Losses and their gradient at one latent: what the engine steps on."""

    losses: dict[str, torch.Tensor]  # method -> (B,) fp32
    total: torch.Tensor  # (B,) fp32
    grad: torch.Tensor  # (B, C, h, w) fp32, d objective_b / d latents_b (objective: total or refinement)
    maps: list[AttentionMaps]  # per sample, detached
    refinement: torch.Tensor | None = None  # (B,) fp32: summed refinement losses, when that was the objective
    targets: list[GuidanceTargets] | None = None  # per sample, as the losses saw them (set by `measure`)


@dataclass
class _ActiveMethod:
    name: str
    method: Any  # synth.methods.GuidanceMethod
    options: dict[str, Any]


@dataclass
class GuidancePass:
    """What every grad-enabled guidance forward of one ``generate``/``measure`` call shares."""

    capture: AttentionCapture
    active: list[_ActiveMethod]
    cond_embeds: torch.Tensor  # (B, 77, D): the guidance forward is conditional only
    targets: list[GuidanceTargets]  # per sample
    latent_hw: tuple[int, int]
    cross_attention_kwargs: dict[str, Any] | None  # GLIGEN: the conditional half's grounding tokens


def _step_record(
    step: int, t: torch.Tensor, first: GuidanceMeasure, iterations: torch.Tensor, skipped: torch.Tensor,
    last: GuidanceMeasure | None = None,
) -> StepRecord:
    """The record of one guided step: losses before its first update, updates taken, skips (per sample)."""
    return StepRecord(
        step=step,
        timestep=int(t),
        losses={name: loss.tolist() for name, loss in first.losses.items()},
        total_loss=first.total.tolist(),
        refinement_iterations=iterations.tolist(),
        skipped=skipped.tolist(),
        last_loss=last.total.tolist() if last is not None else None,
    )


def step_sizes(scale_factor: float, num_steps: int) -> np.ndarray:
    """A&E's step-size schedule ``scale_factor * sqrt(linspace(1, 0.5, T))`` (Chefer et al. 2023)."""
    return scale_factor * np.sqrt(np.linspace(1.0, 0.5, num_steps))


def update_latents(latents: torch.Tensor, grad: torch.Tensor, step_size: float, active: torch.Tensor) -> torch.Tensor:
    """One guidance update ``z - step_size * grad`` in fp32 for the ``active`` samples; cast back."""
    mask = active.to(torch.float32).view(-1, *([1] * (latents.ndim - 1)))  # (B, 1, 1, 1)
    updated = latents.float() - step_size * grad.float() * mask
    return updated.to(latents.dtype)


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


class Synthesizer:
    """Text/layout -> image with training-free attention control on a diffusers Stable Diffusion pipeline."""

    def __init__(self, pipe, defaults: ModelDefaults | None = None):
        required = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "encode_prompt", "image_processor")
        missing = [name for name in required if getattr(pipe, name, None) is None]
        if missing:
            raise TypeError(
                f"`pipe` lacks {missing}; pass a diffusers StableDiffusionPipeline (or one with the same components)"
            )
        self.pipe = pipe
        if defaults is None:  # what the folder the pipe was loaded from declares (scenewright.json), else SD's
            source = getattr(getattr(pipe, "config", None), "_name_or_path", None)
            defaults = model_defaults(source if source and Path(str(source)).is_dir() else None)
        if not isinstance(defaults, ModelDefaults):
            raise TypeError(f"`defaults` must be a synth.loading.ModelDefaults, got {defaults!r}")
        #: The model's attention-map size (latent / attention_downscale) and CFG scale when none is given.
        self.defaults = defaults
        self._exit_plans: dict[int, dict] = {}  # id(unet) -> learnt early exits of guidance passes

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipe(cls, pipe, defaults: ModelDefaults | None = None) -> Synthesizer:
        """Wrap a loaded ``StableDiffusionPipeline`` or ``StableDiffusionGLIGENPipeline`` (components shared).

        ``defaults`` (:class:`scenewright.synth.loading.ModelDefaults`): the model's default attention-map size and CFG
        scale; None reads what the pipe's folder declares in ``scenewright.json``, else SD's.
        """
        return cls(pipe, defaults=defaults)

    @classmethod
    def from_pretrained(
        cls,
        model: str = "runwayml/stable-diffusion-v1-5",
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        gligen: bool | None = None,
        defaults: ModelDefaults | None = None,
        **kwargs,
    ) -> Synthesizer:
        """Load a Stable Diffusion (or, ``gligen=True``, GLIGEN) checkpoint from a hub id or local folder.

        See :mod:`scenewright.synth.loading`; a GLIGEN request on weights without gated layers is an error naming
        a GLIGEN checkpoint to load instead. ``defaults`` as in :meth:`from_pipe` (a local folder's
        ``scenewright.json`` is read, e.g. the embedded shapes model's).
        """
        from .loading import load_stable_diffusion

        pipe = load_stable_diffusion(model, torch_dtype=torch_dtype, device=device, gligen=gligen, **kwargs)
        return cls(pipe, defaults=defaults)

    @property
    def unet(self):
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
        on box-confined spatial-temporal attention control (Wu et al. 2023) for layouts.
        ``composition=True`` (or a :class:`scenewright.synth.composition.CompositionOptions`) draws each layout object
        alone and composes its latents into its box for the first steps (LMD's stage 2, Lian et al. 2024).
        ``return_trajectory=True`` keeps the latents at the start of every step in ``output.trajectory``.
        """
        # 0. Default height and width to the UNet's
        vae_scale = self.pipe.vae_scale_factor
        height = height or self.unet.config.sample_size * vae_scale
        width = width or self.unet.config.sample_size * vae_scale

        # 1. Check inputs and resolve methods and their options
        items = self._check_inputs(layout_or_prompt, num_inference_steps, batch_size, height, width, output_type)
        active, engine = self._resolve_methods(methods, method_options)
        guided = bool(active)
        batch = len(items) * batch_size
        if seed is not None and generator is not None:
            raise ValueError("pass either `seed` or `generator`, not both")
        if generator is None:
            generator = make_generators(seed, batch)
        elif isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"`generator` has {len(generator)} generators for {batch} images; give one per image")
        device = self.device

        # 2. Prompts and guidance targets: a layout's phrases -> token groups, boxes -> targets
        layouts = [item if isinstance(item, Layout) else None for item in items]
        prompts, targets, appended = self._targets(items, token_indices, missing_phrases, active)
        prompts = [p for p in prompts for _ in range(batch_size)]  # diffusers' num_images_per_prompt order
        targets = [replace(t) for t in targets for _ in range(batch_size)]  # own copies: `.previous` is per image
        appended = [a for a in appended for _ in range(batch_size)]
        if negative_prompt is None and any(lay is not None and lay.negative for lay in layouts):
            negative_prompt = [lay.negative if lay is not None else "" for lay in layouts]  # the layout's own
            negative_prompt = [n for n in negative_prompt for _ in range(batch_size)]
        elif negative_prompt is not None and not isinstance(negative_prompt, str):
            if len(negative_prompt) != len(items):
                raise ValueError(
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
        prompt_embeds, negative_embeds = self.pipe.encode_prompt(prompts, device, 1, do_cfg, negative_prompt)
        cond_embeds = prompt_embeds  # (B, 77, D): the guidance forward is conditional only
        if do_cfg:
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds])

        # 3.1 GLIGEN: each layout object's phrase and box -> a grounding token; the unconditional half
        # and empty slots get the position net's null tokens (StableDiffusionGLIGENPipeline, step 5.1)
        cfg_kwargs, guide_kwargs = cross_attention_kwargs, cross_attention_kwargs  # CFG batch / cond only
        use_gligen = self._use_gligen(gligen, layouts)
        if use_gligen:
            full, cond = grounding_kwargs(self.pipe, layouts, do_cfg, device)
            cfg_kwargs = {**(cross_attention_kwargs or {}), "gligen": full}
            guide_kwargs = {**(cross_attention_kwargs or {}), "gligen": cond}

        # 3.2 Latent composition (before the scheduler is set: it runs the loop once per object first):
        # each layout object drawn alone, its latents moved into its box
        compositions = self._compositions(composition, items, seed, generator, batch_size,
                                          num_inference_steps, guidance_scale, height, width)  # fmt: skip
        trajectory: list[torch.Tensor] = []

        # 4. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        grounding_steps = num_grounding_steps(gligen_scheduled_sampling_beta, len(timesteps)) if use_gligen else 0

        # 4.1 Spatial-temporal control: each object's phrase is its local description, blended into its box
        latent_hw = (int(height) // vae_scale, int(width) // vae_scale)
        regional = self._regional(spatial_temporal, layouts, len(timesteps), latent_hw, device)

        # 5. Prepare latents exactly as diffusers' prepare_latents
        shape = (batch, self.unet.config.in_channels, *latent_hw)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape} for these inputs")
        latents = latents.to(device=device, dtype=prompt_embeds.dtype) * self.scheduler.init_noise_sigma

        # 6. Extra scheduler kwargs (eta, generator) and the guidance step sizes
        extra_step_kwargs = self._extra_step_kwargs(generator, eta)
        sizes = step_sizes(engine["scale_factor"], len(timesteps))
        max_iter_to_alter = engine["max_iter_to_alter"] if guided else 0
        refocusing = RefocusingSchedule() if guided and engine["schedule"] == "attention_refocusing" else None
        self._fill_resolutions(active, latent_hw)
        requests = [r for a in active for r in a.method.needs(a.options, latent_hw)]
        records: list[StepRecord] = []

        # 7. Denoising loop
        with self._capture(requests) as capture, fuser_enabled(self.unet) as set_fuser:
            capture.regional = regional
            set_fuser(True)
            guidance = GuidancePass(capture, active, cond_embeds, targets, latent_hw, guide_kwargs)
            previous_maps: list[AttentionMaps] | None = None
            for i, t in enumerate(timesteps):
                record = None
                composing = False
                for k, placed in enumerate(compositions):
                    if placed is not None and placed.objects and i < placed.steps:  # LMD: objects' own latents
                        rows = slice(k * batch_size, (k + 1) * batch_size)
                        latents[rows] = placed.apply(i, latents[rows])
                        composing = True
                if return_trajectory:
                    trajectory.append(latents.clone())
                if use_gligen and i == grounding_steps:
                    set_fuser(False)  # GLIGEN's scheduled sampling: grounding only lays out the early steps
                if regional is not None:
                    regional.step = i
                    # 7.0 Spatial-temporal control with a CLIP objective: tune this step's weights first
                    control = regional.control
                    if control.clip is not None and (control.optimize_steps is None or i < control.optimize_steps):
                        optimize_step_weights(
                            self, regional, control, latents, t, cond_embeds, prompts, layouts, guide_kwargs
                        )
                # 7.1 Guidance: conditional-only forward with capture, loss, latent update (+ refinement).
                # After `max_iter_to_alter` (A&E) / off the refocusing schedule no grad-enabled forward runs.
                if composing:
                    pass  # guidance starts when the composition ends: its pastes would overwrite the updates
                elif refocusing is not None and refocusing.guides(i):
                    latents, record, previous_maps = self._refocus(
                        guidance, latents, t, i,
                        loss_scale=refocusing.loss_scale(i) * (1.0 if use_gligen else engine["plain_sd_loss_scale"]),
                        max_iterations=refocusing.max_iterations(i),
                        loss_threshold=refocusing.loss_threshold if refocusing.uses_threshold(i) else None,
                        min_inside_target=refocusing.min_inside_target,
                    )  # fmt: skip
                    records.append(record)
                elif refocusing is None and i < max_iter_to_alter:
                    for target, maps in zip(targets, previous_maps or [None] * batch):
                        target.previous = maps
                    latents, record, previous_maps = self._guide(
                        guidance, latents, t, i,
                        step_size=float(sizes[i]),
                        threshold=engine["thresholds"].get(i),
                        max_refinement_steps=engine["max_refinement_steps"],
                    )  # fmt: skip
                    records.append(record)

                # 7.2 Classifier-free guidance step, as StableDiffusionPipeline (fast SDPA, no grad)
                latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                noise_pred = self.unet(
                    latent_model_input, t, encoder_hidden_states=prompt_embeds,
                    cross_attention_kwargs=cfg_kwargs, return_dict=False,
                )[0]  # fmt: skip
                if do_cfg:
                    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback is not None:
                    callback(i, len(timesteps), record)

        # 8. Decode and post-process as StableDiffusionPipeline
        has_nsfw = None
        if output_type == "latent":
            images = latents
        else:
            images = self.pipe.vae.decode(
                latents / self.pipe.vae.config.scaling_factor, return_dict=False, generator=generator
            )[0]
            images, has_nsfw = self.pipe.run_safety_checker(images, device, prompt_embeds.dtype)
            denormalize = [True] * images.shape[0] if has_nsfw is None else [not n for n in has_nsfw]
            images = self.pipe.image_processor.postprocess(images, output_type=output_type, do_denormalize=denormalize)
        self.pipe.maybe_free_model_hooks()
        for target in targets:
            target.previous = None  # drop references to maps held for A-STAR
        return SynthesisOutput(
            images=images, prompts=prompts, layouts=layouts, targets=targets, latents=latents,
            steps=records, appended_phrases=appended, nsfw_content_detected=has_nsfw,
            spatial_temporal_history=regional.history if regional is not None else {}, trajectory=trajectory,
        )  # fmt: skip

    # ------------------------------------------------------------------ 7.1 the guidance engine
    def _guide(
        self,
        guidance: GuidancePass,
        latents: torch.Tensor,
        t: torch.Tensor,
        step: int,
        step_size: float,
        threshold: float | None,
        max_refinement_steps: int,
    ) -> tuple[torch.Tensor, StepRecord, list[AttentionMaps]]:
        """One guided step: A&E iterative refinement at threshold steps (per sample), then one update.

        Refinement descends the methods' ``refinement_loss`` (A&E's max-attention loss, BoxDiff's
        inner-box loss; methods without one do not refine) and follows A&E's reference exactly: a
        sample keeps taking updates while the loss measured before its previous update was above
        ``1 - threshold`` (so it takes one update past the one that reached the target), at most
        ``max_refinement_steps``. Samples that are done are masked, so a batch equals its samples
        run one by one. The final update descends the sum of all active methods' losses.
        """

        def measure(z: torch.Tensor, objective: str) -> GuidanceMeasure:
            return self._loss_and_grad(guidance, z, t, step, objective)

        active = guidance.active
        batch, dtype = latents.shape[0], latents.dtype
        latents = latents.float()  # refinement iterates in fp32; cast back once, after the final update
        can_refine = threshold is not None and any(a.method.refinement_loss is not None for a in active)
        m = measure(latents, "refinement" if can_refine else "total")
        first = m
        iterations = torch.zeros(batch, dtype=torch.long)
        skipped = torch.zeros(batch, dtype=torch.bool, device=latents.device)
        if can_refine:
            target_loss = max(0.0, 1.0 - threshold)  # type: ignore[operator]
            skipped |= _not_finite(m, m.refinement)
            refining = (m.refinement > target_loss) & ~skipped
            while bool(refining.any()) and int(iterations.max()) < max_refinement_steps:
                latents = update_latents(latents, torch.nan_to_num(m.grad), step_size, refining)
                iterations += refining.long().cpu()
                above_before = m.refinement > target_loss  # loss at the latent just updated
                m = measure(latents, "refinement")
                bad = _not_finite(m, m.refinement)
                skipped |= bad
                refining &= above_before & ~bad
            if not all(_refines_its_own_loss(a) for a in active):  # the final update needs the total's gradient
                m = measure(latents, "total")
        skipped |= _not_finite(m, m.total)
        _warn_skipped(step, skipped)
        latents = update_latents(latents, torch.nan_to_num(m.grad), step_size, ~skipped).to(dtype)
        return latents, _step_record(step, t, first, iterations, skipped), m.maps

    def _refocus(
        self,
        guidance: GuidancePass,
        latents: torch.Tensor,
        t: torch.Tensor,
        step: int,
        loss_scale: float,
        max_iterations: int,
        loss_threshold: float | None,
        min_inside_target: float,
    ) -> tuple[torch.Tensor, StepRecord, list[AttentionMaps]]:
        """One step of Attention Refocusing's official update (``plms.py::update_loss_self_cross``).

        ``z <- z - grad(loss_scale * loss)`` repeated while the scaled loss measured before the update
        was above ``loss_threshold`` (None: no such test, as the official code's later steps) and the
        weakest object's in-box attention peak was below ``min_inside_target``, at most
        ``max_iterations`` updates. Per sample: one that is done is masked, so a batch equals its
        samples run one by one.
        """
        from .losses import weakest_inside_peak

        batch, dtype = latents.shape[0], latents.dtype
        latents = latents.float()
        car_options = next((a.options for a in guidance.active if "car_res" in a.options), None)
        running = torch.ones(batch, dtype=torch.bool, device=latents.device)
        skipped = torch.zeros_like(running)
        iterations = torch.zeros(batch, dtype=torch.long)
        first = m = None
        for _ in range(max_iterations):
            m = self._loss_and_grad(guidance, latents, t, step)
            first = first or m
            bad = _not_finite(m, m.total)
            skipped |= bad & running
            running &= ~bad
            latents = update_latents(latents, torch.nan_to_num(m.grad), loss_scale, running)
            iterations += running.long().cpu()
            if loss_threshold is not None:
                running &= loss_scale * m.total > loss_threshold
            if car_options is not None:  # without CAR's maps there is no in-box peak to stop on
                weakest = torch.stack(
                    [weakest_inside_peak(maps, target, **car_options) for maps, target in zip(m.maps, guidance.targets)]
                )
                running &= weakest.to(running.device) < min_inside_target
            if not bool(running.any()):
                break
        _warn_skipped(step, skipped)
        return latents.to(dtype), _step_record(step, t, first, iterations, skipped, last=m), m.maps

    def _loss_and_grad(
        self, guidance: GuidancePass, latents: torch.Tensor, t: torch.Tensor, step: int, objective: str = "total"
    ) -> GuidanceMeasure:
        """ONE batched conditional forward with capture; per-sample fp32 losses summed for ONE backward.

        ``objective`` picks what the gradient is of: "total" (every method's weighted losses) or
        "refinement" (the methods' A&E-style refinement losses).
        """
        capture, active, targets = guidance.capture, guidance.active, guidance.targets
        with torch.enable_grad():
            z = latents.detach().float().requires_grad_(True)  # fp32 leaf: the update is done in fp32
            model_input = self.scheduler.scale_model_input(z, t).to(self.unet.dtype)
            capture.guidance_forward(
                lambda: self.unet(
                    model_input, t, encoder_hidden_states=guidance.cond_embeds,
                    cross_attention_kwargs=guidance.cross_attention_kwargs, return_dict=False,
                ),
                guidance.latent_hw,
            )  # fmt: skip
            per_method: dict[str, list[torch.Tensor]] = {a.name: [] for a in active}
            refinement: list[torch.Tensor] = []
            for b, target in enumerate(targets):
                maps = capture.maps(b)
                for a in active:
                    per_method[a.name].append(_method_loss(a, maps, target, step))
                if objective == "refinement":
                    refining = [a for a in active if a.method.refinement_loss is not None]
                    refinement.append(sum(_refinement_loss(a, maps, target, step) for a in refining))
            losses = {name: torch.stack(values).float() for name, values in per_method.items()}  # (B,) each
            total = torch.stack(list(losses.values())).sum(dim=0)  # (B,)
            refine = torch.stack(refinement).float() if refinement else None  # (B,)
            objective_loss = refine if refine is not None else total
            # Samples are independent, so d(sum_b L_b)/dz_b = dL_b/dz_b: one backward for the batch.
            # A non-finite sample is left out of the sum so it cannot poison the others' gradients.
            summed = torch.where(torch.isfinite(objective_loss), objective_loss, torch.zeros_like(objective_loss)).sum()
            grad = torch.autograd.grad(summed, z)[0] if summed.requires_grad else torch.zeros_like(z)
            maps = [_detached(capture.maps(b)) for b in range(len(targets))]
            capture.clear()
        return GuidanceMeasure(
            losses={k: v.detach() for k, v in losses.items()},
            total=total.detach(),
            grad=grad,
            maps=maps,
            refinement=refine.detach() if refine is not None else None,
        )

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
        **method_options: Any,
    ) -> GuidanceMeasure:
        """Each method's loss and the summed loss's gradient at ``latents`` (one item per latent): for inspection.

        On a GLIGEN UNet (unless ``gligen=False``) the layouts' grounding tokens are in, gated layers on.
        """
        items = list(layout_or_prompt) if isinstance(layout_or_prompt, (list, tuple)) else [layout_or_prompt]
        if len(items) != latents.shape[0]:
            raise ValueError(
                f"`latents` has {latents.shape[0]} samples for {len(items)} layouts/prompts; give one each"
            )
        active, _ = self._resolve_methods(methods, method_options)
        if not active:
            raise ValueError("`methods` has no guidance method to measure; name one of synth.methods.METHODS")
        prompts, targets, _ = self._targets(items, token_indices, missing_phrases, active)
        cond_embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        kwargs = None
        layouts = [item if isinstance(item, Layout) else None for item in items]
        if self._use_gligen(gligen, layouts):
            kwargs = {"gligen": grounding_kwargs(self.pipe, layouts, False, self.device)[1]}
        latent_hw = tuple(latents.shape[-2:])
        self._fill_resolutions(active, latent_hw)
        requests = [r for a in active for r in a.method.needs(a.options, latent_hw)]
        self.scheduler.set_timesteps(self.scheduler.config.num_train_timesteps, device=self.device)
        t = torch.as_tensor(timestep, device=self.device)
        with self._capture(requests) as capture, fuser_enabled(self.unet) as set_fuser:
            set_fuser(True)
            guidance = GuidancePass(capture, active, cond_embeds, targets, latent_hw, kwargs)
            measured = self._loss_and_grad(guidance, latents.to(self.device), t, step)
        measured.targets = targets
        return measured

    # ------------------------------------------------------------------ helpers
    def _fill_resolutions(self, active: list[_ActiveMethod], latent_hw: tuple[int, int]) -> None:
        """Unset map sizes (``attn_res``, ``car_res``, ...) -> latent / the model's ``attention_downscale`` (SD: 4)."""
        size = downscaled_size(latent_hw, self.defaults.attention_downscale)
        for a in active:
            for key, value in a.options.items():
                if key.endswith("_res") and value is None:
                    a.options[key] = size

    def _check_inputs(self, layout_or_prompt, num_inference_steps, batch_size, height, width, output_type) -> list:
        items = list(layout_or_prompt) if isinstance(layout_or_prompt, (list, tuple)) else [layout_or_prompt]
        if not items:
            raise ValueError("`layout_or_prompt` is empty; give a Layout, a prompt string, or a list of them")
        for k, item in enumerate(items):
            if not isinstance(item, (Layout, str)) or (isinstance(item, str) and not item.strip()):
                raise TypeError(
                    f"`layout_or_prompt[{k}]` is {type(item).__name__} {item!r}; "
                    "give a layout.Layout or a non-empty prompt"
                )
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive int, got {num_inference_steps!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` (images per layout/prompt) must be a positive int, got {batch_size!r}")
        multiple = self.pipe.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        for name, value in (("height", height), ("width", width)):
            if value % multiple != 0:
                raise ValueError(
                    f"`{name}` must be a multiple of {multiple} for this model (VAE factor x UNet downsampling), "
                    f"got {value}; try {max(multiple, round(value / multiple) * multiple)}"
                )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        return items

    def _resolve_methods(
        self, methods: Sequence[str] | Mapping[str, Mapping[str, Any]], options: dict[str, Any]
    ) -> tuple[list[_ActiveMethod], dict[str, Any]]:
        """Method names -> registry entries with their options; engine options from user > methods > A&E
        (:func:`scenewright.synth.recipe.resolve_methods`)."""
        active, engine = resolve_methods(methods, options)
        return [_ActiveMethod(name, method, opts) for name, method, opts in active], engine

    def _targets(
        self,
        items: list[Layout | str],
        token_indices: Sequence[int] | Sequence[Sequence[int]] | None,
        missing_phrases: str,
        active: list[_ActiveMethod],
    ) -> tuple[list[str], list[GuidanceTargets], list[list[str]]]:
        """Per layout/prompt: the prompt to encode, its targets, and any phrases appended to it."""
        if not active and token_indices is not None:
            raise ValueError("`token_indices` were given but no guidance method is on; add methods=['attend_excite']")
        if not active:  # unguided: the prompt is encoded as given, nothing to map
            prompts = [item.prompt if isinstance(item, Layout) else item for item in items]
            empty = [GuidanceTargets(token_groups=[], boxes=torch.zeros(0, 4), eot_index=0) for _ in items]
            return prompts, empty, [[] for _ in items]
        from .tokens import token_groups_for_layout, validate_token_indices

        if token_indices is not None and len(token_indices) and isinstance(token_indices[0], (int, np.integer)):
            token_indices = [token_indices] * len(items)  # type: ignore[list-item]
        if token_indices is not None and len(token_indices) != len(items):
            raise ValueError(
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
            mapping = token_groups_for_layout(self.tokenizer, prompt, phrases, names=names, missing=missing_phrases)
            groups = [list(g) for g in mapping.token_groups]
            if token_indices is not None:
                indices = [int(i) for i in token_indices[k]]
                validate_token_indices(self.tokenizer, mapping.prompt, indices)
                groups = [[i] for i in indices]
            boxes = torch.tensor(item.boxes if isinstance(item, Layout) else [], dtype=torch.float32).reshape(-1, 4)
            if active and not groups:
                raise ValueError(
                    f"item {k} ({prompt!r}) gives no tokens to guide; pass a Layout with objects or `token_indices`"
                )
            if needs_boxes and len(boxes) != len(groups):
                raise ValueError(
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
        return is_gligen_unet(self.unet) and has_boxes if gligen is None else False

    def _regional(
        self,
        control: SpatialTemporalControl | bool | None,
        layouts: list[Layout | None],
        num_steps: int,
        latent_hw: tuple[int, int],
        device: torch.device,
    ) -> RegionalControl | None:
        """Spatial-temporal control's per-image local descriptions (phrases), boxes and weights; None when off."""
        if control is None or control is False:
            return None
        if control is True:
            control = SpatialTemporalControl()
        if not isinstance(control, SpatialTemporalControl):
            raise TypeError(
                f"`spatial_temporal` must be True or a synth.spatial_temporal.SpatialTemporalControl, got {control!r}"
            )
        if not any(lay is not None and lay.objects for lay in layouts):
            raise ValueError("`spatial_temporal` needs layouts with objects (their phrases and boxes); pass a Layout")
        batch, n = len(layouts), max(len(lay.objects) if lay is not None else 0 for lay in layouts)
        dim = self.unet.config.cross_attention_dim
        local = torch.zeros(batch, n, self.tokenizer.model_max_length, dim, device=device)
        boxes = torch.zeros(batch, n, 4, device=device)
        present = torch.zeros(batch, n)
        for b, lay in enumerate(layouts):
            if lay is not None and lay.objects:
                embeds, _ = self.pipe.encode_prompt(lay.phrases, device, 1, False)  # (N_b, 77, D)
                local[b, : len(lay.objects)] = embeds.float()
                boxes[b, : len(lay.objects)] = torch.tensor(lay.boxes, dtype=torch.float32, device=device)
                present[b, : len(lay.objects)] = 1
        if control.weights is None:
            weights = fixed_schedule(num_steps, n, control.local_weight, batch)
        else:
            weights = torch.as_tensor(control.weights, dtype=torch.float32)
            if tuple(weights.shape) != (num_steps, batch, n):
                raise ValueError(
                    f"`SpatialTemporalControl.weights` has shape {tuple(weights.shape)}, expected (steps, images, "
                    f"objects) = {(num_steps, batch, n)}"
                )
        return RegionalControl(
            local, boxes, weights * present, latent_hw=latent_hw, softness=control.softness, present=present,
            control=control,
        )  # fmt: skip

    def _capture(self, requests: list):
        """Attention capture on this UNet, sharing the early-exit points learnt by earlier runs."""
        return attention_capture(self.unet, requests, exit_plan=self._exit_plans.setdefault(id(self.unet), {}))

    def _extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """eta/generator only for schedulers whose ``step`` takes them (diffusers' prepare_extra_step_kwargs)."""
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs


def _method_loss(active: _ActiveMethod, maps: AttentionMaps, targets: GuidanceTargets, step: int) -> torch.Tensor:
    """One method's loss for one sample: the weighted sum of its registered loss terms (0-dim fp32)."""
    total = None
    for term in active.method.losses:
        fn, weight = term if isinstance(term, tuple) else (term, 1.0)
        if isinstance(weight, str):
            weight = active.options[weight]
        value = weight * fn(maps, targets, step, **active.options).float()
        total = value if total is None else total + value
    return total  # type: ignore[return-value]


def _not_finite(m: GuidanceMeasure, loss: torch.Tensor) -> torch.Tensor:
    """(B,) True where a sample's loss or gradient is not finite."""
    return ~(torch.isfinite(loss) & torch.isfinite(m.grad).flatten(1).all(dim=1))


def _warn_skipped(step: int, skipped: torch.Tensor) -> None:
    if bool(skipped.any()):
        warnings.warn(
            f"step {step}: guidance loss or gradient is not finite for samples {skipped.nonzero().flatten().tolist()};"
            " their update is skipped (try a smaller `scale_factor`)",
            RuntimeWarning,
            stacklevel=4,
        )


def _refinement_loss(active: _ActiveMethod, maps: AttentionMaps, targets: GuidanceTargets, step: int) -> torch.Tensor:
    """The loss A&E-style refinement compares with ``1 - threshold`` (unweighted, as the official code)."""
    return active.method.refinement_loss(maps, targets, step, **active.options).float()


def _refines_its_own_loss(active: _ActiveMethod) -> bool:
    """True when the method's refinement loss IS its whole loss (A&E), so one gradient serves both."""
    return tuple(active.method.losses) == (active.method.refinement_loss,)


def _detached(maps: AttentionMaps) -> AttentionMaps:
    """A copy of ``maps`` outside the autograd graph (A-STAR's retention loss reads the previous step)."""
    return AttentionMaps(entries=[replace(e, probs=e.probs.detach()) for e in maps.entries])


__all__ = [
    "ENGINE_DEFAULTS",
    "GuidanceMeasure",
    "StepRecord",
    "SynthesisOutput",
    "Synthesizer",
    "step_sizes",
    "update_latents",
]
