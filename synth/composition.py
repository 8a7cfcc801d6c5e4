"""Layout-grounded latent composition (Lian et al., LLM-grounded Diffusion, TMLR 2024, stage 2).

Where a model will not move an object that has begun to form (the embedded shapes model: the initial
noise alone decides positions, and attention guidance does not change that), draw each object alone
and move it: every layout object is generated from its own phrase (``candidates`` seeds, the scene's
sampler and step count; up to ``rounds`` batches of them while no drawing fits inside the box's cells
and, centred on it, overlaps it by ``fit_iou``), the largest of the drawings that do is kept (else the
one of best IoU), its whole denoising trajectory is shifted (``torch.roll``, whole latent cells) so the
object's centre lands on the box centre, and for the first
``steps`` share of the scene's steps (LMD's half, unless the model declares its own
``composition_steps``) the scene's latents take the object's latents inside its mask (a later object
over an earlier one, but an object's margin never covers another object's body). The scene's prompt
then denoises the rest, harmonizing the parts, with any guidance method on top.

Outside the masks the scene keeps its own latents (``background="scene"``, LMD's composition) or takes
an object's shifted trajectory (``background="object"``): a canvas that holds only that object, so
nothing the scene's own noise would start is drawn besides the planned objects. With a segmenter the
canvas is the drawing whose image outside its object is calmest (least deviation from its median
color: debris a drawing shows beside its object would come along), else the first object's.

Where an object was drawn comes from a ``segmenter(image, phrase) -> [(H, W) bool mask per instance]``
on the decoded candidate (LMD uses SAM; :func:`scenewright.eval.detect.detector_segmenter` makes one of any
detector), preferring drawings with exactly one instance (a second one would come along on the
canvas), or, without one, from the model itself: the cross-attention of the phrase's object tokens on
the candidate's final latent re-noised to ``mask_timestep`` (captured through :mod:`scenewright.synth.attention`);
its weighted centroid is the object's centre, its cells above ``attention_threshold`` of the peak its
extent, and the planned box is the mask.

**FLUX.1 and SD3.** The objects are drawn by the same plain loop; attention comes from the joint attention
(:func:`joint_attention_extents`: the text -> image maps of :mod:`scenewright.synth.joint_attention` on the phrase's
T5 tokens, :mod:`scenewright.synth.t5_tokens`, or its CLIP tokens on SD3 without T5, averaged over every joint block
at the image-token grid), read after re-noising by the flow-matching scheduler's ``scale_noise`` (:func:`noised_to`).
Latents move on the backbone's composition grid (:meth:`scenewright.synth.backbones.FluxBackbone.latent_cells`):
SD3's (B, C, H / 8, W / 8) latents as they are; FLUX's packed (B, h * w, 4C) latents as their token grid
(B, 4C, h, w), moved by whole tokens, because the pastes are per token: a move by an odd latent pixel would cut every
2x2 patch in two and leave the object straddling the token cells its mask pastes. The placed trajectories and masks
are kept in the model's layout, so the pastes need no backbone.

This is a pre-pass: :func:`compose_layout` draws with the plain unguided loop
(:func:`scenewright.synth.sampling.sample_unguided`, not ``generate``), and ``generate`` consumes its
:class:`LatentComposition` through a step controller
(:class:`scenewright.synth.controllers.LatentCompositionPaste`).

Measured on the embedded shapes model in synth/shapes/MODEL_CARD.md ("Placing objects").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from scenewright.errors import InputError
from scenewright.layout.schema import Layout

from .joint_attention import joint_attention_capture, joint_attention_layers
from .maps import MapRequest, downscaled_size
from .sampling import UnguidedSample, sample_unguided
from .t5_tokens import t5_token_groups_for_layout
from .tokens import token_groups_for_layout

# (H, W, 3) uint8 image, phrase -> a (H, W) bool mask per instance of the phrase's object found (none: [])
Segmenter = Callable[[np.ndarray, str], "list[np.ndarray]"]


@dataclass(frozen=True)
class CompositionOptions:
    """How :func:`compose_layout` draws and places each object (see the module docstring)."""

    steps: float | None = None  # share of the steps that take the objects' latents; None: the model's (LMD's 0.5)
    candidates: int = 5  # seeds drawn per object; a single instance that fits its box is kept (module docstring)
    rounds: int = 3  # batches of `candidates` drawn per object at most, while none fits its box (`fit_iou`, cells)
    fit_iou: float = 0.5  # a drawing fits its box when, centred on it, its extent has this IoU with the box (the bench's)
    background: str = "object"  # "object" | "scene": what fills the latents outside the objects' masks
    attention_threshold: float = 0.3  # extent = attention cells above this share of the peak
    mask_timestep: int = 300  # the candidate's final latent is re-noised to this timestep (FLUX/SD3: the nearest
    # of the model's flow-matching schedule) to read attention
    attention_res: tuple[int, int] | None = None  # UNet attention grid read; None: the model's (latent / downscale)
    segmenter: Segmenter | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.steps is not None and not 0.0 < self.steps <= 1.0:
            raise InputError(f"composition `steps` must be a share of the steps in (0, 1], got {self.steps!r}")
        for name, value, what in (("candidates", self.candidates, "seeds per object"),
                                  ("rounds", self.rounds, "batches of candidates per object")):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"composition `{name}` must be an int >= 1 ({what}), got {value!r}")
        if self.background not in ("object", "scene"):
            raise InputError(f"composition `background` must be 'object' or 'scene', got {self.background!r}")
        if not 0.0 <= self.fit_iou <= 1.0:
            raise InputError(f"composition `fit_iou` must lie in [0, 1], got {self.fit_iou!r}")
        if not 0.0 < self.attention_threshold < 1.0:
            raise InputError(f"composition `attention_threshold` must lie in (0, 1), got {self.attention_threshold!r}")
        if not 0 <= self.mask_timestep < 1000:
            raise InputError(f"composition `mask_timestep` must lie in [0, 1000), got {self.mask_timestep!r}")


@dataclass
class PlacedObject:
    """One object drawn alone and moved to its box: per-step latents and its mask, in the model's latent layout
    ((1, C, h, w); FLUX's packed (1, h * w, 4C) latents and (1, h * w, 1) masks)."""

    phrase: str
    trajectory: list[torch.Tensor]  # latents at the start of each composed step, shifted
    mask: torch.Tensor  # (1, 1, h, w) bool (FLUX: (1, h * w, 1)), shifted: the cells pasted (object and margin)
    shift: tuple[int, int]  # (dy, dx) cells of the composition grid (FLUX: image tokens)
    core: torch.Tensor | None = None  # the object's own cells (within ``mask``); None: all of ``mask``


@dataclass
class LatentComposition:
    """The placed objects of one layout; :meth:`apply` composes them into the scene's latents at a step."""

    objects: list[PlacedObject]
    steps: int  # steps 0 .. steps-1 are composed
    background: str
    canvas: int = 0  # background="object": the object whose trajectory fills the latents outside the masks

    def apply(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        """``latents`` (n, C, h, w) (FLUX: (n, h * w, 4C)) of this layout's images with the objects' latents pasted
        in at ``step``."""
        if step >= self.steps or not self.objects:
            return latents
        if self.background == "object":
            latents = self.objects[self.canvas].trajectory[step].to(latents).expand_as(latents).clone()
        # Margins first, bodies over them: with boxes a cell apart, a neighbour's margin would cut into an
        # object pasted before it (on 24 shapes layouts a halved circle or star was a counting error).
        for placed in self.objects:
            latents = torch.where(placed.mask.to(latents.device), placed.trajectory[step].to(latents), latents)
        for placed in self.objects:
            if placed.core is not None:
                latents = torch.where(placed.core.to(latents.device), placed.trajectory[step].to(latents), latents)
        return latents


def shift_latents(latents: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content ``dy`` rows down and ``dx`` columns right, wrapping around (noise stays noise)."""
    return torch.roll(latents, shifts=(dy, dx), dims=(-2, -1))


def shift_mask(mask: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move a (..., h, w) mask without wrapping: what leaves the canvas is gone."""
    out = torch.zeros_like(mask)
    h, w = mask.shape[-2:]
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[..., dst_y, dst_x] = mask[..., src_y, src_x]
    return out


def centring_shift(
    centre: tuple[float, float], box: tuple[float, float, float, float], h: int, w: int
) -> tuple[int, int]:
    """(dy, dx) whole cells of an (h, w) grid that move a normalized (x, y) ``centre`` onto the box's centre."""
    tx, ty = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return round((ty - centre[1]) * h), round((tx - centre[0]) * w)


def shifted_trajectory(backbone, trajectory: list[torch.Tensor], row: int, dy: int, dx: int, height: int,
                       width: int) -> list[torch.Tensor]:  # fmt: skip
    """Row ``row`` of each step's latents moved ``(dy, dx)`` cells on the backbone's composition grid, in the model's
    layout (FLUX: packed tokens moved whole, :meth:`~scenewright.synth.backbones.FluxBackbone.latent_cells`)."""
    return [
        backbone.cells_to_latents(shift_latents(backbone.latent_cells(z[row : row + 1], height, width), dy, dx))
        for z in trajectory
    ]


def box_cells(box: tuple[float, float, float, float], h: int, w: int) -> torch.Tensor:
    """(1, 1, h, w) bool: the latent cells a normalized xyxy box touches."""
    mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
    x0, y0, x1, y1 = box
    rows = slice(int(math.floor(y0 * h)), max(int(math.ceil(y1 * h)), int(math.floor(y0 * h)) + 1))
    cols = slice(int(math.floor(x0 * w)), max(int(math.ceil(x1 * w)), int(math.floor(x0 * w)) + 1))
    mask[..., rows, cols] = True
    return mask


def _extent(mask: torch.Tensor) -> tuple[float, float, float, float] | None:
    """Normalized xyxy box of a (h, w) bool mask; None when empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return (xs.min().item() / w, ys.min().item() / h, (xs.max().item() + 1) / w, (ys.max().item() + 1) / h)


def _centred_iou(extent: tuple[float, float, float, float], box: tuple[float, float, float, float]) -> float:
    """IoU of ``box`` with an object of this extent moved to the box's centre (what the scene is scored by)."""
    (w, h), (bw, bh) = (extent[2] - extent[0], extent[3] - extent[1]), (box[2] - box[0], box[3] - box[1])
    inter = min(w, bw) * min(h, bh)
    return inter / (w * h + bw * bh - inter)


def _fits_cells(extent: tuple[float, float, float, float], box: tuple[float, float, float, float], h: int, w: int) -> bool:
    """Whether an object of this extent (whole cells), centred on the box, stays within the cells the box touches:
    then it cannot reach a neighbour planned a cell away (drawn larger, same-colored neighbours merge)."""
    cells = _extent(box_cells(box, h, w)[0, 0])
    eps = 1e-6
    return extent[2] - extent[0] <= cells[2] - cells[0] + eps and extent[3] - extent[1] <= cells[3] - cells[1] + eps


@torch.no_grad()
def attention_extents(synthesizer, latents: torch.Tensor, phrase: str, name: str, options: CompositionOptions,
                      image_size: tuple[int, int] | None = None):  # fmt: skip
    """Per candidate latent: (soft attention map (h, w), extent box or None) of the phrase's object tokens.

    One conditional UNet pass on the latents re-noised to ``mask_timestep`` (fixed noise), cross-attention
    at the model's attention size (latent / ``attention_downscale``), upsampled to the latent grid. On FLUX/SD3,
    :func:`joint_attention_extents` (``image_size`` (height, width): FLUX's packed latents do not say it).
    """
    if synthesizer.is_mmdit:
        return joint_attention_extents(synthesizer, latents, phrase, name, options,
                                       *(image_size or synthesizer.image_size(latents)))  # fmt: skip
    h, w = latents.shape[-2:]
    size = options.attention_res or downscaled_size((h, w), synthesizer.defaults.attention_downscale)
    group = token_groups_for_layout(synthesizer.tokenizer, phrase, [phrase], names=[name], include_attributes=True)
    tokens = group.token_groups[0]
    conditioning = synthesizer.backbone.encode([phrase] * len(latents), None, False, synthesizer.device,
                                               *synthesizer.image_size(latents))  # fmt: skip
    t = torch.full((len(latents),), options.mask_timestep, device=synthesizer.device, dtype=torch.long)
    noise = torch.randn(latents.shape, generator=torch.Generator("cpu").manual_seed(0)).to(latents)
    noisy = noised_to(synthesizer.scheduler, latents, noise, t)
    with synthesizer._capture([MapRequest("cross", (size,))]) as capture:
        capture.guidance_forward(lambda: synthesizer.unet(noisy, t, **conditioning.unet_kwargs()), (h, w))
        probs = torch.stack([layer.probs.float() for layer in capture.layers.values()]).mean(dim=(0, 2))  # (N, hw, 77)
    return _extents(probs[..., tokens].mean(-1).reshape(-1, 1, *size), (h, w), options.attention_threshold)


def _extents(maps: torch.Tensor, cells: tuple[int, int], threshold: float):
    """(n, 1, h', w') phrase maps -> per map (its peak-normalized map on the ``cells`` grid, its extent or None)."""
    maps = torch.nn.functional.interpolate(maps, size=cells, mode="nearest")[:, 0]
    maps = maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return [(m, _extent(m > threshold)) for m in maps]


def joint_phrase_positions(synthesizer, phrase: str, name: str) -> list[int]:
    """A phrase's object tokens (with attributes) among the text keys of FLUX's or SD3's joint attention.

    T5 positions (:func:`scenewright.synth.t5_tokens.t5_token_groups_for_layout`; SD3's follow its 77 CLIP tokens);
    SD3 without T5 reads zero T5 rows, so there the phrase's CLIP positions.
    """
    pipe, backbone = synthesizer.pipe, synthesizer.backbone
    if backbone.name == "sd3" and pipe.text_encoder_3 is None:
        return token_groups_for_layout(pipe.tokenizer, phrase, [phrase], names=[name],
                                       include_attributes=True).token_groups[0]  # fmt: skip
    if backbone.name == "flux":
        t5_tokenizer, offset = pipe.tokenizer_2, 0
    else:
        t5_tokenizer, offset = pipe.tokenizer_3, pipe.tokenizer_max_length
    mapping = t5_token_groups_for_layout(pipe.tokenizer, t5_tokenizer, phrase, [phrase], names=[name],
                                         max_length=backbone.max_sequence_length, include_attributes=True,
                                         offset=offset)  # fmt: skip
    return mapping.token_groups[0]


@torch.no_grad()
def joint_attention_extents(synthesizer, latents: torch.Tensor, phrase: str, name: str, options: CompositionOptions,
                            height: int, width: int):  # fmt: skip
    """:func:`attention_extents` on FLUX/SD3: the joint attention's text -> image maps of the phrase's tokens
    (:func:`joint_phrase_positions`), averaged over every joint block, at the image-token grid, upsampled to the
    composition grid.

    One conditional transformer pass on the latents re-noised (:func:`noised_to`, fixed noise) to the timestep of the
    model's own schedule (``num_train_timesteps`` steps, shifted as it samples) nearest ``mask_timestep``.
    """
    if options.attention_res is not None:
        raise InputError(
            f"composition `attention_res` picks a UNet's attention size; {synthesizer.backbone.name}'s joint attention "
            "is read at its image-token grid: leave `attention_res` unset"
        )
    backbone, scheduler, device = synthesizer.backbone, synthesizer.scheduler, synthesizer.device
    tokens = joint_phrase_positions(synthesizer, phrase, name)
    conditioning = backbone.encode([phrase] * len(latents), None, False, device, height, width)
    timesteps = backbone.set_timesteps(scheduler.config.num_train_timesteps, device,
                                       backbone.image_seq_len(height, width))  # fmt: skip
    t = timesteps[(timesteps - options.mask_timestep).abs().argmin()]
    noise = torch.randn(latents.shape, generator=torch.Generator("cpu").manual_seed(0)).to(latents)
    noisy = noised_to(scheduler, latents, noise, t.expand(len(latents)))
    grid, transformer = backbone.latent_grid(height, width), backbone.model
    kwargs = backbone.transformer_kwargs(noisy, t, conditioning, synthesizer.defaults.guidance_scale)
    with joint_attention_capture(transformer, joint_attention_layers(transformer), grid, kinds=("cross",)) as capture:
        transformer(**kwargs)
        probs = torch.stack([maps.float() for maps in capture.cross_maps.values()]).mean(dim=(0, 2))  # (n, hw, text)
    cells = backbone.latent_cells(latents, height, width).shape[-2:]
    return _extents(probs[..., tokens].mean(-1).reshape(-1, 1, *grid), cells, options.attention_threshold)


def noised_to(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``latents`` re-noised to timestep ``t`` for a direct denoiser call.

    Flow matching (FLUX, SD3: ``FlowMatchEulerDiscreteScheduler``): its ``scale_noise``, (1 - s) x + s eps with s
    the sigma of ``t``, which must be one of the scheduler's current timesteps. Otherwise the DDPM form
    sqrt(a_t) x + sqrt(1 - a_t) eps: DDIM's ``add_noise`` exactly; Euler's ``add_noise`` works in sigma space and
    only at timesteps of its current schedule, but a UNet called without ``scale_model_input`` reads the DDPM form
    at any training timestep.
    """
    if hasattr(scheduler, "scale_noise"):
        begin = scheduler.begin_index
        scheduler.set_begin_index(None)  # look ``t`` up in the schedule, not at the step a finished loop left
        try:
            return scheduler.scale_noise(latents, t, noise)
        finally:
            scheduler.set_begin_index(begin)
    alphas = scheduler.alphas_cumprod.to(device=latents.device, dtype=latents.dtype)[t]  # (B,)
    shape = (-1,) + (1,) * (latents.ndim - 1)
    return alphas.sqrt().view(shape) * latents + (1 - alphas).sqrt().view(shape) * noise


def _centre_of(weights: torch.Tensor) -> tuple[float, float]:
    """Normalized (x, y) centroid of a non-negative (h, w) map."""
    h, w = weights.shape
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    total = weights.sum().clamp_min(1e-12)
    return float((weights.sum(0) * xs).sum() / total), float((weights.sum(1) * ys).sum() / total)


@dataclass
class _Drawn:
    """Where a candidate drawing put its object: centre and extent (normalized), and its cells if segmented."""

    row: int
    drawn: UnguidedSample  # the batch of drawings the row belongs to
    centre: tuple[float, float]
    extent: tuple[float, float, float, float]
    cells: torch.Tensor | None  # (1, 1, h, w) bool: the cells the object touches, plus a cell of margin
    instances: int = 1  # how many of the phrase's objects the drawing shows (segmenter); 1 for attention
    core: torch.Tensor | None = None  # (1, 1, h, w) bool: the cells the object touches
    object_mask: np.ndarray | None = None  # (H, W) bool: the segmenter's mask of the object, in image pixels

    @functools.cached_property
    def size_extent(self) -> tuple[float, float, float, float]:
        """The object's box to judge its size by: its mask's pixels where segmented (latent cells are 4 px on
        the shapes model, too coarse to tell an 11 px star from a 15 px one), else ``extent``."""
        return self.extent if self.object_mask is None else _extent(torch.from_numpy(self.object_mask))


def _fits(drawing: _Drawn, box: tuple[float, float, float, float], h: int, w: int, fit_iou: float) -> bool:
    """One instance, inside the box's cells, and (centred) overlapping the box by at least ``fit_iou``."""
    return (drawing.instances == 1 and _fits_cells(drawing.extent, box, h, w)
            and _centred_iou(drawing.size_extent, box) >= fit_iou)  # fmt: skip


def _preference(drawing: _Drawn, box: tuple[float, float, float, float], h: int, w: int, fit_iou: float) -> tuple:
    """Sort key of an object's drawings, best first: one instance, inside the box's cells, then the largest of
    those that fill the box (small objects are the ones the caption's later steps erase or misshape: a 10 px
    star comes out round), else the highest IoU."""
    extent = drawing.size_extent
    fits = _fits(drawing, box, h, w, fit_iou)
    size = (extent[2] - extent[0]) * (extent[3] - extent[1]) if fits else _centred_iou(extent, box)
    return drawing.instances != 1, not _fits_cells(drawing.extent, box, h, w), not fits, -size


def _busyness(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute deviation from the median color of an (H, W, 3) image outside a (H, W) object mask,
    grown by 2 px (the object's soft edge is not debris)."""
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None], 5, 1, 2)
    outside = image[~(grown[0, 0].numpy() > 0)]
    if len(outside) == 0:
        return 0.0
    return float(np.abs(outside - np.median(outside, axis=0)).mean())


def _segmented(drawn, rows: list[int], phrase: str, segmenter: Segmenter, hw: tuple[int, int]) -> list[_Drawn]:
    """Candidates the segmenter finds the phrase's object in; cells = every latent cell the mask touches plus a
    cell of margin (on 24 shapes layouts: box IoU 0.62 with the margin, 0.59 without)."""
    found = []
    for row in rows:
        image = (np.asarray(drawn.images[row]) * 255).round().astype(np.uint8)
        masks = [m for m in segmenter(image, phrase) if np.any(m)]
        if not masks:
            continue
        mask = max(masks, key=lambda m: int(np.count_nonzero(m)))  # the largest instance is the object
        pixels = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        touched = torch.nn.functional.adaptive_max_pool2d(pixels, hw)[0, 0] > 0
        extent = _extent(touched)
        cells = torch.nn.functional.max_pool2d(touched[None, None].float(), 3, 1, 1) > 0
        centre = ((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2)
        found.append(_Drawn(row, drawn, centre, extent, cells, instances=len(masks), core=touched[None, None],
                            object_mask=np.asarray(mask, dtype=bool)))  # fmt: skip
    return found


def _attended(synthesizer, drawn, rows: list[int], obj, options: CompositionOptions,
              image_size: tuple[int, int]) -> list[_Drawn]:  # fmt: skip
    """Candidates whose phrase attention has cells above the threshold; centre = centroid of what is above."""
    extents = attention_extents(synthesizer, drawn.latents[rows], obj.phrase, obj.name, options, image_size)
    return [_Drawn(row, drawn, _centre_of((weights - options.attention_threshold).clamp_min(0)), extent, None)
            for row, (weights, extent) in zip(rows, extents) if extent is not None]  # fmt: skip


def compose_layout(
    synthesizer,
    layout: Layout,
    options: CompositionOptions,
    *,
    num_inference_steps: int,
    guidance_scale: float | None,
    seed: int,
    height: int,
    width: int,
) -> LatentComposition:
    """Draw each of ``layout``'s objects alone and place it in its box (module docstring)."""
    share = synthesizer.defaults.composition_steps if options.steps is None else options.steps
    steps = max(1, int(round(share * num_inference_steps)))
    if not layout.objects:
        return LatentComposition([], steps, options.background)
    n, backbone = options.candidates, synthesizer.backbone
    objects = layout.objects
    found: list[list[_Drawn]] = [[] for _ in objects]
    pending = list(range(len(objects)))
    for round_ in range(options.rounds):
        seeds = [seed * 1009 + 7919 * (k + 1) + round_ * n + c for k in pending for c in range(n)]
        drawn = sample_unguided(synthesizer, [objects[k].phrase for k in pending for _ in range(n)], seeds,
                                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                height=height, width=width,
                                output_type="np" if options.segmenter is not None else "latent")  # fmt: skip
        h, w = backbone.latent_cells(drawn.latents, height, width).shape[-2:]  # the grid objects move on
        for i, k in enumerate(pending):
            rows = list(range(i * n, (i + 1) * n))
            if options.segmenter is not None:
                found[k] += _segmented(drawn, rows, objects[k].phrase, options.segmenter, (h, w))
            else:
                found[k] += _attended(synthesizer, drawn, rows, objects[k], options, (height, width))
        # Another batch only for objects none of whose drawings shows it once, inside its box's cells and
        # filling the box (a model free to draw an unsized object small or large may miss the box's size).
        pending = [k for k in pending if not any(_fits(d, objects[k].box, h, w, options.fit_iou) for d in found[k])]
        if not pending:
            break
    placed, chosen = [], []
    for obj, drawings in zip(objects, found):
        if not drawings:
            continue  # drawn nowhere the segmenter or attention can find: left to the scene and its guidance
        best = min(drawings, key=lambda d: _preference(d, obj.box, h, w, options.fit_iou))
        dy, dx = centring_shift(best.centre, obj.box, h, w)
        # A segmented object brings its own cells; an attended one sits centred in its box: paste the box.
        mask = shift_mask(best.cells, dy, dx) if best.cells is not None else box_cells(obj.box, h, w)
        core = shift_mask(best.core, dy, dx) if best.core is not None else None
        trajectory = shifted_trajectory(backbone, best.drawn.trajectory[:steps], best.row, dy, dx, height, width)
        core = None if core is None else backbone.cells_to_latents(core)
        placed.append(PlacedObject(obj.phrase, trajectory, backbone.cells_to_latents(mask), (dy, dx), core))
        chosen.append(best)
    # Only the chosen drawings are judged as canvas; attention-placed objects have no image to judge.
    canvas = 0
    if chosen and all(d.object_mask is not None for d in chosen):
        busyness = [_busyness(np.asarray(d.drawn.images[d.row], dtype=np.float32), d.object_mask) for d in chosen]
        canvas = int(np.argmin(busyness))
    return LatentComposition(placed, steps, options.background, canvas)


__all__ = [
    "CompositionOptions",
    "LatentComposition",
    "PlacedObject",
    "attention_extents",
    "box_cells",
    "centring_shift",
    "compose_layout",
    "joint_attention_extents",
    "joint_phrase_positions",
    "noised_to",
    "shift_latents",
    "shift_mask",
    "shifted_trajectory",
]
