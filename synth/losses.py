"""Guidance losses: pure functions of one sample's captured attention maps.

Every loss has one signature (k-diffusion style)::

    loss(maps: AttentionMaps, targets: GuidanceTargets, step: int, previous=None, **options) -> Tensor  # 0-dim, fp32

``step`` is the index of the denoising step (0 = first, noisiest), as the official codes use it;
``previous`` the sample's maps at the last guided step (detached; None before it), which only A-STAR's
retention reads. The engine (``scenewright.synth.guidance``) differentiates the value with respect to the latent; no loss touches
the UNet. Maps are read in fp32 whatever the model's dtype. Where a paper and its official code
differ, the code wins and a comment says so.

Resolutions: an option such as ``attn_res=None`` means the official default relative to the latent
(e.g. latent / 4 = 16x16 for SD1.5 at 512 px) when ``maps.latent_size`` is known, else the single
resolution captured for the loss; the registry (:mod:`scenewright.synth.methods`) asks the capture for exactly
those maps.

Boxes: a cell belongs to a box when its centre lies inside (``GuidanceTargets.box_masks``), one rule
for every method. The official codes cut boxes as ``int(x * W)`` (CAR, SAR, layout guidance) or
``round(x * W)`` (BoxDiff); the centre rule equals the rounding one and differs from truncation by at
most one cell row/column at a box edge.

Objects that share a token group (several instances of one phrase, "three cats") are one object
with several boxes, as the official CAR/SAR/layout-guidance inputs are (``bboxes[obj]`` is a list).
"""

from __future__ import annotations

import math
from itertools import combinations

import torch
import torch.nn.functional as F

from scenewright.errors import InputError

from .maps import SD_ATTENTION_DOWNSCALE, AttentionKind, AttentionMaps, GuidanceTargets, downscaled_size

ALL_PLACES = ("up", "down", "mid")

# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------


def resolve_size(
    maps: AttentionMaps,
    kind: AttentionKind,
    size: tuple[int, int] | None,
    places: tuple[str, ...] | None = None,
    option: str = "attn_res",
) -> tuple[int, int]:
    """The (h, w) a loss reads: ``size`` if given, else SD's latent / 4, else the one captured."""
    if size is not None:
        return (int(size[0]), int(size[1]))
    if maps.latent_size is not None:
        return downscaled_size(maps.latent_size, SD_ATTENTION_DOWNSCALE)
    sizes = sorted({e.size for e in maps.select(kind, places=places)})
    if len(sizes) != 1:
        raise InputError(
            f"{kind}-attention maps were captured at {len(sizes)} resolutions {sizes} and maps.latent_size "
            f"is unknown; pass `{option}=(h, w)`"
        )
    return sizes[0]


def subject_token_indices(targets: GuidanceTargets, token_indices: list[int] | None = None) -> list[int]:
    """One token per object (A&E, BoxDiff, A-STAR): explicit ``token_indices`` or each group's LAST token.

    English noun phrases end in their head noun ("a red car" -> "car"), the token A&E excites
    (Chefer et al. 2023, Sec. 4); for a word split into several tokens the last piece is kept.
    """
    if token_indices is not None:
        return [int(i) for i in token_indices]
    _check_groups(targets)
    return [int(group[-1]) for group in targets.token_groups]


def object_groups(targets: GuidanceTargets) -> list[tuple[list[int], list[int]]]:
    """(tokens, box rows) per distinct token group: instances of one phrase form one object with many boxes."""
    _check_groups(targets)
    boxes = targets.boxes
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != len(targets.token_groups):
        raise InputError(
            f"targets.boxes has shape {tuple(boxes.shape)} for {len(targets.token_groups)} token groups; "
            "layout methods need one [x0, y0, x1, y1] box per token group"
        )
    grouped: dict[tuple[int, ...], list[int]] = {}
    for row, group in enumerate(targets.token_groups):
        grouped.setdefault(tuple(int(i) for i in group), []).append(row)
    return [(list(tokens), rows) for tokens, rows in grouped.items()]


