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

**Guidance.** The loss engine (:mod:`scenewright.synth.guidance`) reads these maps through
:func:`mmdit_guidance_capture`, which answers the methods' :class:`~scenewright.synth.maps.MapRequest` s on an
MM-DiT: a request's kind picks the maps stored ("cross" and/or "self"; GLIGEN's "grounding" has no MM-DiT
counterpart and is left unanswered, as on a UNet without gated layers); its places are ignored (a transformer has
no down/mid/up, so every block read answers every place); its resolution must be the image-token grid, the one
grid every block attends at. WHICH blocks are read is the engine option ``mmdit_blocks`` (indices into
:func:`joint_attention_layers`, execution order), by default the backbone's ``guidance_blocks``. As on a UNet
(:mod:`scenewright.synth.attention`), maps are computed only inside a guidance pass (and autograd's
recomputation of a checkpointed block), and the pass raises ``_StopForward`` once the last block read has stored
its maps: the blocks after it run neither forward nor backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention

from scenewright.errors import InputError

from .attention import _StopForward
from .maps import AttentionMaps, CapturedAttention, MapRequest

#: The engine option that picks the MM-DiT blocks guidance reads (:data:`scenewright.synth.recipe.ENGINE_DEFAULTS`).
BLOCKS_OPTION = "mmdit_blocks"

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
        raise InputError(
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
    # 0 where the text keys are T5 tokens alone (FLUX), 1 where CLIP's <|startoftext|> is first (SD3)
    first_prompt_key: int = 0
    # True: maps are computed only in :meth:`guidance_forward` (and autograd's recomputation of a checkpointed
    # block), so the denoising forwards between guided steps pay nothing; False: in every forward (inspection)
    guidance_only: bool = False
    stop_after: str | None = None  # the last block read, in execution order: a guidance pass stops after it
    recording: bool = False  # True only inside :meth:`guidance_forward`
    recomputing: bool = False  # True while autograd re-runs a checkpointed block in the backward pass

    @property
    def computing(self) -> bool:
        """Whether the wrapped blocks compute maps in the current forward."""
        return not self.guidance_only or self.recording or self.recomputing

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
        # No latent_size: every block attends at the one token grid, not at SD's latent / 4, so a loss given no
        # resolution reads the grid the maps were captured at.
        return AttentionMaps(entries=entries, first_prompt_key=self.first_prompt_key)

    def clear(self) -> None:
        """Drop stored maps (and with them the autograd graph they hold)."""
        self.cross_maps, self.self_maps = {}, {}

    def guidance_forward(self, run_model: Callable[[], object], latent_hw: tuple[int, int]) -> None:
        """Run ``run_model`` as a guidance pass: maps stored with grad; it stops after block :attr:`stop_after`.

        :meth:`scenewright.synth.attention.AttentionCapture.guidance_forward`'s contract, on an MM-DiT.
        """
        if tuple(latent_hw) != self.grid:
            raise InputError(f"the guidance pass is for grid {tuple(latent_hw)} but the capture was built for {self.grid}")
        self.clear()
        self.recording = True
        try:
            run_model()
        except _StopForward:
            pass
        finally:
            self.recording = False

    @contextmanager
    def recomputation(self) -> Iterator[None]:
        """While autograd re-runs a checkpointed block: maps computed as in the pass, stored nowhere, no stop."""
        self.recomputing = True
        try:
            yield
        finally:
            self.recomputing = False


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
        if image_rotary_emb is not None:  # FLUX's processor takes RoPE; SD3's takes no such argument
            kwargs["image_rotary_emb"] = image_rotary_emb
        if not capture.computing:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        h, w = capture.grid
        if self.layout != SINGLE_STREAM and hidden_states.shape[1] != h * w:
            raise InputError(
                f"joint-attention capture was given grid={capture.grid} ({h * w} image tokens) but block {self.name} "
                f"has {hidden_states.shape[1]}; pass the backbone's `latent_grid(height, width)`"
            )
        image_query, text_key, image_key = joint_queries_and_keys(
            attn, self.layout, hidden_states, encoder_hidden_states, image_rotary_emb, h * w
        )
        cross = key_softmax(image_query, text_key) if "cross" in capture.kinds else None  # (B, 1, h*w, text)
        self_ = key_softmax(image_query, image_key) if "self" in capture.kinds else None  # (B, 1, h*w, h*w)
        # A recomputation repeats the pass's operations, but the maps in the losses' graph are the pass's own:
        # store nothing then, and leave stopping to autograd's early stop (as attention.CaptureProcessor).
        if not capture.recomputing:
            if cross is not None:
                capture.cross_maps[self.name] = cross
            if self_ is not None:
                capture.self_maps[self.name] = self_
            if capture.recording and self.name == capture.stop_after:
                raise _StopForward  # the blocks after the last one read are not needed for the losses
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)


