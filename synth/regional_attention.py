"""Box-confined regional attention on FLUX.1: spatial-temporal control in its MM-DiT form, without a backward.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from .backbones import JointConditioning
from .controllers import StepController
from .joint_attention import SINGLE_STREAM, TEXT_FIRST, joint_attention_layers, joint_layout


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


def regional_conditioning(
    conditioning: JointConditioning, phrase_embeds: torch.Tensor, present: torch.Tensor
) -> JointConditioning:
    """The base prompt's conditioning with each object's phrase tokens appended: (B, L + N * Lr, D).

    ``phrase_embeds`` (B, N, Lr, D), zeros where ``present`` (B, N) is 0. Text RoPE ids are all zero in FLUX, so the
    appended tokens get zero ids too. The pooled embedding stays the base prompt's.
    """
    batch, num_objects, region_length, dim = phrase_embeds.shape
    regions = (phrase_embeds * present[:, :, None, None].to(phrase_embeds)).reshape(batch, -1, dim)
    embeds = torch.cat([conditioning.embeds, regions.to(conditioning.embeds)], dim=1)
    text_ids = conditioning.text_ids.new_zeros(embeds.shape[1], conditioning.text_ids.shape[-1])
    return replace(conditioning, embeds=embeds, text_ids=text_ids)


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

    @property
    def text_length(self) -> int:
        return self.base_length + self.inside.shape[1] * self.region_length

    @property
    def mask(self) -> torch.Tensor:
        """(B, 1, S, S) bool attention mask, built once per call."""
        if self._mask is None:
            self._mask = regional_attention_mask(self.inside, self.present, self.base_length, self.region_length)
        return self._mask

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


class RegionalAttentionProcessor:
    """A FLUX block's own processor, on the base prompt alone or with the regional mask, blended per image token."""

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
        regional = self.regional
        base_length, text_length = regional.base_length, regional.text_length
        weight = regional.token_weights(self.name)  # (B, h*w, 1) | None
        needs_base = weight is None or bool(((weight > 0) & (weight < 1)).any())
        base = self._base(attn, hidden_states, encoder_hidden_states, image_rotary_emb) if needs_base else None
        if weight is None:  # the unguided block; the objects' tokens get no attention output
            return self._with_region_rows(base, hidden_states, encoder_hidden_states)
        masked = self.original(attn, hidden_states, encoder_hidden_states, regional.mask, image_rotary_emb)
        if self.layout == TEXT_FIRST:
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
        rotary = None
        if image_rotary_emb is not None:  # RoPE rows follow the joint sequence [text, image]
            rotary = tuple(torch.cat([r[:base_length], r[text_length:]]) for r in image_rotary_emb)
        if self.layout == SINGLE_STREAM:  # one sequence [text, image]
            sequence = torch.cat([hidden_states[:, :base_length], hidden_states[:, text_length:]], dim=1)
            return self.original(attn, sequence, None, None, rotary)
        return self.original(attn, hidden_states, encoder_hidden_states[:, :base_length].contiguous(), None, rotary)

    def _with_region_rows(self, base, hidden_states, encoder_hidden_states):
        """The base output with zero rows where the objects' tokens are, so the sequence keeps its length."""
        base_length, text_length = self.regional.base_length, self.regional.text_length
        if self.layout == TEXT_FIRST:
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
    """Install :class:`RegionalAttentionProcessor` on every joint-attention block of a FLUX transformer; restore after.

    Every block needs it, regional or not: each must drop the objects' tokens from the base prompt's attention.
    """
    original = transformer.attn_processors  # {"<module>.processor": processor}
    modules = dict(transformer.named_modules())
    wrapped = dict(original)
    for name in joint_attention_layers(transformer):
        layout = joint_layout(name, modules[name])
        if layout not in (TEXT_FIRST, SINGLE_STREAM):
            raise ValueError(f"regional attention runs on FLUX's joint attention; {name} is {layout}")
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
    "regional_attention",
    "regional_attention_mask",
    "regional_conditioning",
    "regional_layers",
]