def _check_groups(targets: GuidanceTargets) -> None:
    if not targets.token_groups:
        raise InputError("targets.token_groups is empty; give each object its prompt token positions")
    for n, group in enumerate(targets.token_groups):
        if not group:
            raise InputError(f"targets.token_groups[{n}] is empty; each object needs at least one token position")


def _check_token_range(indices: list[int], low: int, high: int) -> None:
    bad = [i for i in indices if not low <= i < high]
    if bad:
        raise InputError(f"token positions {bad} out of range; they must lie in [{low}, {high}) of the prompt")


def gaussian_kernel_2d(kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """(k, k) normalized kernel exactly as A&E's ``GaussianSmoothing`` (Chefer et al. 2023)."""
    coords = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    # The official code squares (x - m) / (2 sigma), not (x - m) / sigma over 2; kept to match its maps.
    profile = torch.exp(-((coords / (2 * sigma)) ** 2)) / (sigma * math.sqrt(2 * math.pi))
    kernel = profile[:, None] * profile[None, :]
    return kernel / kernel.sum()


def smooth_maps(maps_2d: torch.Tensor, kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """(T, h, w) -> (T, h, w): A&E's Gaussian smoothing with reflect padding, per map."""
    kernel = gaussian_kernel_2d(kernel_size, sigma).to(maps_2d.device)[None, None]  # (1, 1, k, k)
    pad = (kernel_size - 1) // 2
    padded = F.pad(maps_2d[:, None], (pad, pad, pad, pad), mode="reflect")  # (T, 1, h + 2p, w + 2p)
    return F.conv2d(padded, kernel)[:, 0]


def token_attention_maps(
    maps: AttentionMaps,
    token_indices: list[int],
    size: tuple[int, int],
    places: tuple[str, ...] | None = ALL_PLACES,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """(T, h, w) maps as A&E reads them: head/layer mean, softmax(100 * text tokens), smoothed (Chefer et al. 2023)."""
    attention = maps.mean("cross", size, places).float()  # (h, w, keys) averaged over heads and layers
    start = maps.first_prompt_key  # 1: CLIP's <|startoftext|> comes first; 0: FLUX's T5 keys have no start token
    _check_token_range(token_indices, start, attention.shape[-1] - 1)
    # Drop <|startoftext|> AND the last key, as diffusers' pipeline does; *100 sharpens the token softmax.
    text_probs = torch.softmax(attention[:, :, start:-1] * 100, dim=-1)  # (h, w, keys - start - 1)
    chosen = text_probs[:, :, [i - start for i in token_indices]].permute(2, 0, 1)  # (T, h, w)
    return smooth_maps(chosen, kernel_size, sigma) if smooth_attentions else chosen


def _zero_like(maps: AttentionMaps) -> torch.Tensor:
    device = maps.entries[0].probs.device if maps.entries else None
    return torch.zeros((), dtype=torch.float32, device=device)


# ---------------------------------------------------------------------------------------------------------
# Attend-and-Excite (Chefer et al., SIGGRAPH 2023; diffusers StableDiffusionAttendAndExcitePipeline)
# ---------------------------------------------------------------------------------------------------------


def max_attention_per_token(
    maps: AttentionMaps,
    token_indices: list[int],
    attn_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """(T,) peak of each token's smoothed, token-softmaxed map (Attend-and-Excite, Chefer et al. 2023)."""
    size = resolve_size(maps, "cross", attn_res)
    token_maps = token_attention_maps(maps, token_indices, size, ALL_PLACES, smooth_attentions, kernel_size, sigma)
    return token_maps.flatten(1).max(dim=1).values


def attend_and_excite_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    token_indices: list[int] | None = None,
    attn_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    **_: object,
) -> torch.Tensor:
    """max over subjects of max(0, 1 - peak attention): the most neglected one (Chefer et al. 2023, Attend-and-Excite)."""
    indices = subject_token_indices(targets, token_indices)
    peaks = max_attention_per_token(maps, indices, attn_res, smooth_attentions, kernel_size, sigma)
    return torch.clamp(1.0 - peaks, min=0.0).max()


# ---------------------------------------------------------------------------------------------------------
# Attention Refocusing: CAR and SAR (Phung et al., CVPR 2024; github.com/Attention-Refocusing)
# ---------------------------------------------------------------------------------------------------------


def _car_inside_term(peak: torch.Tensor, step: int) -> torch.Tensor:
    # Official `caculate_loss_att_fixed_cnt`: a weak peak in the own box costs 6x; a fair one counts
    # only in the first 15 steps.
    late = 0.0 if step >= 15 else 1.0
    return torch.where(peak < 0.1, 6 * (1 - peak), torch.where(peak < 0.2, 1 - peak, late * (1 - peak)))


def _car_outside_term(peak: torch.Tensor, step: int) -> torch.Tensor:
    # Official: a strong peak in another object's box costs 4x; a faint one counts only in the first 15 steps.
    late = 0.0 if step >= 15 else 1.0
    return torch.where(peak > 0.15, 4 * peak, torch.where(peak > 0.1, peak, late * peak))


def _car_maps(maps: AttentionMaps, targets: GuidanceTargets, car_res, smooth_attentions, kernel_size, sigma):
    """CAR's inputs: (token groups with box rows, token -> (h, w) map, (N, h, w) box masks)."""
    groups = object_groups(targets)
    size = resolve_size(maps, "cross", car_res, option="car_res")
    all_tokens = sorted({t for tokens, _ in groups for t in tokens})
    token_maps = token_attention_maps(maps, all_tokens, size, ALL_PLACES, smooth_attentions, kernel_size, sigma)
    masks = targets.box_masks(*size, device=token_maps.device)  # (N, h, w)
    return groups, dict(zip(all_tokens, token_maps)), masks


def weakest_inside_peak(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    car_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    **_: object,
) -> torch.Tensor:
    """min over objects and boxes of the token's peak inside the box: Attention Refocusing's stopping signal."""
    # Official `caculate_loss_att_fixed_cnt` returns it as `min_all_inside`; the loop stops refining once >= 0.2.
    groups, by_token, masks = _car_maps(maps, targets, car_res, smooth_attentions, kernel_size, sigma)
    peaks = [by_token[t][masks[r] > 0].max() for tokens, rows in groups for t in tokens for r in rows]
    return torch.stack(peaks).min().detach()


def grounding_refocusing_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    grounding_res: tuple[int, int] | None = None,
    **_: object,
) -> torch.Tensor:
    """A box's pixels attend no other object's GLIGEN grounding token (official Attention Refocusing code, not the paper)."""
    # Official `caculate_ground` (the code's third loss, absent from the paper's CAR + SAR): the fuser's
    # attention at 16x16 (256 pixels + 30 grounding tokens), averaged over layers; per box, the in-box
    # queries' mean row, its largest weight on any grounding slot but the object's own (null slots
    # included), mean over heads; summed, divided by the number of objects; only in the first 15 steps.
    # The official code zeroes slot `obj_idx` of its phrase-grouped boxes, which misnames the slots when
    # a phrase has several boxes (one GLIGEN token each); here every box of the group keeps its own slot.
    if step >= 15 or not maps.select("grounding"):
        return _zero_like(maps)  # gated layers off (scheduled sampling) or not a GLIGEN UNet
    groups = object_groups(targets)
    size = resolve_size(maps, "grounding", grounding_res, option="grounding_res")
    layers = maps.select("grounding", size)
    if not layers:
        return _zero_like(maps)
    pixels = size[0] * size[1]
    attention = torch.stack([e.probs.float() for e in layers]).mean(dim=0)  # (heads, pixels + 30, pixels + 30)
    to_tokens = attention[:, :pixels, pixels:]  # (heads, pixels, 30): pixel queries -> grounding tokens
    masks = targets.box_masks(*size, device=attention.device).flatten(1)  # (N, pixels)
    total = _zero_like(maps)
    for _, rows in groups:
        others = torch.ones(to_tokens.shape[-1], device=attention.device)
        others[[r for r in rows if r < others.shape[0]]] = 0.0
        for r in rows:
            row_mean = to_tokens[:, masks[r] > 0, :].mean(dim=1)  # (heads, 30)
            total = total + (row_mean * others).amax(dim=-1).mean()
    return total / len(groups)


def cross_attention_refocusing_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    car_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    **_: object,
) -> torch.Tensor:
    """CAR: each token peaks inside its boxes, not in other boxes nor the background (CAR, Phung et al. 2024)."""
    # Follows the official `caculate_loss_att_fixed_cnt`, whose peak terms carry piecewise weights by
    # value and step that the paper's equations leave out; maps as A&E's: 16x16 (latent / 4), all places.
    groups, by_token, masks = _car_maps(maps, targets, car_res, smooth_attentions, kernel_size, sigma)
    outside_all = 1.0 - masks.amax(dim=0)  # (h, w): background of the whole layout
    total = _zero_like(maps)
    for tokens, rows in groups:
        own = masks[rows].amax(dim=0)  # (h, w) union of this object's boxes
        others = [r for r in range(masks.shape[0]) if r not in rows]
        for token in tokens:
            attention = by_token[token]  # (h, w)
            for r in rows:
                total = total + _car_inside_term(attention[masks[r] > 0].max(), step)
            # Overlap with the own boxes is not "outside", so it is zeroed before measuring other boxes.
            elsewhere = attention * (1.0 - own)
            for r in others:
                total = total + _car_outside_term((elsewhere * masks[r]).max(), step)
            total = total + len(rows) * (attention * outside_all).max() / 2
    return total / len(groups)


def self_attention_refocusing_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    sar_res: tuple[int, int] | None = None,
    **_: object,
) -> torch.Tensor:
    """SAR: pixels in a box attend (self-attention) only inside it; mass outside, per layer (SAR, Phung et al. 2024)."""
    # Official `caculate_loss_self_att`: self maps of 256 queries (16x16 = latent / 4) from every place;
    # per layer, per box: the in-box queries' mean attention row, its mass outside the box, mean over
    # heads; summed over boxes, divided by the number of objects; averaged over layers.
    groups = object_groups(targets)
    size = resolve_size(maps, "self", sar_res, option="sar_res")
    layers = maps.select("self", size)
    if not layers:
        have = sorted({(e.kind, e.size) for e in maps.entries})
        raise InputError(f"no self-attention maps of size {size} were captured (captured: {have}); set `sar_res`")
    masks = targets.box_masks(*size, device=layers[0].probs.device).flatten(1)  # (N, h*w)
    total = _zero_like(maps)
    for layer in layers:
        probs = layer.probs.float()  # (heads, h*w, h*w)
        layer_loss = _zero_like(maps)
        for _, rows in groups:
            for r in rows:
                inside = masks[r] > 0
                row_mean = probs[:, inside, :].mean(dim=1)  # (heads, h*w): where the box's pixels look
                layer_loss = layer_loss + (row_mean * (1.0 - masks[r])).sum(dim=-1).mean()
        total = total + layer_loss / len(groups)
    return total / len(layers)


