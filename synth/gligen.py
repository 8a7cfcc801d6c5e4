"""GLIGEN grounding tokens for the one denoising loop (Li et al., GLIGEN, CVPR 2023).

A GLIGEN UNet (``attention_type="gated"``) has a ``position_net`` that turns each object's phrase
embedding and Fourier-embedded box into a grounding token, and in every transformer block a gated
self-attention layer (``GatedSelfAttentionDense``, the "fuser") that lets the visual tokens attend
to those grounding tokens. :func:`grounding_kwargs` builds the UNet's ``cross_attention_kwargs["gligen"]``
exactly as diffusers' ``StableDiffusionGLIGENPipeline.__call__`` (step 5.1) does, but per layout, so a
batch may mix layouts; :func:`fuser_enabled` switches the gated layers for scheduled sampling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from scenewright.errors import InputError
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS, Layout

#: A GLIGEN checkpoint in diffusers format (text + box grounding on SD1.4) users can load instead.
GLIGEN_CHECKPOINT = "masterful/gligen-1-4-generation-text-box"


class GligenError(ValueError):
    """GLIGEN was asked of weights or inputs that cannot do it; the message says what to do instead."""


def is_gligen_unet(unet) -> bool:
    """True for a UNet with GLIGEN's gated self-attention layers and position net."""
    return getattr(unet, "position_net", None) is not None


def check_gligen_unet(unet) -> None:
    """Raise :class:`GligenError` unless ``unet`` has GLIGEN's ``position_net`` (gated layers)."""
    if not is_gligen_unet(unet) and getattr(unet.config, "addition_embed_type", None) == "text_time":
        raise GligenError(
            "this SDXL UNet has no gated layers, and no GLIGEN weights exist for SDXL: drop gligen=True / the "
            "attention_refocusing preset and guide with car,sar (its CAR + SAR losses) or layout_guidance instead"
        )
    if not is_gligen_unet(unet):
        raise GligenError(
            "GLIGEN needs a UNet with gated self-attention layers (a `position_net`), and these weights have none; "
            f"load a GLIGEN checkpoint such as {GLIGEN_CHECKPOINT!r} "
            "(Synthesizer.from_pretrained(..., gligen=True)), or run plain Stable Diffusion with gligen=False"
        )


def gated_layers(unet) -> list[torch.nn.Module]:
    """The UNet's ``GatedSelfAttentionDense`` modules (the fusers), in module order."""
    from diffusers.models.attention import GatedSelfAttentionDense

    return [m for m in unet.modules() if type(m) is GatedSelfAttentionDense]


@contextmanager
def fuser_enabled(unet) -> Iterator[callable]:
    """Yield ``set(enabled)`` switching every gated layer (diffusers' ``enable_fuser``); restore on exit."""
    layers = gated_layers(unet)
    before = [layer.enabled for layer in layers]

    def set_enabled(enabled: bool) -> None:
        for layer in layers:
            layer.enabled = enabled

    try:
        yield set_enabled
    finally:
        for layer, state in zip(layers, before):
            layer.enabled = state


def num_grounding_steps(beta: float, num_steps: int) -> int:
    """Steps with the gated layers on: ``int(beta * T)``, as diffusers' scheduled sampling."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= float(beta) <= 1.0:
        raise InputError(
            f"`gligen_scheduled_sampling_beta` must be a number in [0, 1] (share of steps with grounding on; "
            f"GLIGEN uses 0.3), got {beta!r}"
        )
    return int(beta * num_steps)


def check_object_count(layouts: Sequence[Layout | None]) -> None:
    """More objects than the position net's 30 slots is an error (diffusers silently drops the rest)."""
    for k, layout in enumerate(layouts):
        if layout is not None and len(layout.objects) > GLIGEN_MAX_OBJECTS:
            raise GligenError(
                f"layout {k} has {len(layout.objects)} objects but GLIGEN takes at most {GLIGEN_MAX_OBJECTS} "
                "grounding tokens; merge or drop objects, or run plain Stable Diffusion (gligen=False) with a "
                "box method such as car/sar"
            )


@torch.no_grad()
def phrase_embeddings(tokenizer, text_encoder, phrases: list[str], device: torch.device) -> torch.Tensor:
    """(N, D) pooled text-encoder outputs of ``phrases``, tokenized together as diffusers' GLIGEN pipeline.

    The shapes model's GLIGEN training (:mod:`scenewright.synth.shapes.train`) embeds its phrases here too.
    """
    inputs = tokenizer(phrases, padding=True, return_tensors="pt").to(device)
    return text_encoder(**inputs).pooler_output


def grounding_kwargs(
    pipe, layouts: Sequence[Layout | None], do_cfg: bool, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``cross_attention_kwargs["gligen"]`` for the CFG batch ``[uncond, cond]`` and for the cond half alone.

    One entry per image (``layouts`` already repeated per image). Slots past an image's objects, and
    every slot of the unconditional half, have mask 0: the position net puts its learnt null tokens there.
    """
    check_object_count(layouts)
    dim = pipe.unet.config.cross_attention_dim
    dtype = pipe.text_encoder.dtype
    batch = len(layouts)
    boxes = torch.zeros(batch, GLIGEN_MAX_OBJECTS, 4, device=device, dtype=dtype)
    embeddings = torch.zeros(batch, GLIGEN_MAX_OBJECTS, dim, device=device, dtype=dtype)
    masks = torch.zeros(batch, GLIGEN_MAX_OBJECTS, device=device, dtype=dtype)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for b, layout in enumerate(layouts):
        if layout is None or not layout.objects:
            continue  # a bare prompt: every slot is a null token
        if id(layout) not in cache:
            phrases, xyxy = layout.to_gligen()
            cache[id(layout)] = (phrase_embeddings(pipe.tokenizer, pipe.text_encoder, phrases, device), torch.tensor(xyxy))
        phrase_embeds, xyxy = cache[id(layout)]
        n = len(xyxy)
        boxes[b, :n] = xyxy.to(device=device, dtype=dtype)
        embeddings[b, :n] = phrase_embeds.to(dtype)
        masks[b, :n] = 1
    cond = {"boxes": boxes, "positive_embeddings": embeddings, "masks": masks}
    if not do_cfg:
        return cond, cond
    full = {key: torch.cat([value] * 2) for key, value in cond.items()}
    full["masks"][:batch] = 0  # the unconditional branch sees null tokens only
    return full, cond


__all__ = [
    "GLIGEN_CHECKPOINT",
    "GligenError",
    "check_gligen_unet",
    "fuser_enabled",
    "gated_layers",
    "grounding_kwargs",
    "is_gligen_unet",
    "num_grounding_steps",
    "phrase_embeddings",
]
