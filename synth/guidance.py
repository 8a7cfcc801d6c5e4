"""The attention-guidance engine: losses on captured attention maps, and the step controllers that descend them.

Shared by every method (Attend-and-Excite, Chefer et al. 2023; Attention Refocusing CAR/SAR, Phung et al.
2024; A-STAR, Agarwal et al. 2023; layout guidance, Chen et al. 2024; BoxDiff, Xie et al. 2023):
:func:`loss_and_grad` runs ONE batched conditional-only forward of the backbone's denoiser with attention
capture (a UNet's cross/self layers, :mod:`scenewright.synth.attention`; FLUX.1's and SD3's joint attention,
:mod:`scenewright.synth.joint_attention`), sums the active methods' losses per sample and takes ONE backward.
The latents are a leaf in fp32 whatever the model's dtype (FLUX's packed (B, h*w, 4C) ones as they are), and
so are the maps, the losses and the update.
Two schedules step on it, each a :class:`~scenewright.synth.controllers.StepController`:
:class:`AttendExciteGuidance` (``z <- z - step_size[i] * grad`` with A&E's step sizes, refining
iteratively at the threshold steps) and :class:`RefocusingGuidance` (Attention Refocusing's official
schedule, :class:`scenewright.synth.methods.RefocusingSchedule`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .backbones import Conditioning, JointConditioning
from .attention import AttentionCapture, checkpointed_blocks
from .joint_attention import JointAttentionCapture
from .controllers import StepController
from .losses import weakest_inside_peak
from .maps import AttentionMaps, GuidanceTargets, MapRequest
from .methods import RefocusingSchedule
from .recipe import ActiveMethod
from .regional_attention import RegionalAttention, regional_attention


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
class GuidanceMeasure:
    """Losses and their gradient at one latent: what the engine steps on."""

    losses: dict[str, torch.Tensor]  # method -> (B,) fp32
    total: torch.Tensor  # (B,) fp32
    grad: torch.Tensor  # fp32, as the latents (FLUX: packed (B, h*w, 4C)): d objective_b / d latents_b
    maps: list[AttentionMaps]  # per sample, detached
    refinement: torch.Tensor | None = None  # (B,) fp32: summed refinement losses, when that was the objective
    targets: list[GuidanceTargets] | None = None  # per sample, as the losses saw them (set by `measure`)


@dataclass
class GuidancePass:
    """What every grad-enabled guidance forward of one ``generate``/``measure`` call shares."""

    backbone: Any  # synth.backbones: runs the conditional forward; its `model` carries the capture's processors
    capture: AttentionCapture | JointAttentionCapture
    active: list[ActiveMethod]  # the methods guiding, with their resolved options
    conditioning: Conditioning | JointConditioning  # the guidance forward reads the conditional rows only
    targets: list[GuidanceTargets]  # per sample
    latent_hw: tuple[int, int]  # the maps' grid: SD's latents (h, w), an MM-DiT's image tokens (h, w)
    attention_kwargs: dict[str, Any] | None  # GLIGEN: the conditional half's grounding tokens
    # the engine option: recompute each block's activations in the backward pass instead of keeping them
    gradient_checkpointing: bool = False
    guidance_scale: float = 1.0  # FLUX.1-dev's distilled guidance, fed to the guided forward as to the loop's

    @property
    def model(self):
        """The UNet or MM-DiT transformer the guided forward runs."""
        return self.backbone.model


@contextmanager
def mmdit_capture(
    backbone, requests: Sequence[MapRequest], regional: RegionalAttention | None, grid: tuple[int, int] | None,
    blocks: Sequence[int] | None,
) -> Iterator[JointAttentionCapture | None]:  # fmt: skip
    """An MM-DiT's processors for one call: FLUX's regional attention when on, and the guidance capture of the maps
    the methods request (wrapping it) from ``blocks`` (None: the backbone's ``guidance_blocks``); yields the capture,
    None when no map is requested."""
    with ExitStack() as stack:
        if regional is not None:
            stack.enter_context(regional_attention(backbone.model, regional))
        yield stack.enter_context(backbone.guidance_capture(requests, grid, blocks)) if requests else None


def step_sizes(scale_factor: float, num_steps: int) -> np.ndarray:
    """A&E's step-size schedule ``scale_factor * sqrt(linspace(1, 0.5, T))`` (Chefer et al. 2023)."""
    return scale_factor * np.sqrt(np.linspace(1.0, 0.5, num_steps))


def update_latents(latents: torch.Tensor, grad: torch.Tensor, step_size: float, active: torch.Tensor) -> torch.Tensor:
    """One guidance update ``z - step_size * grad`` in fp32 for the ``active`` samples; cast back."""
    mask = active.to(torch.float32).view(-1, *([1] * (latents.ndim - 1)))  # (B, 1, 1, 1)
    updated = latents.float() - step_size * grad.float() * mask
    return updated.to(latents.dtype)


def method_loss(
    active: ActiveMethod, maps: AttentionMaps, targets: GuidanceTargets, step: int, previous: AttentionMaps | None
) -> torch.Tensor:
    """One method's loss for one sample: the weighted sum of its registered loss terms (0-dim fp32).

    ``previous``: this sample's maps at the last guided step (detached), which A-STAR's retention reads.
    """
    total = None
    for term in active.method.losses:
        fn, weight = term if isinstance(term, tuple) else (term, 1.0)
        if isinstance(weight, str):
            weight = active.options[weight]
        value = weight * fn(maps, targets, step, previous=previous, **active.options).float()
        total = value if total is None else total + value
    return total  # type: ignore[return-value]


def loss_and_grad(
    guidance: GuidancePass,
    latents: torch.Tensor,
    t: torch.Tensor,
    step: int,
    objective: str = "total",
    previous: list[AttentionMaps] | None = None,
) -> GuidanceMeasure:
    """ONE batched conditional forward with capture; per-sample fp32 losses summed for ONE backward.

    ``objective`` picks what the gradient is of: "total" (every method's weighted losses) or
    "refinement" (the methods' A&E-style refinement losses). ``previous``: per sample, the maps of the
    last guided step (A-STAR's retention loss), None before the first.
    """
    capture, active, targets = guidance.capture, guidance.active, guidance.targets
    previous = previous or [None] * len(targets)
    with torch.enable_grad():
        z = latents.detach().float().requires_grad_(True)  # fp32 leaf: the update is done in fp32
        # Set for the forward only: the backward re-runs checkpointed blocks from what the forward recorded.
        checkpointing = checkpointed_blocks(guidance.model, capture) if guidance.gradient_checkpointing else nullcontext()
        with checkpointing:
            capture.guidance_forward(
                lambda: guidance.backbone.guidance_forward(
                    z, t, guidance.conditioning, guidance.guidance_scale, guidance.attention_kwargs
                ),
                guidance.latent_hw,
            )
        per_method: dict[str, list[torch.Tensor]] = {a.name: [] for a in active}
        refinement: list[torch.Tensor] = []
        for b, target in enumerate(targets):
            maps = capture.maps(b)
            for a in active:
                per_method[a.name].append(method_loss(a, maps, target, step, previous[b]))
            if objective == "refinement":
                refining = [a for a in active if a.method.refinement_loss is not None]
                refinement.append(sum(_refinement_loss(a, maps, target, step, previous[b]) for a in refining))
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


class AttendExciteGuidance(StepController):
    """A&E's schedule (Chefer et al. 2023) for any methods: guide steps ``first_step <= i < last_step``.

    Each guided step takes A&E's iterative refinement at the threshold steps, then one update of
    ``step_sizes[i]`` down the summed losses. Keeps, per sample, the maps of the last guided step and
    hands them to the next step's losses (A-STAR's retention).
    """

    def __init__(
        self,
        guidance: GuidancePass,
        step_sizes: np.ndarray,  # (T,)
        thresholds: dict[int, float],  # step -> refine until the refinement loss <= 1 - threshold
        max_refinement_steps: int,
        last_step: int,  # A&E's max_iter_to_alter
        first_step: int = 0,  # latent composition ends here: its pastes would overwrite earlier updates
    ):
        self.guidance = guidance
        self.step_sizes = step_sizes
        self.thresholds = thresholds
        self.max_refinement_steps = max_refinement_steps
        self.first_step, self.last_step = first_step, last_step
        self.previous: list[AttentionMaps] | None = None  # per sample, detached

    def guide(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, StepRecord | None]:
        if not self.first_step <= i < self.last_step:
            return latents, None  # no grad-enabled forward runs
        latents, record, self.previous = attend_excite_step(
            self.guidance, latents, t, i, step_size=float(self.step_sizes[i]), threshold=self.thresholds.get(i),
            max_refinement_steps=self.max_refinement_steps, previous=self.previous,
        )  # fmt: skip
        return latents, record


class RefocusingGuidance(StepController):
    """Attention Refocusing's official schedule (Phung et al. 2024, :class:`~scenewright.synth.methods.RefocusingSchedule`).

    ``loss_scale_factor`` multiplies the schedule's loss scales (``plain_sd_loss_scale`` off GLIGEN).
    """

    def __init__(
        self, guidance: GuidancePass, schedule: RefocusingSchedule, loss_scale_factor: float = 1.0, first_step: int = 0
    ):
        self.guidance = guidance
        self.schedule = schedule
        self.loss_scale_factor = loss_scale_factor
        self.first_step = first_step  # latent composition ends here

    def guide(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, StepRecord | None]:
        schedule = self.schedule
        if i < self.first_step or not schedule.guides(i):
            return latents, None
        latents, record, _ = refocusing_step(
            self.guidance, latents, t, i,
            loss_scale=schedule.loss_scale(i) * self.loss_scale_factor,
            max_iterations=schedule.max_iterations(i),
            loss_threshold=schedule.loss_threshold if schedule.uses_threshold(i) else None,
            min_inside_target=schedule.min_inside_target,
        )  # fmt: skip
        return latents, record


def attend_excite_step(
    guidance: GuidancePass,
    latents: torch.Tensor,
    t: torch.Tensor,
    step: int,
    step_size: float,
    threshold: float | None,
    max_refinement_steps: int,
    previous: list[AttentionMaps] | None = None,
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
        return loss_and_grad(guidance, z, t, step, objective, previous)

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


def refocusing_step(
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
    batch, dtype = latents.shape[0], latents.dtype
    latents = latents.float()
    car_options = next((a.options for a in guidance.active if "car_res" in a.options), None)
    running = torch.ones(batch, dtype=torch.bool, device=latents.device)
    skipped = torch.zeros_like(running)
    iterations = torch.zeros(batch, dtype=torch.long)
    first = m = None
    for _ in range(max_iterations):
        m = loss_and_grad(guidance, latents, t, step)
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


def _not_finite(m: GuidanceMeasure, loss: torch.Tensor) -> torch.Tensor:
    """(B,) True where a sample's loss or gradient is not finite."""
    return ~(torch.isfinite(loss) & torch.isfinite(m.grad).flatten(1).all(dim=1))


def _warn_skipped(step: int, skipped: torch.Tensor) -> None:
    if bool(skipped.any()):
        warnings.warn(
            f"step {step}: guidance loss or gradient is not finite for samples {skipped.nonzero().flatten().tolist()};"
            " their update is skipped (try a smaller `scale_factor`)",
            RuntimeWarning,
            stacklevel=5,
        )


def _refinement_loss(
    active: ActiveMethod, maps: AttentionMaps, targets: GuidanceTargets, step: int, previous: AttentionMaps | None
) -> torch.Tensor:
    """The loss A&E-style refinement compares with ``1 - threshold`` (unweighted, as the official code)."""
    return active.method.refinement_loss(maps, targets, step, previous=previous, **active.options).float()


def _refines_its_own_loss(active: ActiveMethod) -> bool:
    """True when the method's refinement loss IS its whole loss (A&E), so one gradient serves both."""
    return tuple(active.method.losses) == (active.method.refinement_loss,)


def _detached(maps: AttentionMaps) -> AttentionMaps:
    """A copy of ``maps`` outside the autograd graph (A-STAR's retention loss reads the previous step)."""
    return replace(maps, entries=[replace(e, probs=e.probs.detach()) for e in maps.entries])


__all__ = [
    "AttendExciteGuidance",
    "GuidanceMeasure",
    "GuidancePass",
    "RefocusingGuidance",
    "StepRecord",
    "attend_excite_step",
    "loss_and_grad",
    "method_loss",
    "mmdit_capture",
    "refocusing_step",
    "step_sizes",
    "update_latents",
]
