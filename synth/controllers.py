"""Step controllers: what the denoising loop calls at each step, as diffusers calls its callbacks.

:meth:`scenewright.synth.pipeline.Synthesizer.generate` runs, at every step ``i`` (timestep ``t``), first
every controller's :meth:`StepController.before_step` (latent composition's pastes, GLIGEN's scheduled
sampling, spatial-temporal control's per-step weights), then every controller's
:meth:`StepController.guide` (the attention-guidance schedule of :mod:`scenewright.synth.guidance`),
then the classifier-free-guidance step. A feature is one controller; a new one is one new class passed
as ``generate(..., controllers=[...])``, with no edit to the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from scenewright.errors import InputError

from .composition import LatentComposition

if TYPE_CHECKING:  # annotations only: guidance imports this module for the base class
    from .guidance import StepRecord


class StepController:
    """Per-step hooks of the denoising loop; both default to doing nothing."""

    def before_step(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The latents (B, C, h, w) to denoise at step ``i``, before any guidance."""
        return latents

    def guide(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, StepRecord | None]:
        """Guided latents (B, C, h, w) and the step's record (None: this controller did not guide step ``i``)."""
        return latents, None


def run_guides(
    controllers: Sequence[StepController], i: int, t: torch.Tensor, latents: torch.Tensor
) -> tuple[torch.Tensor, StepRecord | None]:
    """Every controller's ``guide`` in order; the step's record is the one controller's that guided it."""
    record, guided_by = None, None
    for controller in controllers:
        latents, own = controller.guide(i, t, latents)
        if own is None:
            continue
        if record is not None:
            raise InputError(
                f"step {i} was guided by both {type(guided_by).__name__} and {type(controller).__name__}; "
                "run one guidance controller per step (pass methods=['none'] to guide with your own)"
            )
        record, guided_by = own, controller
    return latents, record


class LatentCompositionPaste(StepController):
    """LMD's stage 2 (Lian et al. 2024): paste each layout's placed objects into its images' rows.

    ``compositions`` has one :class:`~scenewright.synth.composition.LatentComposition` (or None, a bare
    prompt) per layout/prompt, whose images are ``images_per_item`` consecutive rows of the batch.
    """

    def __init__(self, compositions: Sequence[LatentComposition | None], images_per_item: int):
        self.compositions = list(compositions)
        self.images_per_item = images_per_item

    @property
    def steps(self) -> int:
        """Steps ``0 .. steps-1`` are composed; guidance waits for them, as the pastes would overwrite it."""
        return max((c.steps for c in self.compositions if c is not None and c.objects), default=0)

    def before_step(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        for k, composition in enumerate(self.compositions):
            if composition is not None and composition.objects and i < composition.steps:
                rows = slice(k * self.images_per_item, (k + 1) * self.images_per_item)
                latents[rows] = composition.apply(i, latents[rows])
        return latents


class GligenScheduledSampling(StepController):
    """GLIGEN's scheduled sampling (Li et al. 2023): the gated layers lay out only the first ``grounding_steps``."""

    def __init__(self, set_fuser: Callable[[bool], None], grounding_steps: int):
        self.set_fuser = set_fuser  # from scenewright.synth.gligen.fuser_enabled
        self.grounding_steps = grounding_steps

    def before_step(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if i == self.grounding_steps:
            self.set_fuser(False)
        return latents


__all__ = ["GligenScheduledSampling", "LatentCompositionPaste", "StepController", "run_guides"]