# ---------------------------------------------------------------------------------------------------------
# A-STAR (Agarwal et al., ICCV 2023); no public code: from the paper's equations
# ---------------------------------------------------------------------------------------------------------


def _concept_maps(maps: AttentionMaps, indices: list[int], size, smooth_attentions, kernel_size, sigma) -> torch.Tensor:
    # A-STAR is built on A&E's pipeline and names no other preprocessing, so it reads A&E's maps:
    # 16x16 (latent / 4), softmax over 100 * text tokens, Gaussian-smoothed.
    return token_attention_maps(maps, indices, size, ALL_PLACES, smooth_attentions, kernel_size, sigma)


def astar_segregation_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    token_indices: list[int] | None = None,
    attn_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    **_: object,
) -> torch.Tensor:
    """Sum over concept pairs of soft IoU sum(min(A_m, A_n)) / sum(A_m + A_n) (A-STAR, Agarwal et al. 2023, Eq. 2)."""
    # Distinct tokens only: instances of one phrase are one concept and must not repel each other.
    indices = list(dict.fromkeys(subject_token_indices(targets, token_indices)))
    if len(indices) < 2:
        return _zero_like(maps)
    size = resolve_size(maps, "cross", attn_res)
    concept = _concept_maps(maps, indices, size, smooth_attentions, kernel_size, sigma).flatten(1)  # (T, h*w)
    total = _zero_like(maps)
    for m, n in combinations(range(len(indices)), 2):
        overlap = torch.minimum(concept[m], concept[n]).sum()
        total = total + overlap / (concept[m] + concept[n]).sum()
    return total


