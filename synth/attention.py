"""The one attention-capture mechanism: a diffusers attention processor that materializes probabilities.

Every attention layer of the UNet gets a :class:`CaptureProcessor` (installed with
``unet.set_attn_processor`` by :func:`attention_capture`, restored afterwards even on error).
It computes attention exactly as diffusers' ``AttnProcessor2_0`` (fused SDPA) everywhere, except in
the layers the active losses request (:class:`~scenewright.synth.maps.MapRequest`) during a guidance pass: there
it computes ``softmax(q k^T * scale)`` explicitly and keeps the fp32 probabilities in the autograd
graph, as Attend-and-Excite's ``AttendExciteAttnProcessor`` does (Chefer et al. 2023).

A guidance pass only needs the maps, not the noise prediction, so once the last requested layer
(in execution order) has stored its maps the processor raises :class:`_StopForward` and the rest of
the UNet (the high-resolution up blocks) runs neither forward nor backward.

With :func:`checkpointed_blocks` the guidance pass keeps only each transformer block's and resnet's inputs
(activation checkpointing, Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost") and autograd re-runs
a block in the backward pass; the processors then take the same explicit path, storing nothing and never exiting.

Capture is one concern; changing what a cross-attention layer outputs is another. The processor calls a
:class:`CrossAttentionBlend` given to :func:`attention_capture` (spatial-temporal control's
:class:`scenewright.synth.spatial_temporal.SpatialTemporalBlend`) after attention in every cross layer,
so guidance losses and that control compose in one set of processors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from scenewright.errors import InputError
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS

from .maps import AttentionKind, AttentionMaps, CapturedAttention, MapRequest

PLACES = ("down", "mid", "up")


class _StopForward(Exception):
    """Raised inside the UNet once every requested map is stored (early exit of a guidance pass)."""


def layer_kind(name: str) -> AttentionKind | None:
    """'self' for a transformer block's ``attn1``, 'cross' for ``attn2``, 'grounding' for GLIGEN's fuser."""
    parts = name.split(".")
    if "attn1" in parts:
        return "self"
    if "attn2" in parts:
        return "cross"
    if "fuser" in parts:
        return "grounding"  # GLIGEN's gated self-attention over [visual tokens, grounding tokens]
    return None


def layer_place(name: str) -> str | None:
    """'down' | 'mid' | 'up' from a processor name such as ``up_blocks.1.attentions.0...``."""
    if name.startswith("down_blocks"):
        return "down"
    if name.startswith("mid_block"):
        return "mid"
    if name.startswith("up_blocks"):
        return "up"
    return None


def grid_size(num_pixels: int, latent_hw: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) of a layer whose query has ``num_pixels`` tokens, for a latent of ``latent_hw``.

    The UNet halves the grid per level, rounding up (stride-2 conv with padding 1).
    """
    h, w = latent_hw
    for _ in range(8):
        if h * w == num_pixels:
            return (h, w)
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return None


def request_matches(request: MapRequest, kind: AttentionKind, place: str, size: tuple[int, int]) -> bool:
    return (
        request.kind == kind
        and place in request.places
        and (request.resolutions is None or tuple(size) in {tuple(r) for r in request.resolutions})
    )


@dataclass
class _StoredLayer:
    kind: AttentionKind
    place: str
    size: tuple[int, int]
    probs: torch.Tensor  # (B, heads, h*w, keys) fp32, in the autograd graph during guidance


