"""Box-confined regional attention on FLUX.1 and SD3/SD3.5: spatial-temporal control in its MM-DiT form, no backward.

Regional Prompting FLUX (Chen et al. 2024, "Training-free Regional Prompting for Diffusion Transformers",
arXiv:2411.02395) confines each object's description to its box with an attention mask over the joint sequence.
The text sequence the transformer reads becomes the base prompt's tokens, then each object's phrase encoded on its
own (:func:`regional_conditioning`); in every regional block (:func:`regional_attention_mask`):

- the base prompt's tokens attend to themselves and to every image token (as in the unguided block);
- object ``i``'s phrase tokens attend to themselves and to the image tokens inside box ``i`` only;
- an image token attends to the base prompt, to every image token, and to the phrases of the boxes it lies in.

The block's image output is then ``base + w * (regional - base)``, ``w`` the step's weight of the box the token lies
in (the largest where boxes overlap; 0 outside every box), ``base`` the unguided block's output (its attention on
the base prompt's tokens alone). The weights are the user-facing
:class:`scenewright.synth.spatial_temporal.SpatialTemporalControl`'s (one concept, one name: ``spatial_temporal=``
on every backbone); they end after ``regional_steps`` of the steps, and only the first ``regional_blocks`` of the
joint-attention blocks are regional. Outside that share, and wherever the weight is 0, a block runs its own
diffusers processor on the base prompt's tokens alone: zero weights give the unguided image exactly.

With weights 0 or 1 (the default) the base output is not computed: outside the boxes and on the base prompt's
tokens the mask gives the same attention as the unguided block, so one masked attention per block suffices.

**Which tokens are a phrase's** (:meth:`scenewright.synth.backbones.FluxBackbone.phrase_token_spans`): the phrase
is encoded alone by the backbone's ``encode``; FLUX keeps its T5 pieces through ``</s>``; SD3 keeps its CLIP tokens
through the end-of-text token (SD3's context is 77 padded CLIP tokens, then T5's) followed by its T5 pieces through
``</s>``, and only the CLIP tokens without T5 (``text_encoder_3=None``: the T5 rows are zeros). Every object gets as
many tokens as the longest phrase has (shorter phrases bring their own padding tokens, as the base prompt does).

**SD3** (:data:`~scenewright.synth.joint_attention.IMAGE_FIRST`): its joint sequence is the image first, then the
text, so the mask is :func:`regional_attention_mask`'s rolled to that order (:func:`image_first`); its
``JointAttnProcessor2_0`` takes no attention mask, so regional blocks attend with :func:`masked_joint_attention`
(the same projections and QK norms, with the mask). SD3.5's image-only ``attn2`` is not joint and keeps its
processor. SD3 guides with real CFG in one batched forward ``[negative, prompt]``: the negative rows get no regions
(their blocks run diffusers' processor on the base tokens alone; the appended rows are zeros they never read),
so the unconditional prediction is the unguided one and CFG pushes toward the regional conditional one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from scenewright.errors import InputError

from .backbones import JointConditioning
from .controllers import StepController
from .joint_attention import IMAGE_FIRST, SINGLE_STREAM, TEXT_FIRST, _heads, joint_attention_layers, joint_layout


def box_token_masks(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(..., N, h*w) bool: the image tokens whose centre lies in each ``[x0, y0, x1, y1]`` box (at least one)."""
    h, w = grid
    ys = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) / w
    b = boxes.float()[..., None]  # (..., N, 1)
    inside_x = (xs >= b[..., 0, :]) & (xs <= b[..., 2, :])  # (..., N, w)
    inside_y = (ys >= b[..., 1, :]) & (ys <= b[..., 3, :])  # (..., N, h)
    inside = inside_y[..., :, None] & inside_x[..., None, :]  # (..., N, h, w)
    # A box smaller than a token covers no centre: it gets the token its centre falls in.
    row = ((b[..., 1, 0] + b[..., 3, 0]) / 2 * h).long().clamp(0, h - 1)
    col = ((b[..., 0, 0] + b[..., 2, 0]) / 2 * w).long().clamp(0, w - 1)
    centre = torch.zeros_like(inside)
    centre.view(-1, h, w)[torch.arange(centre.view(-1, h, w).shape[0]), row.flatten(), col.flatten()] = True
    return (inside | centre).flatten(-2)