def astar_retention_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    token_indices: list[int] | None = None,
    attn_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    retention_threshold: float = 0.5,
    previous: AttentionMaps | None = None,
    **_: object,
) -> torch.Tensor:
    """Sum over concepts of 1 - soft IoU(A_t, binarized A_{t+1}) with the previous step's map (A-STAR, Eq. 3).

    ``previous``: the maps of the last guided step (detached), which the engine passes to every loss.
    """
    if previous is None or not previous.entries:
        return _zero_like(maps)  # first guided step: nothing to retain yet
    indices = list(dict.fromkeys(subject_token_indices(targets, token_indices)))
    size = resolve_size(maps, "cross", attn_res)  # the previous step was captured at the same size
    current = _concept_maps(maps, indices, size, smooth_attentions, kernel_size, sigma).flatten(1)  # (T, h*w)
    with torch.no_grad():
        previous_maps = _concept_maps(previous, indices, size, smooth_attentions, kernel_size, sigma).flatten(1)
        # The paper binarizes the previous map without giving the rule; we keep cells at or above
        # `retention_threshold` of the map's peak (scale-free, so it works at any attention level).
        peak = previous_maps.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        binary = (previous_maps / peak >= retention_threshold).float()  # (T, h*w)
    intersection = (current * binary).sum(dim=1)
    union = (current + binary - current * binary).sum(dim=1)
    return (1.0 - intersection / union).sum()


