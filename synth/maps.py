"""The data every guidance loss reads: captured attention maps and per-sample targets.

Every loss in :mod:`scenewright.synth.losses` has one signature (k-diffusion style)::

    loss(maps: AttentionMaps, targets: GuidanceTargets, step: int, **options) -> Tensor  # 0-dim, fp32

``maps`` and ``targets`` describe ONE sample of the batch (the engine slices the batch;
the expensive UNet forward/backward is still batched). All tensors here are fp32 even
when the model runs in fp16/bf16: the capture processor upcasts what it stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from scenewright.errors import InputError

AttentionKind = Literal["cross", "self", "grounding"]  # grounding: GLIGEN's gated self-attention

#: The places of MM-DiT blocks (FLUX.1's dual- and single-stream blocks, SD3's joint blocks). A transformer has no
#: down/mid/up levels, only depth, so its blocks answer any place a loss filters by; which blocks are read is the
#: engine's ``mmdit_blocks`` (:mod:`scenewright.synth.joint_attention`).
TRANSFORMER_PLACES = ("joint", "single")


#: SD 1.x/2.x read their "16x16 maps" (A&E, CAR, SAR, BoxDiff, layout guidance) at latent / 4 (64x64 at
#: 512 px). The one home of that factor: a model folder's ``scenewright.json`` may declare its own.
SD_ATTENTION_DOWNSCALE = 4


def downscaled_size(latent_size: tuple[int, int], factor: int) -> tuple[int, int]:
    """The UNet grid ``factor`` times coarser than the latent; it halves per level, rounding up.

    SD1.5 at 512 px: latent 64x64, so the "16x16 maps" of A&E, CAR, SAR and BoxDiff are latent / 4.
    """
    h, w = latent_size
    return (math.ceil(h / factor), math.ceil(w / factor))


@dataclass(frozen=True)
class MapRequest:
    """Which attention probabilities a loss needs materialized (everything else runs SDPA).

    ``resolutions`` are (h, w) of the layer's latent grid, e.g. ((16, 16),) for SD1.5's
    16x16 maps at 512 px; ``None`` means every resolution. ``places`` filters by UNet part.
    """

    kind: AttentionKind
    resolutions: tuple[tuple[int, int], ...] | None = None
    places: tuple[str, ...] = ("down", "mid", "up")


@dataclass
class CapturedAttention:
    """Attention probabilities of one layer for one sample."""

    layer: str  # processor name, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"
    kind: AttentionKind
    place: str  # "down" | "mid" | "up"; an MM-DiT block's: "joint" | "single" (TRANSFORMER_PLACES)
    size: tuple[int, int]  # (h, w) of the latent grid at this layer
    # (heads, queries, keys): keys = 77 text tokens (cross) or h*w pixels (self); grounding (GLIGEN's
    # fuser): queries = keys = h*w pixels followed by the 30 grounding tokens
    probs: torch.Tensor


@dataclass
class AttentionMaps:
    """All captured layers of one guidance forward, for one sample."""

    entries: list[CapturedAttention] = field(default_factory=list)
    # (h, w) of the latent these maps came from; lets losses resolve resolutions given relative to it
    # (e.g. latent / 4). None: a loss reads the single resolution captured for it.
    latent_size: tuple[int, int] | None = None
    # The first cross-attention key that is a prompt token: 1 after CLIP's <|startoftext|> (SD, SDXL, SD3's CLIP
    # tokens first), 0 where the keys are T5 tokens alone (FLUX.1), which have no start token.
    first_prompt_key: int = 1

    def select(
        self, kind: AttentionKind, size: tuple[int, int] | None = None, places: tuple[str, ...] | None = None
    ) -> list[CapturedAttention]:
        return [
            e
            for e in self.entries
            if e.kind == kind
            and (size is None or e.size == size)
            and (places is None or e.place in places or e.place in TRANSFORMER_PLACES)
        ]

    def mean(self, kind: AttentionKind, size: tuple[int, int], places: tuple[str, ...] | None = None) -> torch.Tensor:
        """Average over heads and layers at one resolution: (h, w, keys), as A&E's `aggregate_attention`."""
        chosen = self.select(kind, size, places)
        if not chosen:
            have = sorted({(e.kind, e.size) for e in self.entries})
            raise InputError(f"no {kind}-attention maps of size {size} were captured (captured: {have})")
        h, w = size
        # fp32 whatever the stored dtype: averaging many fp16 maps would lose the small values.
        stacked = torch.cat([e.probs.float().reshape(-1, h, w, e.probs.shape[-1]) for e in chosen], dim=0)
        return stacked.mean(dim=0)


def box_cell_masks(boxes: torch.Tensor, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(N, h, w) hard masks of (N, 4) normalized xyxy boxes: a cell is inside when its centre lies in the box.

    The one rule every box-vs-map comparison uses: guidance losses, the shapes model's training loss and its
    attention benchmark.
    """
    device = device or boxes.device
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    b = boxes.to(device=device, dtype=torch.float32)
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])  # (N, w)
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (N, h)
    masks = (inside_y[:, :, None] & inside_x[:, None, :]).float()  # (N, h, w)
    # A box thinner than one cell still owns the cell its centre falls in.
    for i in range(b.shape[0]):
        if masks[i].sum() == 0:
            cy = int(min(h - 1, max(0, ((b[i, 1] + b[i, 3]) / 2 * h).floor().item())))
            cx = int(min(w - 1, max(0, ((b[i, 0] + b[i, 2]) / 2 * w).floor().item())))
            masks[i, cy, cx] = 1.0
    return masks


@dataclass
class GuidanceTargets:
    """What one sample's attention should do: token groups and boxes per object."""

    token_groups: list[list[int]]  # per object: positions of its phrase's tokens in the 77-token prompt (0 = <|startoftext|>)
    boxes: torch.Tensor  # (N, 4) normalized [x0, y0, x1, y1], fp32; may be empty (0, 4) for prompt-only methods
    eot_index: int  # position of <|endoftext|> in the prompt

    def box_masks(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        """(N, h, w) hard masks: a cell is inside when its centre lies in the box (:func:`box_cell_masks`)."""
        return box_cell_masks(self.boxes, h, w, device)