def regional_attention_mask(
    inside: torch.Tensor, present: torch.Tensor, base_length: int, region_length: int
) -> torch.Tensor:
    """(B, 1, S, S) bool, True where a query may attend a key, over FLUX's joint sequence [text, image].

    ``inside`` (B, N, h*w): box token masks; ``present`` (B, N): 1 where the image has object ``n``. The text is
    ``base_length`` base prompt tokens, then ``region_length`` tokens per object; S = text + h*w.
    """
    batch, num_objects, num_image = inside.shape
    text = base_length + num_objects * region_length
    mask = torch.zeros(batch, text + num_image, text + num_image, dtype=torch.bool, device=inside.device)
    base, image = slice(0, base_length), slice(text, text + num_image)
    mask[:, base, base] = True
    mask[:, base, image] = True
    mask[:, image, base] = True
    mask[:, image, image] = True
    for n in range(num_objects):
        region = slice(base_length + n * region_length, base_length + (n + 1) * region_length)
        seen = inside[:, n] & present[:, n, None].bool()  # (B, h*w): an absent object's tokens see only themselves
        mask[:, region, region] = True
        mask[:, region, image] = seen[:, None, :]
        mask[:, image, region] = seen[:, :, None]
    return mask[:, None]


def image_first(mask: torch.Tensor, num_image: int) -> torch.Tensor:
    """A (..., S, S) mask over [text, image] reordered to SD3's joint sequence [image, text] (rows and columns)."""
    return torch.roll(mask, shifts=(num_image, num_image), dims=(-2, -1))


def regional_conditioning(
    conditioning: JointConditioning, phrase_embeds: torch.Tensor, present: torch.Tensor
) -> JointConditioning:
    """The base prompt's conditioning with each object's phrase tokens appended: (B, L + N * Lr, D).

    ``phrase_embeds`` (B, N, Lr, D), zeros where ``present`` (B, N) is 0. Text RoPE ids are all zero in FLUX, so the
    appended tokens get zero ids too. The pooled embedding stays the base prompt's. SD3's negative rows (real CFG)
    get zero rows in their place, to batch with the prompts' rows; their blocks never read them (module docstring).
    """
    batch, num_objects, region_length, dim = phrase_embeds.shape
    regions = (phrase_embeds * present[:, :, None, None].to(phrase_embeds)).reshape(batch, -1, dim)
    embeds = torch.cat([conditioning.embeds, regions.to(conditioning.embeds)], dim=1)
    changed = {"embeds": embeds}
    if conditioning.text_ids is not None:  # FLUX
        changed["text_ids"] = conditioning.text_ids.new_zeros(embeds.shape[1], conditioning.text_ids.shape[-1])
    if conditioning.negative_embeds is not None:  # SD3's real CFG
        negative = conditioning.negative_embeds
        changed["negative_embeds"] = torch.cat([negative, negative.new_zeros(negative.shape[0], regions.shape[1],
                                                                             negative.shape[2])], dim=1)  # fmt: skip
    return replace(conditioning, **changed)


