"""Box-confined spatial-temporal attention control (Wu et al. 2023, "Harnessing the Spatial-Temporal
Attention of Diffusion Models for High-Fidelity Text-to-Image Synthesis").

In every cross-attention layer the conditional branch's output becomes the global prompt's attention
output blended, inside each object's region (its box as a soft-edged mask at the layer's grid), with
the attention output of that object's local description (its phrase), with weight ``w_i(t)`` per
object and denoising step::

    out = (A(q, K_g, V_g) + sum_i a_i * A(q, K_i, V_i)) / (1 + sum_i a_i),    a_i = w_i(t) * M_i

The division keeps the layer's output on the scale of one attention output (a convex combination),
so that a large weight makes a box's pixels follow its local description rather than grow; with every
``w_i(t) = 0`` it is the plain layer exactly. The blend is done by THE capture processor
(:class:`synth.attention.CaptureProcessor`), which calls :meth:`RegionalControl.blend` in cross layers,
so guidance losses and this control compose in one set of processors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def soft_box_masks(boxes: torch.Tensor, size: tuple[int, int], softness: float = 1.0) -> torch.Tensor:
    """(N, h*w) masks in [0, 1]: ~1 inside each ``[x0, y0, x1, y1]`` box, a sigmoid edge ~``softness`` cells wide."""
    h, w = size
    b = boxes.float()
    ys = (torch.arange(h, device=b.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=b.device, dtype=torch.float32) + 0.5) / w
    # sigmoid(d / tau) rises from 0.12 to 0.88 over d in [-2 tau, 2 tau]: tau = softness / 4 cells
    tx, ty = max(softness, 1e-3) / (4 * w), max(softness, 1e-3) / (4 * h)
    mx = torch.sigmoid((xs[None] - b[:, 0:1]) / tx) * torch.sigmoid((b[:, 2:3] - xs[None]) / tx)  # (N, w)
    my = torch.sigmoid((ys[None] - b[:, 1:2]) / ty) * torch.sigmoid((b[:, 3:4] - ys[None]) / ty)  # (N, h)
    return (my[:, :, None] * mx[:, None, :]).flatten(1)


def fixed_schedule(num_steps: int, num_objects: int, local_weight: float = 1.0, batch: int = 1) -> torch.Tensor:
    """(T, B, N) weights rising linearly from 0 (global prompt) to ``local_weight`` (local descriptions).

    Early steps lay out the whole scene from the global prompt; later ones refine each box from its own
    description, the global-to-local progression Wu et al. 2023 describe.
    """
    ramp = torch.linspace(0.0, 1.0, num_steps) if num_steps > 1 else torch.ones(1)
    return (local_weight * ramp)[:, None, None].expand(num_steps, batch, num_objects).clone()


@dataclass
class SpatialTemporalControl:
    """User-facing options: ``weights`` (T, B, N) or None for :func:`fixed_schedule` with ``local_weight``."""

    local_weight: float = 1.0
    weights: torch.Tensor | None = None
    softness: float = 1.0  # mask edge width, in cells of each layer's grid

    def __post_init__(self):
        if not isinstance(self.local_weight, (int, float)) or not self.local_weight >= 0:
            raise ValueError(f"`local_weight` must be a number >= 0, got {self.local_weight!r}")
        if not isinstance(self.softness, (int, float)) or not self.softness > 0:
            raise ValueError(f"`softness` must be a number > 0 (cells), got {self.softness!r}")


@dataclass
class RegionalControl:
    """What the capture processor needs to blend local descriptions into the conditional rows."""

    local_embeds: torch.Tensor  # (B, N, 77, D) text embeddings of each object's phrase (zeros where absent)
    boxes: torch.Tensor  # (B, N, 4) normalized xyxy
    weights: torch.Tensor  # (T, B, N); 0 for absent objects
    latent_hw: tuple[int, int]
    softness: float = 1.0
    step: int = 0  # set by the loop before each denoising step
    _masks: dict = field(default_factory=dict)

    def masks(self, size: tuple[int, int]) -> torch.Tensor:
        """(B, N, h*w) soft masks at one grid, cached."""
        if size not in self._masks:
            flat = soft_box_masks(self.boxes.flatten(0, 1), size, self.softness)
            self._masks[size] = flat.view(*self.boxes.shape[:2], -1)
        return self._masks[size]

    def blend(self, attn, query: torch.Tensor, global_out: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """``global_out`` (rows, heads, Q, d) with the last B rows (the conditional ones) blended; see module doc."""
        weights = self.weights[self.step]  # (B, N)
        if size is None or not bool((weights != 0).any()):
            return global_out  # nothing to blend: the plain layer, bit for bit
        batch, n = weights.shape
        heads, head_dim = query.shape[1], query.shape[-1]
        local = self.local_embeds.flatten(0, 1).to(query.dtype)  # (B*N, 77, D)
        if attn.norm_cross:
            local = attn.norm_encoder_hidden_states(local)
        key = attn.to_k(local).view(batch * n, -1, heads, head_dim).transpose(1, 2)  # (B*N, heads, 77, d)
        value = attn.to_v(local).view(batch * n, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        q = query[-batch:].repeat_interleave(n, dim=0)  # (B*N, heads, Q, d)
        local_out = F.scaled_dot_product_attention(q, key, value).view(batch, n, heads, -1, head_dim)
        a = (weights.to(query.device).float()[:, :, None] * self.masks(size).to(query.device))  # (B, N, Q)
        a = a[:, :, None, :, None]  # (B, N, 1, Q, 1)
        cond = global_out[-batch:].float()
        blended = (cond + (a * local_out.float()).sum(dim=1)) / (1.0 + a.sum(dim=1))
        return torch.cat([global_out[:-batch], blended.to(global_out.dtype)])


__all__ = ["RegionalControl", "SpatialTemporalControl", "fixed_schedule", "soft_box_masks"]