# ---------------------------------------------------------------------------------------------------------
# Layout guidance (Chen et al., WACV 2024; github.com/silent-chen/layout-guidance)
# ---------------------------------------------------------------------------------------------------------


def layout_guidance_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    up_res: tuple[int, int] | None = None,
    **_: object,
) -> torch.Tensor:
    """Mean over layers and objects of (1 - in-box share of token attention)^2 (layout guidance, Chen et al. 2024)."""
    # Official `compute_ca_loss`: raw probabilities (no token softmax, no smoothing) of the mid block's
    # cross layers and the first up block with attention (16x16 = latent / 4); per layer and object,
    # mean over heads, mean over the phrase's tokens; sum / (objects * layers).
    groups = object_groups(targets)
    size = resolve_size(maps, "cross", up_res, places=("up",), option="up_res")
    layers = maps.select("cross", places=("mid",)) + maps.select("cross", size, places=("up",))
    layers = list({layer.layer: layer for layer in layers}.values())  # an MM-DiT block answers both: count it once
    if not layers:
        have = sorted({(e.kind, e.place, e.size) for e in maps.entries})
        raise InputError(f"no mid or {size} up cross-attention maps were captured (captured: {have}); set `up_res`")
    total = _zero_like(maps)
    for layer in layers:
        h, w = layer.size
        masks = targets.box_masks(h, w, device=layer.probs.device).flatten(1)  # (N, h*w)
        probs = layer.probs.float()  # (heads, h*w, keys)
        _check_token_range([t for tokens, _ in groups for t in tokens], maps.first_prompt_key, probs.shape[-1])
        for tokens, rows in groups:
            own = masks[rows].amax(dim=0)  # (h*w,) union of the object's boxes
            token_probs = probs[:, :, tokens]  # (heads, h*w, T)
            share = (token_probs * own[None, :, None]).sum(dim=1) / token_probs.sum(dim=1)  # (heads, T)
            total = total + ((1.0 - share) ** 2).mean(dim=0).mean()
    return total / (len(groups) * len(layers))


# ---------------------------------------------------------------------------------------------------------
# BoxDiff (Xie et al., ICCV 2023; github.com/showlab/BoxDiff)
# ---------------------------------------------------------------------------------------------------------


