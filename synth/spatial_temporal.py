"""Box-confined spatial-temporal attention control (Wu et al. 2023, "Harnessing the Spatial-Temporal
Attention of Diffusion Models for High-Fidelity Text-to-Image Synthesis").

In every cross-attention layer the conditional branch's output becomes the global prompt's attention
output blended, inside each object's region (its box as a soft-edged mask at the layer's grid), with
the attention output of that object's local description (its phrase), with weight ``w_i(t)`` per
object and denoising step::

    out = (A(q, K_g, V_g) + sum_i a_i * A(q, K_i, V_i)) / (1 + sum_i a_i),    a_i = w_i(t) * M_i

The division is our choice, not a plain sum: it keeps the layer's output on the scale of one attention
output (a convex combination),
so that a large weight makes a box's pixels follow its local description rather than grow; with every
``w_i(t) = 0`` it is the plain layer exactly. :class:`SpatialTemporalBlend` is both the loop's step
controller (it learns the step, and tunes the step's weights on CLIP) and the
:class:`scenewright.synth.attention.CrossAttentionBlend` that THE capture processor
(:class:`scenewright.synth.attention.CaptureProcessor`) calls in cross layers, so guidance losses and this
control compose in one set of processors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from scenewright.errors import InputError

from .backbones import Conditioning
from .controllers import StepController


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


class ClipScore:
    """An open_clip model as Wu et al.'s objective: 1 - cos(image, prompt) + mean_i (1 - cos(crop_i, phrase_i))."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation, open_clip's default
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model, tokenizer=None):
        import open_clip

        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer or open_clip.get_tokenizer("ViT-B-32")  # CLIP's BPE, shipped with open_clip
        size = model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    def _encode_images(self, images: torch.Tensor) -> torch.Tensor:  # (K, 3, H, W) in [0, 1]
        x = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.MEAN, device=x.device)[:, None, None]
        std = torch.tensor(self.STD, device=x.device)[:, None, None]
        return F.normalize(self.model.encode_image((x - mean) / std).float(), dim=-1)

    def _encode_texts(self, texts: list[str], device) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.model.encode_text(self.tokenizer(texts).to(device)).float(), dim=-1)

    def loss(self, image: torch.Tensor, prompt: str, phrases: list[str], boxes: torch.Tensor) -> torch.Tensor:
        """0-dim fp32 loss of one image (3, H, W) in [0, 1]; box crops are resized to CLIP's input."""
        device = image.device
        whole = 1 - (self._encode_images(image[None]) @ self._encode_texts([prompt], device).T).squeeze()
        if not phrases:
            return whole
        _, h, w = image.shape
        crops = []
        for x0, y0, x1, y1 in boxes.tolist():
            top, left = min(int(y0 * h), h - 1), min(int(x0 * w), w - 1)
            crops.append(image[None, :, top : max(top + 1, round(y1 * h)), left : max(left + 1, round(x1 * w))])
        crops = torch.cat([F.interpolate(c, size=self.image_size, mode="bilinear", align_corners=False) for c in crops])
        local = 1 - (self._encode_images(crops) * self._encode_texts(phrases, device)).sum(dim=-1)
        return whole + local.mean()