class AttentionCapture:
    """What the processors of one UNet share: which maps to keep, and the maps of the last guidance pass."""

    def __init__(self, requests: list[MapRequest], early_exit: bool = True, exit_plan: dict | None = None):
        self.requests = list(requests)
        self.early_exit = early_exit
        self.recording = False  # True only inside :meth:`guidance_forward`
        # True while autograd re-runs a checkpointed block (:func:`checkpointed_blocks`) in the backward pass
        self.recomputing = False
        self.latent_hw: tuple[int, int] | None = None
        self.layers: dict[str, _StoredLayer] = {}
        self._calls: list[str] = []  # processor names in execution order during the current pass
        self._seen: dict[str, tuple] = {}  # name -> (kind, place, size) of every layer seen, for error messages
        # (latent (h, w), requests) -> name of the last layer that stores maps, learnt from one full
        # pass; pass the same dict to later captures of the same UNet to skip that first full pass
        self._last_needed: dict[tuple, str | None] = {} if exit_plan is None else exit_plan
        self.stopped_early = False

    def wants(self, kind: AttentionKind | None, place: str | None, size: tuple[int, int] | None) -> bool:
        if kind is None or place is None or size is None:
            return False
        return any(request_matches(r, kind, place, size) for r in self.requests)

    def stop_after(self) -> str | None:
        return self._last_needed.get(self._plan_key()) if self.early_exit and self.latent_hw else None

    def _plan_key(self) -> tuple:
        return (self.latent_hw, repr(self.requests))

    def guidance_forward(self, run_unet: Callable[[], object], latent_hw: tuple[int, int]) -> None:
        """Run ``run_unet`` as a guidance pass: requested maps stored with grad; stops after the last one."""
        self.layers = {}
        self._calls = []
        self.latent_hw = tuple(latent_hw)  # type: ignore[assignment]
        self.recording = True
        self.stopped_early = False
        try:
            run_unet()
        except _StopForward:
            self.stopped_early = True
        finally:
            self.recording = False
        if not self.stopped_early and self._plan_key() not in self._last_needed and self.layers:
            stored = [name for name in self._calls if name in self.layers]
            self._last_needed[self._plan_key()] = stored[-1]
        if not self.layers:
            seen = self._seen.values()
            have = sorted({f"{kind} {place} {size[0]}x{size[1]}" for kind, place, size in seen if kind and size})
            raise InputError(
                f"no attention layer matched the requested maps {self.requests} for latent size {tuple(latent_hw)}; "
                f"this UNet has {have}: set the method's resolution option (e.g. `attn_res`) to one of these"
            )

    def maps(self, index: int) -> AttentionMaps:
        """The maps of sample ``index`` of the last guidance pass, in execution order."""
        return AttentionMaps(
            entries=[
                CapturedAttention(layer=name, kind=s.kind, place=s.place, size=s.size, probs=s.probs[index])
                for name, s in self.layers.items()
            ]
        )

    def clear(self) -> None:
        """Drop stored maps (and with them the autograd graph they hold)."""
        self.layers = {}

    @contextmanager
    def recomputation(self) -> Iterator[None]:
        """While autograd re-runs a checkpointed block: the requested layers compute as in the guidance pass."""
        self.recomputing = True
        try:
            yield
        finally:
            self.recomputing = False