@contextmanager
def joint_attention_capture(
    transformer, layers: Sequence[str], grid: tuple[int, int], kinds: Sequence[str] = ("cross", "self"),
    first_prompt_key: int = 0, guidance_only: bool = False,
) -> Iterator[JointAttentionCapture]:  # fmt: skip
    """Wrap the joint-attention modules ``layers`` of ``transformer`` to store their maps; restore on exit.

    ``layers`` are module names from :func:`joint_attention_layers` (e.g. ``"transformer_blocks.0.attn"``,
    ``"single_transformer_blocks.3.attn"``); ``grid`` is the image-token grid (h, w) of the forward (the
    backbone's ``latent_grid(height, width)``). Every other block keeps its processor object untouched.
    ``first_prompt_key`` and ``guidance_only``: as :class:`JointAttentionCapture`'s fields.
    """
    unknown_kinds = set(kinds) - {"cross", "self"}
    if unknown_kinds:
        raise InputError(f"`kinds` are 'cross' and/or 'self', got {sorted(unknown_kinds)}")
    modules = dict(transformer.named_modules())
    available = joint_attention_layers(transformer)
    missing = [name for name in layers if name not in available]
    if missing or not layers:
        raise InputError(
            f"`layers` must name joint-attention modules of this transformer, got {missing or list(layers)}; "
            f"it has {available}"
        )
    original = transformer.attn_processors  # {"<module>.processor": processor}
    last_read = max(layers, key=available.index)  # execution order
    capture = JointAttentionCapture(grid=tuple(grid), kinds=tuple(kinds), first_prompt_key=first_prompt_key,
                                    guidance_only=guidance_only, stop_after=last_read)  # fmt: skip
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


def guidance_layers(transformer, blocks: Sequence[int], model: str = "this transformer") -> list[str]:
    """The joint-attention modules at indices ``blocks`` of :func:`joint_attention_layers` (execution order).

    An index beyond the model's depth is an error naming the option and the model's block count.
    """
    layers = joint_attention_layers(transformer)
    blocks = list(blocks)
    bad = [b for b in blocks if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < len(layers)]
    if not blocks or bad:
        raise InputError(
            f"`{BLOCKS_OPTION}` {bad or blocks} names blocks {model} lacks: it has {len(layers)} joint-attention "
            f"blocks (indices 0-{len(layers) - 1}, in execution order: {layers[0]} ... {layers[-1]}); give indices in "
            f"that range, or leave `{BLOCKS_OPTION}` unset for the backbone's default"
        )
    return [layers[b] for b in sorted(set(blocks))]


@contextmanager
def mmdit_guidance_capture(
    transformer, requests: Sequence[MapRequest], blocks: Sequence[int], grid: tuple[int, int],
    first_prompt_key: int, model: str = "this transformer",
) -> Iterator[JointAttentionCapture]:  # fmt: skip
    """The guidance methods' map requests answered by the MM-DiT blocks ``blocks`` (module docstring, "Guidance").

    Maps are computed only inside guidance passes, and a pass stops after the last block read.
    """
    kinds = tuple(kind for kind in ("cross", "self") if any(r.kind == kind for r in requests))
    if not kinds:
        asked = sorted({r.kind for r in requests})
        raise InputError(f"the methods ask for {asked} maps, which {model}'s joint attention lacks; "
                         "it gives 'cross' (text -> image) and 'self' (image <-> image) maps")  # fmt: skip
    for request in requests:
        if request.kind in kinds and request.resolutions is not None and tuple(grid) not in request.resolutions:
            raise InputError(
                f"the methods ask for {request.kind} maps at {list(request.resolutions)}, but {model}'s joint attention "
                f"gives them only at the image-token grid {tuple(grid)}: leave the methods' `*_res` options "
                f"(attn_res, car_res, sar_res, up_res) unset, or set them to {tuple(grid)}"
            )
    layers = guidance_layers(transformer, blocks, model)
    with joint_attention_capture(transformer, layers, grid, kinds, first_prompt_key, guidance_only=True) as capture:
        yield capture


__all__ = [
    "BLOCKS_OPTION",
    "JointAttentionCapture",
    "JointAttentionCaptureProcessor",
    "joint_attention_capture",
    "joint_attention_layers",
    "guidance_layers",
    "joint_queries_and_keys",
    "key_softmax",
    "mmdit_guidance_capture",
]
