"""The guidance-method registry: which losses a method sums, which maps they read, and its defaults.

The engine (``scenewright.synth.guidance``) looks a method up with :func:`get_method`, captures
``method.needs(options, latent_hw)``, and at each guided step sums ``weight * loss(maps, targets,
step, previous=..., **options)`` over ``method.losses``, where a term is a loss or ``(loss, weight_option)``.
Schedule options (``scale_factor``, ``max_iter_to_alter``, ``thresholds``, ``max_refinement_steps``)
belong to the engine, whose defaults are Attend-and-Excite's. The weights here are chosen so that,
under that schedule (latent step ``scale_factor * sqrt(linspace(1, 0.5, T)[i])`` = 20 at step 0), each
method's first step equals its official one:

- A&E and BoxDiff use exactly that schedule: weight 1.
- CAR / SAR (official ``plms.py``): ``x -= grad(scale * loss)`` with scale 3 (CAR) / 4 (SAR) early,
  then 2-3 and 1; steps 0-29, up to 5 iterations while the scaled loss > 0.1: weights 3/20, 4/20.
- Layout guidance (official ``inference.py``): ``latents -= sigma_t^2 * grad(30 * loss)`` on LMS
  latents, i.e. ``(1 - alpha_bar_t) * 30 * grad`` ~ 30 on the unit-variance latent early; steps 0-9,
  up to 5 iterations while loss > 0.2: weight 30/20.
- A-STAR (paper, no code) builds on A&E's schedule: weights 1 and 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from scenewright.errors import InputError

from . import losses
from .maps import SD_ATTENTION_DOWNSCALE, MapRequest, downscaled_size

LossTerm = Callable | tuple[Callable, str]  # a loss, or (loss, name of the option holding its weight)


@dataclass(frozen=True)
class GuidanceMethod:
    """One training-free guidance method: the losses it sums and the attention maps they read."""

    name: str
    losses: tuple[LossTerm, ...]
    needs: Callable[[dict, tuple[int, int]], list[MapRequest]]  # (options, latent (h, w)) -> maps to capture
    defaults: dict = field(default_factory=dict)
    uses_boxes: bool = False
    citation: str = ""
    # What A&E-style iterative refinement compares with ``1 - threshold`` and descends; None: the
    # method's official code does no such refinement.
    refinement_loss: Callable | None = None


def _resolution(options: dict, latent_hw: tuple[int, int], key: str) -> tuple[int, int]:
    """``options[key]`` when set, else SD's latent / 4 (SD1.5 at 512 px: 64x64 latent, 16x16 maps).

    ``Synthesizer`` fills unset keys from the model's ``attention_downscale`` first; this fallback is for
    direct calls.
    """
    value = options.get(key)
    if value is None:
        return downscaled_size(latent_hw, SD_ATTENTION_DOWNSCALE)
    if len(value) != 2 or min(int(v) for v in value) < 1:
        raise InputError(f"`{key}` must be (h, w) of an attention grid, e.g. (16, 16); got {value!r}")
    return (int(value[0]), int(value[1]))


def _cross_at_attn_res(options: dict, latent_hw: tuple[int, int]) -> list[MapRequest]:
    # A&E, A-STAR, BoxDiff: cross maps at attn_res (diffusers: 16x16 = ceil(width / 32) = latent / 4).
    return [MapRequest("cross", (_resolution(options, latent_hw, "attn_res"),))]  # every place (MapRequest default)


def _car_needs(options: dict, latent_hw: tuple[int, int]) -> list[MapRequest]:
    # Official `get_all_attention(..., res=16)`: every 16x16 cross layer, up, mid and down.
    return [MapRequest("cross", (_resolution(options, latent_hw, "car_res"),))]


def _sar_needs(options: dict, latent_hw: tuple[int, int]) -> list[MapRequest]:
    # Official `caculate_loss_self_att(list_res=[256])`: every self layer with 256 queries (16x16).
    return [MapRequest("self", (_resolution(options, latent_hw, "sar_res"),))]


def _layout_guidance_needs(options: dict, latent_hw: tuple[int, int]) -> list[MapRequest]:
    # Official `compute_ca_loss(attn_maps_mid, attn_maps_up)`: the mid block's cross layers and the
    # first up block with attention (up_blocks.1 of SD1.5, 16x16 = latent / 4).
    return [
        MapRequest("cross", None, ("mid",)),
        MapRequest("cross", (_resolution(options, latent_hw, "up_res"),), ("up",)),
    ]


_A_AND_E_MAP_OPTIONS = {
    "token_indices": None,  # None: each token group's last token (its head noun)
    "attn_res": None,  # None: latent / 4 (16x16 for SD1.5 at 512 px), as diffusers
    "smooth_attentions": True,
    "kernel_size": 3,
    "sigma": 0.5,
}

ATTEND_EXCITE = GuidanceMethod(
    name="attend_excite",
    losses=(losses.attend_and_excite_loss,),
    needs=_cross_at_attn_res,
    defaults=dict(_A_AND_E_MAP_OPTIONS),
    uses_boxes=False,
    citation="Chefer et al., Attend-and-Excite, SIGGRAPH 2023; diffusers StableDiffusionAttendAndExcitePipeline",
    refinement_loss=losses.attend_and_excite_loss,
)

CAR = GuidanceMethod(
    name="car",
    losses=((losses.cross_attention_refocusing_loss, "car_weight"),),
    needs=_car_needs,
    defaults={"car_res": None, "smooth_attentions": True, "kernel_size": 3, "sigma": 0.5, "car_weight": 3 / 20},
    uses_boxes=True,
    citation="Phung et al., Grounded Text-to-Image Synthesis with Attention Refocusing, CVPR 2024 (CAR)",
)

SAR = GuidanceMethod(
    name="sar",
    losses=((losses.self_attention_refocusing_loss, "sar_weight"),),
    needs=_sar_needs,
    defaults={"sar_res": None, "sar_weight": 4 / 20},
    uses_boxes=True,
    citation="Phung et al., Grounded Text-to-Image Synthesis with Attention Refocusing, CVPR 2024 (SAR)",
)

ASTAR = GuidanceMethod(
    name="astar",
    losses=(
        (losses.astar_segregation_loss, "segregation_weight"),
        (losses.astar_retention_loss, "retention_weight"),
    ),
    needs=_cross_at_attn_res,
    defaults={
        **_A_AND_E_MAP_OPTIONS,
        "retention_threshold": 0.5,  # binarize the previous map at this fraction of its peak
        "segregation_weight": 1.0,
        "retention_weight": 1.0,
    },
    uses_boxes=False,
    citation="Agarwal et al., A-STAR: Test-time Attention Segregation and Retention, ICCV 2023 (from the paper)",
)

LAYOUT_GUIDANCE = GuidanceMethod(
    name="layout_guidance",
    losses=((losses.layout_guidance_loss, "layout_weight"),),
    needs=_layout_guidance_needs,
    defaults={"up_res": None, "layout_weight": 30 / 20},
    uses_boxes=True,
    citation="Chen et al., Training-Free Layout Control with Cross-Attention Guidance, WACV 2024",
)

BOXDIFF = GuidanceMethod(
    name="boxdiff",
    losses=(losses.boxdiff_loss,),
    needs=_cross_at_attn_res,
    defaults={**_A_AND_E_MAP_OPTIONS, "top_fraction": 0.8, "corner_margin": 6},  # official P and L
    uses_boxes=True,
    citation="Xie et al., BoxDiff: Text-to-Image Synthesis with Training-Free Box-Constrained Diffusion, ICCV 2023",
    refinement_loss=losses.boxdiff_inner_box_loss,
)

def _refocusing_needs(options: dict, latent_hw: tuple[int, int]) -> list[MapRequest]:
    # CAR's and SAR's maps, plus GLIGEN's fuser at the same 16x16 level (none on a plain SD UNet).
    grounding = MapRequest("grounding", (_resolution(options, latent_hw, "grounding_res"),))
    return [*_car_needs(options, latent_hw), *_sar_needs(options, latent_hw), grounding]


@dataclass(frozen=True)
class RefocusingSchedule:
    """Attention Refocusing's guidance schedule as the official code runs it (``plms.py::update_loss_self_cross``).

    Step ``i`` (0 = noisiest of 50 PLMS steps) is guided when ``i < every_step_until`` or, after that,
    when ``i % then_every == 0`` and ``i <= last_step`` (0-9, 10, 15, ..., 35). Each guided step takes
    up to ``max_iterations(i)`` updates ``z <- z - grad(loss_scale(i) * loss)``, continuing while the
    weakest object's in-box cross-attention peak is below ``min_inside_target`` and, in the first
    ``every_step_until`` steps only, the scaled loss is above ``loss_threshold``.

    Where the official code differs from the paper (Phung et al., CVPR 2024): the paper's objective is
    CAR + SAR, the code adds a third loss on GLIGEN's gated self-attention, weighted 3x
    (:func:`scenewright.synth.losses.grounding_refocusing_loss`); the stopping test on the weakest in-box peak,
    the piecewise loss scales and iteration caps below and the sparse every-fifth-step guidance after
    step 10 are the code's, not the paper's equations; CAR's piecewise per-value weights likewise
    (see :func:`scenewright.synth.losses.cross_attention_refocusing_loss`). The gated layers run for the first 30%
    of the steps (``alpha_type=[0.3, 0.0, 0.7]`` in ``guide_gligen.py``), i.e. diffusers'
    ``gligen_scheduled_sampling_beta=0.3``, the loop's default.
    """

    every_step_until: int = 10  # official `max_index`
    then_every: int = 5
    last_step: int = 35
    loss_threshold: float = 0.1
    min_inside_target: float = 0.2
    # (first step NOT covered, loss scale, max iterations), in order; the last row covers the rest.
    scales: tuple[tuple[int | None, float, int], ...] = ((2, 4.0, 2), (5, 4.0, 6), (10, 3.0, 3), (20, 3.0, 2), (None, 1.0, 2))

    def guides(self, step: int) -> bool:
        return step < self.every_step_until or (step % self.then_every == 0 and step <= self.last_step)

    def uses_threshold(self, step: int) -> bool:
        return step < self.every_step_until

    def _row(self, step: int) -> tuple[int | None, float, int]:
        return next(row for row in self.scales if row[0] is None or step < row[0])

    def loss_scale(self, step: int) -> float:
        return self._row(step)[1]

    def max_iterations(self, step: int) -> int:
        return self._row(step)[2]


ATTENTION_REFOCUSING = GuidanceMethod(
    name="attention_refocusing",
    # Official total: loss_scale * (SAR + CAR + 3 * grounding); the engine's step is loss_scale.
    losses=(
        (losses.cross_attention_refocusing_loss, "car_weight"),
        (losses.self_attention_refocusing_loss, "sar_weight"),
        (losses.grounding_refocusing_loss, "grounding_weight"),
    ),
    needs=_refocusing_needs,
    defaults={
        "car_res": None, "smooth_attentions": True, "kernel_size": 3, "sigma": 0.5, "sar_res": None,
        "grounding_res": None, "car_weight": 1.0, "sar_weight": 1.0, "grounding_weight": 3.0,
        "schedule": "attention_refocusing",
        # Off GLIGEN the authors' advice is a loss scale of 40 where their schedule has 4 (the first steps),
        # i.e. 10x (github.com/Attention-Refocusing/attention-refocusing/issues/3, reply of 2023-11-03).
        "plain_sd_loss_scale": 10.0,
    },  # fmt: skip
    uses_boxes=True,
    citation=(
        "Phung et al., Grounded Text-to-Image Synthesis with Attention Refocusing, CVPR 2024: GLIGEN + CAR + SAR "
        "with the official code's schedule (github.com/Attention-Refocusing/attention-refocusing)"
    ),
)

METHODS: dict[str, GuidanceMethod] = {
    m.name: m for m in (ATTEND_EXCITE, CAR, SAR, ASTAR, LAYOUT_GUIDANCE, BOXDIFF, ATTENTION_REFOCUSING)
}


def register_method(method: GuidanceMethod, replace: bool = False) -> GuidanceMethod:
    """Add ``method`` to :data:`METHODS` under ``method.name``, so ``generate(methods=[name])`` runs it.

    A guidance method is data (its losses, the maps they read, its defaults): registering one from
    outside the package is all it takes to add one to the engine.
    """
    if not isinstance(method, GuidanceMethod):
        raise TypeError(f"`method` must be a synth.methods.GuidanceMethod, got {type(method).__name__}")
    if method.name == "none" or not method.losses:
        raise InputError(f"method {method.name!r} needs a name other than 'none' and at least one loss in `losses`")
    if method.name in METHODS and not replace:
        raise InputError(f"a method named {method.name!r} is already registered; pass replace=True to replace it")
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> GuidanceMethod:
    """Remove and return the method called ``name`` (e.g. a test's toy method)."""
    get_method(name)  # raises naming the known methods
    return METHODS.pop(name)


def get_method(name: str) -> GuidanceMethod:
    """The registered method called ``name``; unknown names raise listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown guidance method {name!r}; valid: {sorted(METHODS)} (or 'none')") from None