@dataclass
class SpatialTemporalControl:
    """User-facing options: ``weights`` (T, B, N) or None for :func:`fixed_schedule` with ``local_weight``.

    With ``clip`` (a :class:`ClipScore`), each of the first ``optimize_steps`` denoising steps first
    tunes that step's weights for ``epochs`` Adam updates of ``lr`` on the CLIP loss of the image
    decoded from the predicted clean latent, the UNet and VAE under gradient checkpointing
    (Wu et al. 2023 optimize the weights against CLIP; the per-step x0 prediction keeps the cost of an
    epoch at one UNet + VAE forward/backward instead of the whole trajectory).
    """

    local_weight: float = 1.0
    weights: torch.Tensor | None = None
    softness: float = 1.0  # mask edge width, in cells of each layer's grid
    clip: ClipScore | None = None
    epochs: int = 3
    lr: float = 0.1
    optimize_steps: int | None = None  # None: every step
    #: FLUX.1 and SD3 (regional attention, :mod:`scenewright.synth.regional_attention`): the share of the steps,
    #: and of the joint-attention blocks in execution order, that are regional; the rest run the unguided blocks.
    #: There the weights are a blend in [0, 1], constant ``local_weight`` unless ``weights`` are given.
    regional_steps: float = 1.0
    regional_blocks: float = 1.0

    def checked_weights(self, num_steps: int, batch: int, num_objects: int) -> torch.Tensor:
        """The given ``weights`` as an fp32 (T, B, N) tensor; a wrong shape is an error naming the expected one."""
        weights = torch.as_tensor(self.weights, dtype=torch.float32)
        if tuple(weights.shape) != (num_steps, batch, num_objects):
            raise InputError(
                f"`SpatialTemporalControl.weights` has shape {tuple(weights.shape)}, expected (steps, images, "
                f"objects) = {(num_steps, batch, num_objects)}"
            )
        return weights.clone()  # the caller zeroes absent objects and ended steps in place

    def __post_init__(self):
        if not isinstance(self.local_weight, (int, float)) or not self.local_weight >= 0:
            raise InputError(f"`local_weight` must be a number >= 0, got {self.local_weight!r}")
        for name in ("regional_steps", "regional_blocks"):
            share = getattr(self, name)
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
                raise InputError(f"`{name}` is a share in [0, 1], got {share!r}")
        if not isinstance(self.softness, (int, float)) or not self.softness > 0:
            raise InputError(f"`softness` must be a number > 0 (cells), got {self.softness!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 1 <= self.epochs <= 100:
            raise InputError(f"`epochs` must be an int in [1, 100] (CLIP updates per step), got {self.epochs!r}")


@dataclass
class ClipTuning:
    """What tuning a step's weights on CLIP needs besides the blend: the model and the images' conditioning."""

    synthesizer: Any  # synth.pipeline.Synthesizer: its UNet, VAE and scheduler
    conditioning: Conditioning  # the global prompts' conditioning (its conditional rows are read)
    prompts: list[str]  # per image
    layouts: list  # per image: layout.Layout | None
    cross_attention_kwargs: dict | None  # GLIGEN: the conditional half's grounding tokens


@dataclass
class SpatialTemporalBlend(StepController):
    """Spatial-temporal control during one ``generate`` call: per-step weights, and the cross-layer blend."""

    local_embeds: torch.Tensor  # (B, N, 77, D) text embeddings of each object's phrase (zeros where absent)
    boxes: torch.Tensor  # (B, N, 4) normalized xyxy
    weights: torch.Tensor  # (T, B, N); 0 for absent objects
    latent_hw: tuple[int, int]
    softness: float = 1.0
    present: torch.Tensor | None = None  # (B, N) 1 where image b has object n
    control: SpatialTemporalControl | None = None
    clip_tuning: ClipTuning | None = None  # with `control.clip`: tune each step's weights first
    step: int = 0  # the step being denoised (before_step)
    step_weights: torch.Tensor | None = None  # (B, N) leaf being optimized at this step; overrides `weights`
    history: dict = field(default_factory=dict)  # step -> CLIP loss per epoch (before each update)
    _masks: dict = field(default_factory=dict)

    def before_step(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Blend with step ``i``'s weights; with a CLIP objective, tune them first (Wu et al. 2023)."""
        self.step = i
        control = self.control
        tunes = control is not None and control.clip is not None and self.clip_tuning is not None
        if tunes and (control.optimize_steps is None or i < control.optimize_steps):
            optimize_step_weights(self, latents, t, self.clip_tuning)
        return latents

    def masks(self, size: tuple[int, int]) -> torch.Tensor:
        """(B, N, h*w) soft masks at one grid, cached."""
        if size not in self._masks:
            flat = soft_box_masks(self.boxes.flatten(0, 1), size, self.softness)
            self._masks[size] = flat.view(*self.boxes.shape[:2], -1)
        return self._masks[size]

    def blend(self, attn, query: torch.Tensor, global_out: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """``global_out`` (rows, heads, Q, d) with the last B rows (the conditional ones) blended; see module doc."""
        weights = self.weights[self.step] if self.step_weights is None else self.step_weights  # (B, N)
        if size is None or (not weights.requires_grad and not bool((weights != 0).any())):
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


def optimize_step_weights(
    blend: SpatialTemporalBlend, latents: torch.Tensor, t: torch.Tensor, tuning: ClipTuning
) -> None:
    """Tune ``blend.weights[step]`` on ``control.clip``'s loss of the decoded x0 prediction (Wu et al. 2023)."""
    syn, control = tuning.synthesizer, blend.control
    pipe, step = syn.pipe, blend.step
    present = blend.present.to(blend.weights.device)
    param = blend.weights[step].clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=control.lr)
    alpha = syn.scheduler.alphas_cumprod.to(latents.device)[int(t)].float()
    model_input = syn.scheduler.scale_model_input(latents, t).detach()

    def denoise(weights: torch.Tensor) -> torch.Tensor:
        blend.step_weights = weights
        return syn.unet(
            model_input, t, **tuning.conditioning.unet_kwargs(cond_only=True),
            cross_attention_kwargs=tuning.cross_attention_kwargs, return_dict=False,
        )[0]  # fmt: skip

    def decode(z: torch.Tensor) -> torch.Tensor:
        return pipe.vae.decode(z / pipe.vae.config.scaling_factor, return_dict=False)[0]

    losses = []
    try:
        with torch.enable_grad():
            for _ in range(control.epochs):
                eps = checkpoint(denoise, param * present, use_reentrant=False).float()
                x0 = (latents.float() - (1 - alpha).sqrt() * eps) / alpha.sqrt()  # predicted clean latent
                images = checkpoint(decode, x0.to(pipe.vae.dtype), use_reentrant=False).float()
                images = (images / 2 + 0.5).clamp(0, 1)
                per_image = []
                for b, (image, prompt, lay) in enumerate(zip(images, tuning.prompts, tuning.layouts)):
                    n = len(lay.objects) if lay is not None else 0
                    phrases = lay.phrases if lay is not None else []
                    per_image.append(control.clip.loss(image, prompt, phrases, blend.boxes[b, :n]))
                loss = torch.stack(per_image).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    param.clamp_(min=0.0)  # a weight is a share of the local description: never negative
                losses.append(loss.item())
    finally:
        blend.step_weights = None
    blend.weights[step] = (param.detach() * present).to(blend.weights.dtype)
    blend.history[step] = losses


__all__ = [
    "ClipScore",
    "ClipTuning",
    "SpatialTemporalBlend",
    "SpatialTemporalControl",
    "fixed_schedule",
    "optimize_step_weights",
    "soft_box_masks",
]
