"""Attention maps from MM-DiT joint attention (FLUX.1, SD3/SD3.5), in the shapes the guidance losses read.

MM-DiTs have no cross-attention: each block runs ONE attention over text and image tokens together
(FLUX's dual-stream blocks and SD3's joint blocks concatenate two projected streams; FLUX's single-stream
blocks project one sequence that is text first, then image). The losses take what SD's UNet gives them
(:class:`~scenewright.synth.maps.CapturedAttention`):

- ``"cross"``: text -> image maps, for each image query a distribution over the text tokens, ``(1, h*w, text)``;
- ``"self"``: image <-> image maps, for each image query a distribution over the image tokens, ``(1, h*w, h*w)``;

averaged over heads (the leading 1 keeps :meth:`AttentionMaps.mean`'s ``(heads, queries, keys)`` layout; storing
per-head maps would cost heads x (h*w)^2 floats per block, 1.6 GB for one FLUX block at 1024 px).

**Normalization.** The joint softmax normalizes over text AND image keys, so an image query's text probabilities
sum to well below 1, and the more image tokens the less (4096 image vs 512 text tokens in FLUX at 1024 px):
TACA (Lv et al., "Rethinking Cross-Modal Interaction in Multimodal Diffusion Transformers", ICCV 2025,
arXiv:2506.07986) analyses this suppression of image -> text attention on FLUX and SD3.5 and contrasts it with
UNet cross-attention, whose denominator holds only the text tokens. The losses were written for the latter, so
the maps here are a softmax over the text keys alone, ``softmax(q_img k_text^T / sqrt(d))``: SD's normalization.
It equals taking the joint softmax's text slice and renormalizing it to sum to 1 (the joint denominator
cancels); the tests check exactly that against a naive recomputation. Self maps are likewise a softmax over the
image keys alone. Queries and keys are the ones the block attends with: after the QK norms and, in FLUX, RoPE
(``apply_rotary_emb``) on the joint sequence.

**Processors.** :func:`joint_attention_capture` wraps only the blocks asked for; every other block keeps
diffusers' own processor and so its fused ``dispatch_attention_fn`` / SDPA path. A wrapped block still computes
its output with its own processor (unchanged, so capture changes nothing) and additionally recomputes Q and K
to materialize the two maps, in fp32 and in the autograd graph for guidance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention

from .maps import AttentionMaps, CapturedAttention

TEXT_FIRST = "text_first"  # FLUX dual-stream: joint sequence = [text, image]
IMAGE_FIRST = "image_first"  # SD3 joint blocks: joint sequence = [image, text]
SINGLE_STREAM = "single_stream"  # FLUX single-stream: one projected sequence [text, image]


def joint_layout(name: str, attn) -> str | None:
    """How a transformer's attention module ``name`` orders text and image, or None if it is not joint attention.

    SD3.5's ``attn2`` (image-only self-attention in its first blocks) and anything else is not joint.
    """
    if not name.endswith(".attn"):
        return None
    if isinstance(attn, FluxAttention):  # FLUX: RoPE on the joint sequence, text first
        return TEXT_FIRST if attn.added_kv_proj_dim is not None else SINGLE_STREAM
    if isinstance(attn, Attention) and attn.add_k_proj is not None:  # SD3's JointAttnProcessor2_0 blocks
        return IMAGE_FIRST
    return None


def joint_attention_layers(transformer) -> list[str]:
    """Names of an MM-DiT's joint-attention modules in execution order: what :func:`joint_attention_capture` reads."""
    return [name for name, module in transformer.named_modules() if joint_layout(name, module) is not None]


def _heads(projection: torch.nn.Module, norm: torch.nn.Module | None, x: torch.Tensor, heads: int) -> torch.Tensor:
    """One projection split into heads and QK-normalized: (B, N, C) -> (B, N, heads, d), FLUX's processor layout."""
    x = projection(x).unflatten(-1, (heads, -1))
    return x if norm is None else norm(x)  # SD3's norms act on the last dim too, whatever the layout