@dataclass
class RegionalAttention(StepController):
    """Regional attention during one ``generate`` call: the step controller that knows the step, and the masks."""

    inside: torch.Tensor  # (B, N, h*w) bool: image tokens in each object's box
    present: torch.Tensor  # (B, N): 1 where image b has object n
    weights: torch.Tensor  # (T, B, N) in [0, 1]: each step's blend weight per object; 0 after `regional_steps`
    base_length: int  # the base prompt's text tokens
    region_length: int  # text tokens per object
    regional_layers: frozenset[str]  # joint-attention modules that are regional (the first share of them)
    step: int = 0  # the step being denoised (before_step)
    _mask: torch.Tensor | None = field(default=None, repr=False)
    _image_first_mask: torch.Tensor | None = field(default=None, repr=False)

    @property
    def text_length(self) -> int:
        return self.base_length + self.inside.shape[1] * self.region_length

    @property
    def mask(self) -> torch.Tensor:
        """(B, 1, S, S) bool attention mask over [text, image] (FLUX's order), built once per call."""
        if self._mask is None:
            self._mask = regional_attention_mask(self.inside, self.present, self.base_length, self.region_length)
        return self._mask

    @property
    def image_first_mask(self) -> torch.Tensor:
        """(B, 1, S, S) bool: :attr:`mask` over SD3's [image, text], built once per call."""
        if self._image_first_mask is None:
            self._image_first_mask = image_first(self.mask, self.inside.shape[-1])
        return self._image_first_mask

    def before_step(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        self.step = i
        return latents

    def token_weights(self, layer: str) -> torch.Tensor | None:
        """(B, h*w, 1) blend weight of each image token at this step in ``layer``; None where nothing is regional."""
        if layer not in self.regional_layers:
            return None
        step_weights = self.weights[self.step].to(self.inside.device)  # (B, N)
        if not bool((step_weights > 0).any()):
            return None
        per_object = step_weights[:, :, None] * self.inside.to(step_weights)  # (B, N, h*w)
        return per_object.amax(dim=1)[:, :, None]


def masked_joint_attention(
    attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's ``JointAttnProcessor2_0`` attending under ``mask`` (B, 1, S, S) over [image, text]: (image, text) outputs.

    Its projections, QK norms and output projections as diffusers', with the mask it does not take.
    """
    if getattr(attn, "fused_projections", False):
        raise InputError(
            "regional attention on SD3 reads the separate to_q/to_k/to_v projections; call "
            "`transformer.unfuse_qkv_projections()` first"
        )
    heads, num_image = attn.heads, hidden_states.shape[1]
    streams = (
        (attn.to_q, attn.norm_q, attn.add_q_proj, attn.norm_added_q),
        (attn.to_k, attn.norm_k, attn.add_k_proj, attn.norm_added_k),
        (attn.to_v, None, attn.add_v_proj, None),
    )
    query, key, value = (
        torch.cat([_heads(image, norm, hidden_states, heads), _heads(text, text_norm, encoder_hidden_states, heads)],
                  dim=1).transpose(1, 2)  # (B, heads, S, d), image first
        for image, norm, text, text_norm in streams
    )  # fmt: skip
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    out = out.transpose(1, 2).flatten(2).to(query.dtype)  # (B, S, heads * d)
    image, text = out[:, :num_image], out[:, num_image:]
    if not attn.context_pre_only:
        text = attn.to_add_out(text)
    return attn.to_out[1](attn.to_out[0](image)), text


class RegionalAttentionProcessor:
    """A joint block's own processor, on the base prompt alone or with the regional mask, blended per image token."""

    def __init__(self, name: str, layout: str, original, regional: RegionalAttention):
        self.name = name
        self.layout = layout
        self.original = original
        self.regional = regional

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ):
        weight = self.regional.token_weights(self.name)  # (B, h*w, 1) | None
        if weight is None:  # the unguided block on every row; the objects' tokens get no attention output
            return self._with_region_rows(self._base(attn, hidden_states, encoder_hidden_states, image_rotary_emb))
        batch, rows = self.regional.inside.shape[0], hidden_states.shape[0]
        if rows == batch:
            return self._regional(attn, hidden_states, encoder_hidden_states, image_rotary_emb, weight)
        if rows != 2 * batch:
            raise RuntimeError(f"block {self.name} got {rows} rows for {batch} images; regional attention expects "
                               "the images' rows, or SD3's batched CFG [negative, prompt]")  # fmt: skip
        # SD3's batched CFG: the negative rows stay unguided (module docstring), the prompts' rows are regional.
        negative = self._with_region_rows(
            self._base(attn, hidden_states[:batch], encoder_hidden_states[:batch], image_rotary_emb)
        )
        guided = self._regional(attn, hidden_states[batch:], encoder_hidden_states[batch:], image_rotary_emb, weight)
        if self.layout == SINGLE_STREAM:
            return torch.cat([negative, guided])
        return tuple(torch.cat(pair) for pair in zip(negative, guided))

    def _regional(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb, weight: torch.Tensor):
        """The masked attention, blended with the base output where a box's weight is below 1."""
        regional = self.regional
        base_length, text_length = regional.base_length, regional.text_length
        needs_base = bool(((weight > 0) & (weight < 1)).any())
        base = self._base(attn, hidden_states, encoder_hidden_states, image_rotary_emb) if needs_base else None
        if self.layout == IMAGE_FIRST:  # SD3's processor takes no mask
            masked = masked_joint_attention(attn, hidden_states, encoder_hidden_states, regional.image_first_mask)
        else:
            masked = self.original(attn, hidden_states, encoder_hidden_states, regional.mask, image_rotary_emb)
        if self.layout != SINGLE_STREAM:
            image, text = masked  # (B, h*w, D), (B, text, D)
            if base is not None:
                image = base[0] + weight.to(image) * (image - base[0])
            return image, text
        if base is None:
            return masked  # (B, text + h*w, D)
        image = masked[:, text_length:]
        image = base[:, base_length:] + weight.to(image) * (image - base[:, base_length:])
        return torch.cat([masked[:, :text_length], image], dim=1)

    def _base(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb):
        """The unguided block's output: its own processor on the base prompt's tokens and the image's."""
        base_length, text_length = self.regional.base_length, self.regional.text_length
        if self.layout == IMAGE_FIRST:  # SD3: no RoPE
            return self.original(attn, hidden_states, encoder_hidden_states[:, :base_length].contiguous())
        rotary = None
        if image_rotary_emb is not None:  # RoPE rows follow the joint sequence [text, image]
            rotary = tuple(torch.cat([r[:base_length], r[text_length:]]) for r in image_rotary_emb)
        if self.layout == SINGLE_STREAM:  # one sequence [text, image]
            sequence = torch.cat([hidden_states[:, :base_length], hidden_states[:, text_length:]], dim=1)
            return self.original(attn, sequence, None, None, rotary)
        return self.original(attn, hidden_states, encoder_hidden_states[:, :base_length].contiguous(), None, rotary)

    def _with_region_rows(self, base):
        """The base output with zero rows where the objects' tokens are, so the sequence keeps its length."""
        base_length, text_length = self.regional.base_length, self.regional.text_length
        if self.layout != SINGLE_STREAM:
            image, text = base
            rows = text.new_zeros(text.shape[0], text_length - base_length, text.shape[2])
            return image, torch.cat([text, rows], dim=1)
        rows = base.new_zeros(base.shape[0], text_length - base_length, base.shape[2])
        return torch.cat([base[:, :base_length], rows, base[:, base_length:]], dim=1)


def regional_layers(transformer, share: float) -> frozenset[str]:
    """The first ``ceil(share * n)`` joint-attention modules in execution order (dual-stream, then single-stream)."""
    layers = joint_attention_layers(transformer)
    return frozenset(layers[: math.ceil(share * len(layers))])


@contextmanager
def regional_attention(transformer, regional: RegionalAttention) -> Iterator[RegionalAttention]:
    """Install :class:`RegionalAttentionProcessor` on every joint-attention block of a FLUX or SD3 transformer;
    restore after.

    Every block needs it, regional or not: each must drop the objects' tokens from the base prompt's attention.
    SD3.5's image-only ``attn2`` modules are not joint attention and keep their processors.
    """
    original = transformer.attn_processors  # {"<module>.processor": processor}
    modules = dict(transformer.named_modules())
    wrapped = dict(original)
    for name in joint_attention_layers(transformer):
        layout = joint_layout(name, modules[name])
        if layout not in (TEXT_FIRST, SINGLE_STREAM, IMAGE_FIRST):
            raise InputError(f"regional attention runs on FLUX's and SD3's joint attention; {name} is {layout}")
        processor_name = f"{name}.processor"
        wrapped[processor_name] = RegionalAttentionProcessor(name, layout, original[processor_name], regional)
    transformer.set_attn_processor(wrapped)
    try:
        yield regional
    finally:
        transformer.set_attn_processor(dict(original))


__all__ = [
    "RegionalAttention",
    "RegionalAttentionProcessor",
    "box_token_masks",
    "image_first",
    "masked_joint_attention",
    "regional_attention",
    "regional_attention_mask",
    "regional_conditioning",
    "regional_layers",
]
