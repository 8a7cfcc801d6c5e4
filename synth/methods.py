"""The guidance-method registry: which losses a method sums, which maps it needs, and its defaults.

The engine (``synth.pipeline``) looks a method up with :func:`get_method`, installs a capture for
``method.needs(options, latent_hw)``, and at each guided step sums ``weight * loss(maps, targets, step,
**options)`` over ``method.losses``. Schedule options (step size, iterations, thresholds) belong to
the engine; what is here is per-method: which maps, loss weights and loss options, with the defaults
of each method's official code (or paper, where no code exists).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from . import losses
from .maps import MapRequest

@dataclass(frozen=True)
class GuidanceMethod:
    """One training-free guidance method: the losses it sums and the attention maps they read."""

    name: str
    losses: tuple[Callable, ...]
    needs: Callable[[dict, tuple[int, int]], list[MapRequest]]  # (options, latent (h, w)) -> maps to capture
    defaults: dict = field(default_factory=dict)
    uses_boxes: bool = False
    citation: str = ""

    def options(self, overrides: dict | None = None) -> dict:
        """Defaults updated with ``overrides``; unknown keys raise so a typo never goes silently unused."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for guidance method {self.name!r}; valid: {sorted(self.defaults)}"
            )
        return {**self.defaults, **overrides}

def downscaled(latent_hw: tuple[int, int], factor: int) -> tuple[int, int]:
    """The UNet grid ``factor`` times coarser than the latent (it halves per level, rounding up)."""
    h, w = latent_hw
    return (math.ceil(h / factor), math.ceil(w / factor))

def _resolution(options: dict, latent_hw: tuple[int, int], key: str, factor: int) -> tuple[int, int]:
    """``options[key]`` when set, else latent/``factor`` (SD1.5 at 512 px: 64x64 latent, 16x16 = latent/4)."""
    value = options.get(key)
    return (int(value[0]), int(value[1])) if value is not None else downscaled(latent_hw, factor)

def _attend_excite_needs(options: dict, latent_hw: tuple[int, int]) -> list[MapRequest]:
    # diffusers: attn_res defaults to (16, 16) at 512 px, i.e. ceil(width / 32) = latent / 4.
    return [MapRequest("cross", (_resolution(options, latent_hw, "attn_res", 4),), ("up", "down", "mid"))]

ATTEND_EXCITE = GuidanceMethod(
    name="attend_excite",
    losses=(losses.attend_and_excite_loss,),
    needs=_attend_excite_needs,
    defaults={
        "token_indices": None,  # None: each token group's last token
        "attn_res": None,  # None: latent / 4 (16x16 for SD1.5 at 512 px), as diffusers
        "smooth_attentions": True,
        "kernel_size": 3,
        "sigma": 0.5,
    },
    uses_boxes=False,
    citation="Chefer et al., Attend-and-Excite, SIGGRAPH 2023 (diffusers StableDiffusionAttendAndExcitePipeline)",
)

METHODS: dict[str, GuidanceMethod] = {m.name: m for m in (ATTEND_EXCITE,)}

def get_method(name: str) -> GuidanceMethod:
    """The registered method called ``name``; unknown names raise listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown guidance method {name!r}; valid: {sorted(METHODS)} (or 'none')") from None