class CrossAttentionBlend(Protocol):
    """What a cross-attention layer's output becomes after attention, before its output projection."""

    latent_hw: tuple[int, int]  # the latent grid, to size layers outside guidance passes

    def blend(self, attn, query: torch.Tensor, out: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """``out`` (rows, heads, Q, d) of the layer whose ``query`` is (rows, heads, Q, d) on a ``size`` grid."""
        ...


class CaptureProcessor:
    """``AttnProcessor2_0`` plus explicit, stored probabilities in the layers an :class:`AttentionCapture` wants.

    ``cross_blend``: called on every cross layer's attention output (None: the plain output).
    """

    def __init__(self, name: str, capture: AttentionCapture, cross_blend: CrossAttentionBlend | None = None):
        self.name = name
        self.capture = capture
        self.cross_blend = cross_blend
        self.kind = layer_kind(name)
        self.place = layer_place(name)

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        capture = self.capture
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        num_queries = hidden_states.shape[1]

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            # (B, heads, queries, keys) as SDPA expects
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, Q, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, K, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        size = None
        # GLIGEN's fuser attends over the visual tokens followed by the position net's 30 grounding tokens.
        num_pixels = num_queries - GLIGEN_MAX_OBJECTS if self.kind == "grounding" else num_queries
        guiding = capture.recording or capture.recomputing
        if guiding:
            size = grid_size(num_pixels, capture.latent_hw)  # type: ignore[arg-type]
        if capture.recording:
            capture._calls.append(self.name)
            capture._seen[self.name] = (self.kind, self.place, size)
        if guiding and capture.wants(self.kind, self.place, size):
            # Explicit softmax in fp32 so losses see exact, differentiable probabilities.
            scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale  # (B, heads, Q, K)
            if attention_mask is not None:
                scores = scores + attention_mask.float()
            probs = scores.softmax(dim=-1)
            # A recomputation must repeat the pass's operations, but the maps stored by the pass itself are
            # the ones in the losses' graph: store nothing, and leave stopping to autograd's early stop.
            if capture.recording:
                capture.layers[self.name] = _StoredLayer(self.kind, self.place, size, probs)  # type: ignore[arg-type]
                if self.name == capture.stop_after():
                    raise _StopForward
            hidden_states = torch.matmul(probs.to(value.dtype), value)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )
        if self.kind == "cross" and self.cross_blend is not None:
            size = size or grid_size(num_queries, self.cross_blend.latent_hw)
            hidden_states = self.cross_blend.blend(attn, query, hidden_states, size)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def attention_capture(
    unet,
    requests: list[MapRequest],
    early_exit: bool = True,
    exit_plan: dict | None = None,
    cross_blend: CrossAttentionBlend | None = None,
) -> Iterator[AttentionCapture]:
    """Install a :class:`CaptureProcessor` on every attention layer of ``unet``; restore the originals on exit."""
    original = unet.attn_processors  # {name: processor}
    capture = AttentionCapture(requests, early_exit=early_exit, exit_plan=exit_plan)
    unet.set_attn_processor({name: CaptureProcessor(name, capture, cross_blend) for name in original})
    try:
        yield capture
    finally:
        capture.clear()
        unet.set_attn_processor(dict(original))


@contextmanager
def checkpointed_blocks(unet, capture: AttentionCapture) -> Iterator[None]:
    """Activation checkpointing of every transformer block and resnet of ``unet`` inside; its own setting restored.

    ``unet`` may also be FLUX's or SD3's transformer (its blocks are checkpointed) with a
    :class:`scenewright.synth.joint_attention.JointAttentionCapture`, which keeps the same contract.

    diffusers checkpoints a block whenever grad is enabled and the block's ``gradient_checkpointing`` is set
    (so only the grad-enabled guidance pass is affected). Non-reentrant ``torch.utils.checkpoint``: it
    allows the pass to stop inside a block (:class:`_StopForward`), and its recomputation stops early, at
    the last tensor the backward needs, so it never reaches the layer that stopped the pass. (The block
    that stopped leaves its checkpoint unfinished; Python closes it, popping its saved-tensor hooks, when
    :meth:`AttentionCapture.guidance_forward` has handled the exception, before any loss is computed.)
    """

    def checkpointed(module, *args):
        return torch.utils.checkpoint.checkpoint(
            module.__call__, *args, use_reentrant=False, context_fn=lambda: (nullcontext(), capture.recomputation())
        )

    # diffusers sets these two attributes on every module that can be checkpointed
    settings = {m: (m.gradient_checkpointing, getattr(m, "_gradient_checkpointing_func", None))
                for m in unet.modules() if hasattr(m, "gradient_checkpointing")}  # fmt: skip
    if not settings:
        raise InputError(
            f"{type(unet).__name__} has no blocks diffusers can checkpoint; set `gradient_checkpointing=False`"
        )
    unet.enable_gradient_checkpointing(checkpointed)
    try:
        yield
    finally:
        for module, (enabled, function) in settings.items():
            module.gradient_checkpointing, module._gradient_checkpointing_func = enabled, function