def joint_queries_and_keys(
    attn, layout: str, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None, num_image_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The image queries, text keys and image keys one joint-attention block attends with: each (B, heads, N, d).

    As ``FluxAttnProcessor`` / ``JointAttnProcessor2_0``: projections, then the QK norms, then (FLUX) RoPE on the
    joint sequence.
    """
    if getattr(attn, "fused_projections", False):
        raise ValueError(
            "joint-attention capture reads the separate to_q/to_k projections; call "
            "`transformer.unfuse_qkv_projections()` before capturing maps"
        )
    heads = attn.heads
    query = _heads(attn.to_q, attn.norm_q, hidden_states, heads)  # (B, N, heads, d)
    key = _heads(attn.to_k, attn.norm_k, hidden_states, heads)
    if layout != SINGLE_STREAM:
        text_query = _heads(attn.add_q_proj, attn.norm_added_q, encoder_hidden_states, heads)
        text_key = _heads(attn.add_k_proj, attn.norm_added_k, encoder_hidden_states, heads)
        if layout == TEXT_FIRST:
            query, key = torch.cat([text_query, query], dim=1), torch.cat([text_key, key], dim=1)
        else:
            query, key = torch.cat([query, text_query], dim=1), torch.cat([key, text_key], dim=1)
    if image_rotary_emb is not None:  # FLUX: RoPE over the whole joint sequence (text ids, then image ids)
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
    query, key = query.transpose(1, 2), key.transpose(1, 2)  # (B, heads, N, d)
    num_text_tokens = key.shape[2] - num_image_tokens
    if layout == IMAGE_FIRST:
        image = slice(0, num_image_tokens)
        text = slice(num_image_tokens, None)
    else:
        text = slice(0, num_text_tokens)
        image = slice(num_text_tokens, None)
    return query[:, :, image], key[:, :, text], key[:, :, image]


def key_softmax(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Heads-averaged ``softmax(q k^T / sqrt(d))`` over ``keys`` alone, in fp32: (B, 1, queries, keys)."""
    scores = torch.matmul(queries.float(), keys.float().transpose(-1, -2)) / math.sqrt(queries.shape[-1])
    return scores.softmax(dim=-1).mean(dim=1, keepdim=True)


@dataclass
class JointAttentionCapture:
    """The maps the wrapped blocks stored in the last forward: processor name -> (B, 1, h*w, keys) per kind."""

    grid: tuple[int, int]  # (h, w) of the image tokens
    kinds: tuple[str, ...] = ("cross", "self")
    cross_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, 1, h*w, text tokens)
    self_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, 1, h*w, h*w)
    places: dict[str, str] = field(default_factory=dict)  # name -> "joint" (dual-stream) | "single"

    def maps(self, index: int) -> AttentionMaps:
        """Sample ``index``'s maps as the losses read them (``AttentionMaps.mean("cross", grid)`` -> (h, w, text))."""
        entries = [
            CapturedAttention(layer=name, kind="cross", place=self.places[name], size=self.grid, probs=probs[index])
            for name, probs in self.cross_maps.items()
        ]
        entries += [
            CapturedAttention(layer=name, kind="self", place=self.places[name], size=self.grid, probs=probs[index])
            for name, probs in self.self_maps.items()
        ]
        return AttentionMaps(entries=entries, latent_size=self.grid)

    def clear(self) -> None:
        """Drop stored maps (and with them the autograd graph they hold)."""
        self.cross_maps, self.self_maps = {}, {}


class JointAttentionCaptureProcessor:
    """The block's own processor for the output, plus its text -> image and image <-> image maps."""

    def __init__(self, name: str, layout: str, original, capture: JointAttentionCapture):
        self.name = name
        self.layout = layout
        self.original = original
        self.capture = capture

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ):
        capture = self.capture
        h, w = capture.grid
        if self.layout != SINGLE_STREAM and hidden_states.shape[1] != h * w:
            raise ValueError(
                f"joint-attention capture was given grid={capture.grid} ({h * w} image tokens) but block {self.name} "
                f"has {hidden_states.shape[1]}; pass the backbone's `latent_grid(height, width)`"
            )
        image_query, text_key, image_key = joint_queries_and_keys(
            attn, self.layout, hidden_states, encoder_hidden_states, image_rotary_emb, h * w
        )
        if "cross" in capture.kinds:
            capture.cross_maps[self.name] = key_softmax(image_query, text_key)  # (B, 1, h*w, text)
        if "self" in capture.kinds:
            capture.self_maps[self.name] = key_softmax(image_query, image_key)  # (B, 1, h*w, h*w)
        if image_rotary_emb is not None:  # FLUX's processor takes RoPE; SD3's takes no such argument
            kwargs["image_rotary_emb"] = image_rotary_emb
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)


@contextmanager
def joint_attention_capture(
    transformer, layers: Sequence[str], grid: tuple[int, int], kinds: Sequence[str] = ("cross", "self")
) -> Iterator[JointAttentionCapture]:
    """Wrap the joint-attention modules ``layers`` of ``transformer`` to store their maps; restore on exit.

    ``layers`` are module names from :func:`joint_attention_layers` (e.g. ``"transformer_blocks.0.attn"``,
    ``"single_transformer_blocks.3.attn"``); ``grid`` is the image-token grid (h, w) of the forward (the
    backbone's ``latent_grid(height, width)``). Every other block keeps its processor object untouched.
    """
    unknown_kinds = set(kinds) - {"cross", "self"}
    if unknown_kinds:
        raise ValueError(f"`kinds` are 'cross' and/or 'self', got {sorted(unknown_kinds)}")
    modules = dict(transformer.named_modules())
    available = joint_attention_layers(transformer)
    missing = [name for name in layers if name not in available]
    if missing or not layers:
        raise ValueError(
            f"`layers` must name joint-attention modules of this transformer, got {missing or list(layers)}; "
            f"it has {available}"
        )
    original = transformer.attn_processors  # {"<module>.processor": processor}
    capture = JointAttentionCapture(grid=tuple(grid), kinds=tuple(kinds))
    wrapped = dict(original)
    for name in layers:
        layout = joint_layout(name, modules[name])
        capture.places[name] = "single" if layout == SINGLE_STREAM else "joint"
        processor_name = f"{name}.processor"
        wrapped[processor_name] = JointAttentionCaptureProcessor(name, layout, original[processor_name], capture)
    transformer.set_attn_processor(wrapped)
    try:
        yield capture
    finally:
        capture.clear()
        transformer.set_attn_processor(dict(original))


__all__ = [
    "JointAttentionCapture",
    "JointAttentionCaptureProcessor",
    "joint_attention_capture",
    "joint_attention_layers",
    "joint_queries_and_keys",
    "key_softmax",
]
