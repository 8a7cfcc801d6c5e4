"""Guidance losses: pure functions of one sample's captured attention maps.

Every loss has one signature (k-diffusion style)::

    loss(maps: AttentionMaps, targets: GuidanceTargets, step: int, **options) -> Tensor  # 0-dim, fp32

The engine (``synth.pipeline``) differentiates the returned value with respect to the latent; the
losses never touch the UNet. Where a paper and its official code differ, the code wins and a comment
says so. Resolutions are those of the captured maps: the method registry (:mod:`synth.methods`) asks
the capture for exactly the maps each loss reads, so ``attn_res=None`` means "the one captured".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .maps import AttentionKind, AttentionMaps, CapturedAttention, GuidanceTargets

# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------


def captured_size(maps: AttentionMaps, kind: AttentionKind, attn_res: tuple[int, int] | None) -> tuple[int, int]:
    """The resolution a single-resolution loss reads: ``attn_res`` if given, else the only one captured."""
    if attn_res is not None:
        return (int(attn_res[0]), int(attn_res[1]))
    sizes = sorted({e.size for e in maps.entries if e.kind == kind})
    if len(sizes) != 1:
        raise ValueError(
            f"{kind}-attention maps were captured at {len(sizes)} resolutions {sizes}; "
            "pass `attn_res=(h, w)` to choose one"
        )
    return sizes[0]


def subject_token_indices(targets: GuidanceTargets, token_indices: list[int] | None = None) -> list[int]:
    """One token per object (A&E style): explicit ``token_indices`` or each group's LAST token.

    English noun phrases end in their head noun ("a red car" -> "car"), which is the token
    Attend-and-Excite excites (Chefer et al. 2023, Sec. 4); a multi-token word's last piece is kept.
    """
    if token_indices is not None:
        return [int(i) for i in token_indices]
    if not targets.token_groups:
        raise ValueError("targets.token_groups is empty; give each object its prompt token positions")
    for n, group in enumerate(targets.token_groups):
        if not group:
            raise ValueError(f"targets.token_groups[{n}] is empty; each object needs at least one token position")
    return [int(group[-1]) for group in targets.token_groups]


def _check_token_range(indices: list[int], low: int, high: int, field: str) -> None:
    bad = [i for i in indices if not low <= i < high]
    if bad:
        raise ValueError(f"{field} {bad} out of range; token positions must lie in [{low}, {high})")


def _zero(maps: AttentionMaps) -> torch.Tensor:
    device = maps.entries[0].probs.device if maps.entries else None
    return torch.zeros((), dtype=torch.float32, device=device)


# ---------------------------------------------------------------------------------------------------------
# Attend-and-Excite (Chefer et al., SIGGRAPH 2023)
# ---------------------------------------------------------------------------------------------------------


def gaussian_kernel_2d(kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """(k, k) normalized kernel exactly as A&E's ``GaussianSmoothing`` (note: exp(-((x-m)/(2s))^2), not 2s^2)."""
    coords = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    # The official code divides by 2*sigma inside the square; we keep it to match their maps.
    profile = torch.exp(-((coords / (2 * sigma)) ** 2)) / (sigma * math.sqrt(2 * math.pi))
    kernel = profile[:, None] * profile[None, :]
    return kernel / kernel.sum()


def max_attention_per_token(
    maps: AttentionMaps,
    token_indices: list[int],
    attn_res: tuple[int, int] | None = None,
    places: tuple[str, ...] = ("up", "down", "mid"),
    smooth_attentions: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """(T,) max of each token's smoothed, token-softmaxed cross-attention map (A&E, Chefer et al. 2023, Eq. 1-2)."""
    size = captured_size(maps, "cross", attn_res)
    attention = maps.mean("cross", size, places).float()  # (h, w, 77) mean over heads and layers
    num_keys = attention.shape[-1]
    _check_token_range(token_indices, 1, num_keys - 1, "token_indices")
    # Drop <|startoftext|> AND the last of the 77 keys, as diffusers' pipeline does; sharpen with *100.
    text_probs = torch.softmax(attention[:, :, 1:-1] * 100, dim=-1)  # (h, w, 75)
    chosen = text_probs[:, :, [i - 1 for i in token_indices]].permute(2, 0, 1)  # (T, h, w)
    if smooth_attentions:
        kernel = gaussian_kernel_2d(kernel_size, sigma).to(chosen.device)[None, None]  # (1, 1, k, k)
        pad = (kernel_size - 1) // 2
        padded = F.pad(chosen[:, None], (pad, pad, pad, pad), mode="reflect")  # (T, 1, h+2p, w+2p)
        chosen = F.conv2d(padded, kernel)[:, 0]  # (T, h, w)
    return chosen.flatten(1).max(dim=1).values


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
    """max_s max(0, 1 - max A_s): the most neglected subject token (Attend-and-Excite, Chefer et al. 2023, Eq. 3)."""
    indices = subject_token_indices(targets, token_indices)
    peaks = max_attention_per_token(
        maps, indices, attn_res, smooth_attentions=smooth_attentions, kernel_size=kernel_size, sigma=sigma
    )
    return torch.clamp(1.0 - peaks, min=0.0).max()