def _topk_mean(values: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the top ``fraction`` of ``values`` under ``mask`` (BoxDiff's top-k selection)."""
    # Official: k = int(mask.sum() * P); k = 0 (a one-cell region) would average nothing (NaN), so >= 1.
    k = max(1, int(mask.sum().item() * fraction))
    return (values * mask).flatten().topk(k).values.mean()


def _corner_distance(attention: torch.Tensor, mask: torch.Tensor, corner_margin: int, dim: int) -> torch.Tensor:
    """Mean L1 gap between the map's and the box's projections near the box edges (BoxDiff corner constraint)."""
    projected_box = mask.amax(dim=dim)  # (w,) for dim=0: 1 on the box's columns
    projected_map = attention.amax(dim=dim)
    inside = projected_box.nonzero().flatten()
    start, end = int(inside.min()), int(inside.max()) + 1  # box edges in cells, end exclusive as the official
    length = projected_box.shape[0]
    near_edge = torch.zeros_like(projected_box)
    for edge in (start, end):
        near_edge[max(edge - corner_margin, 0) : min(edge + corner_margin + 1, length)] = 1.0
    return ((projected_map - projected_box).abs() * near_edge).mean()


def _boxdiff_terms(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    token_indices: list[int] | None,
    attn_res: tuple[int, int] | None,
    smooth_attentions: bool,
    kernel_size: int,
    sigma: float,
    top_fraction: float,
    corner_margin: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) inner-box, outer-box and corner terms, one per (token, box) pair as BoxDiff pairs them."""
    indices = subject_token_indices(targets, token_indices)
    if targets.boxes.shape[0] != len(indices):
        raise InputError(
            f"BoxDiff pairs one subject token with one box: got {len(indices)} tokens and "
            f"{targets.boxes.shape[0]} boxes in targets.boxes"
        )
    size = resolve_size(maps, "cross", attn_res)
    token_maps = token_attention_maps(maps, indices, size, ALL_PLACES, smooth_attentions, kernel_size, sigma)
    masks = targets.box_masks(*size, device=token_maps.device)  # (N, h, w)
    inner, outer, corner = [], [], []
    for n, token in enumerate(indices):
        attention, box = token_maps[n], masks[n]
        # Outside means outside every box of the same token: instances of one phrase share its map
        # (the official code, given distinct tokens, never meets this case).
        same_token = masks[[m for m, t in enumerate(indices) if t == token]].amax(dim=0)
        inner.append(torch.clamp(1.0 - _topk_mean(attention, box, top_fraction), min=0.0))
        outer.append(torch.clamp(_topk_mean(attention, 1.0 - same_token, top_fraction), min=0.0))
        corner_x = _corner_distance(attention, box, corner_margin, dim=0)
        corner.append(corner_x + _corner_distance(attention, box, corner_margin, dim=1))
    return torch.stack(inner), torch.stack(outer), torch.stack(corner)


def boxdiff_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    token_indices: list[int] | None = None,
    attn_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    top_fraction: float = 0.8,
    corner_margin: int = 6,
    **_: object,
) -> torch.Tensor:
    """Inner-box + outer-box + corner constraints summed over subjects (BoxDiff, Xie et al. 2023)."""
    # Official `_compute_loss`: sum(1 - topk_in) + sum(topk_out) + sum(dist_x) + sum(dist_y), with
    # P = 0.8 (`top_fraction`) and L = 6 cells around each edge (`corner_margin`) at 16x16.
    inner, outer, corner = _boxdiff_terms(
        maps, targets, token_indices, attn_res, smooth_attentions, kernel_size, sigma, top_fraction, corner_margin
    )
    return inner.sum() + outer.sum() + corner.sum()


def boxdiff_inner_box_loss(
    maps: AttentionMaps,
    targets: GuidanceTargets,
    step: int,
    token_indices: list[int] | None = None,
    attn_res: tuple[int, int] | None = None,
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
    top_fraction: float = 0.8,
    corner_margin: int = 6,
    **_: object,
) -> torch.Tensor:
    """max over subjects of the inner-box term, which BoxDiff's A&E-style refinement tests (Xie et al. 2023)."""
    inner, _, _ = _boxdiff_terms(
        maps, targets, token_indices, attn_res, smooth_attentions, kernel_size, sigma, top_fraction, corner_margin
    )
    return inner.max()
