"""Train the embedded shapes-world Stable Diffusion model and export it as a diffusers checkpoint folder.

Two stages, both seeded and resumable from ``<run-dir>/``:

1. ``--stage vae``: a tiny :class:`~diffusers.AutoencoderKL` (64x64x3 -> 16x16x4, x4 downsampling)
   on rendered scenes, L1 + MSE + a small KL term (the SD VAE recipe without its GAN/LPIPS terms:
   flat shapes need no perceptual loss). Its latent std sets ``scaling_factor``.
2. ``--stage unet``: a small :class:`~diffusers.UNet2DConditionModel` (cross-attention at 16x16 and
   8x8) and a small :class:`~transformers.CLIPTextModel` trained jointly, frozen VAE, epsilon
   prediction with Min-SNR-5 weighting (Hang et al. 2023), 10% caption dropout for classifier-free
   guidance, an easy-to-hard curriculum (1 large object -> 1-2 -> 1-4) and an auxiliary loss that
   puts each caption word's 16x16 cross-attention inside its objects' boxes (``--aux-target``; masks
   until step 18000), the layout-guidance energy of Chen et al. 2023 used here as a training loss, read
   through :mod:`scenewright.synth.attention`.

``--export DIR`` writes ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``
and ``scheduler/`` in fp16 safetensors (EMA weights), loadable with
``diffusers.StableDiffusionPipeline.from_pretrained(DIR)``. See synth/shapes/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scenewright.durable import write_atomic
from scenewright.eval.verify import verify
from scenewright.layout.plan import plan_for_layout
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS
from scenewright.synth.attention import attention_capture
from scenewright.synth.gligen import phrase_embeddings
from scenewright.synth.loading import GUIDANCE_DEFAULTS_FILE, ModelDefaults
from scenewright.synth.maps import MapRequest, box_cell_masks
from scenewright.synth.shapes.detector import ShapesDetector, background_clean, detect, kind_counts
from scenewright.synth.shapes.world import CANVAS, COLORS, SHAPES, SIZE_RANGE, SIZES, Scene, sample_scene
from scenewright.synth.tokenizer import build_clip_tokenizer

LATENT_SIZE = 16  # 64 px / 4
LATENT_GAP = 1 / LATENT_SIZE  # one latent cell, as a fraction of the canvas
MAX_OBJECTS = 4
TOKENS = 77
VAE_DIR = "vae"
CKPT = "ckpt.pt"
LOG = "log.jsonl"
TRAINING_INFO = "training_state.json"
UNET_CURRICULUM = "0:0=1;1000:0=0.3,1=0.7;3000:0=0.1,1=0.3,2=0.6"  # 1 large object -> 1-2 -> 1-4
GLIGEN_CURRICULUM = "0:0=0.1,1=0.3,2=0.6"  # written into an exported folder: the step it was exported at
#: What an export declares in scenewright.json. The auxiliary loss shapes the cross-attention at the latent's own
#: grid, so guidance reads that one; above ~2, classifier-free guidance shifts colors and noises the canvas;
#: the world draws objects 12-28 px on its 64 px canvas ("small" 12-16, "large" 21-28), so planned boxes are
#: fitted to those sides (a box of the object's size word aims at the middle of the word's range), a latent
#: cell (4 px) apart so that neighbours drawn at those sizes do not touch and merge; LMD's composition keeps
#: the objects' own latents for 70% of the steps, as the caption's later steps re-form multi-object scenes.
SHAPES_MODEL_DEFAULTS = ModelDefaults(
    attention_downscale=1,
    guidance_scale=2.0,
    object_sides=(SIZE_RANGE["small"][0] / CANVAS, SIZE_RANGE["large"][1] / CANVAS),
    size_sides={word: (low / CANVAS, high / CANVAS) for word, (low, high) in SIZE_RANGE.items()},
    object_gap=LATENT_GAP,
    composition_steps=0.7,
)


# ----------------------------------------------------------------- models
def vae_config() -> dict:
    """64x64x3 <-> 16x16x4: three encoder levels (two stride-2 downsamples), no mid attention (speed)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),  # 16 channels at 64x64 keep a step ~3x cheaper than 32 on one core
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=CANVAS,
        mid_block_add_attention=False,
    )


def unet_config(text_dim: int) -> dict:
    """Cross-attention at 16x16 (the maps attention control reads) and 8x8; plain resnets at 4x4 + mid attention.

    The blocks carry no positional encoding; absolute position ("top left") is learnt from the
    zero-padded convolution borders, which every 4x4 bottleneck position sees (receptive field
    covers the whole latent). diffusers' UNet has no spatial positional-embedding option.
    """
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        cross_attention_dim=text_dim,
        attention_head_dim=4,  # diffusers' legacy name: this is the number of heads
        norm_num_groups=16,
    )


def text_config(hidden: int = 64) -> dict:
    """A 4-layer CLIP text transformer over CLIP's real 49408-token BPE vocabulary."""
    return dict(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=TOKENS,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=hidden,
    )


def scheduler_config() -> dict:
    """SD 1.x's noise schedule (scaled-linear betas 0.00085..0.012 over 1000 steps)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def load_tokenizer():
    return build_clip_tokenizer()


# ------------------------------------------------------------------- data
def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1], the VAE's input range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def bank_scenes(seed: int, count: int, level: int) -> list[Scene]:
    """The ``count`` scenes of one curriculum level's bank (deterministic in ``seed`` and ``level``)."""
    rng = np.random.default_rng([seed, level])
    return [sample_scene(rng, max_objects=MAX_OBJECTS, curriculum_level=level) for _ in range(count)]


def render_bank(seed: int, count: int, level: int) -> tuple[list[Scene], np.ndarray]:
    """``count`` scenes of one curriculum level and their (N, 64, 64, 3) uint8 renders."""
    scenes = bank_scenes(seed, count, level)
    return scenes, np.stack([s.render() for s in scenes])


def word_token_spans(tokenizer, words: list[str]) -> list[list[int]]:
    """Token positions (after BOS) of each whitespace word, without trailing punctuation ('circle,' -> 'circle').

    CLIP's pre-tokenizer splits on whitespace and punctuation, so word-by-word token counts add up
    to the caption's tokenization.
    """
    spans, position = [], 1
    for word in words:
        total = len(tokenizer(word, add_special_tokens=False).input_ids)
        core = len(tokenizer(word.rstrip(",.;"), add_special_tokens=False).input_ids)
        spans.append([p for p in range(position, position + core) if p < TOKENS - 1])
        position += total
    return spans


def token_object_matrix(tokenizer, scene: Scene) -> np.ndarray:
    """(77, MAX_OBJECTS) bool: token t refers to object k (its count, size, color or shape word)."""
    matrix = np.zeros((TOKENS, MAX_OBJECTS), dtype=bool)
    words = scene.caption.text.split()
    for span, refs in zip(word_token_spans(tokenizer, words), scene.caption.word_objects):
        for k in refs:
            matrix[span, k] = True
    return matrix


def object_masks_latent(scene: Scene) -> np.ndarray:
    """(MAX_OBJECTS, 16*16) float: each object's mask as area fraction per latent cell (zeros for absent slots)."""
    out = np.zeros((MAX_OBJECTS, LATENT_SIZE * LATENT_SIZE), dtype=np.float32)
    cell = CANVAS // LATENT_SIZE
    for k, obj in enumerate(scene.objects):
        pooled = obj.mask.reshape(LATENT_SIZE, cell, LATENT_SIZE, cell).mean(axis=(1, 3))
        out[k] = pooled.reshape(-1)
    return out


def object_boxes_latent(scene: Scene) -> np.ndarray:
    """(MAX_OBJECTS, 16*16) float: 1 on the latent cells inside each object's box (zeros for absent slots)."""
    out = np.zeros((MAX_OBJECTS, LATENT_SIZE * LATENT_SIZE), dtype=np.float32)
    if scene.objects:
        boxes = torch.tensor([o.box for o in scene.objects], dtype=torch.float32)
        out[: len(scene.objects)] = box_cell_masks(boxes, LATENT_SIZE, LATENT_SIZE).flatten(1).numpy()
    return out


@dataclass
class Bank:
    """Pre-encoded training data of one curriculum level."""

    latents: torch.Tensor  # (N, 4, 16, 16), already times the VAE scaling factor
    input_ids: torch.Tensor  # (N, 77) long
    token_objects: torch.Tensor  # (N, 77, MAX_OBJECTS) bool
    object_masks: torch.Tensor  # (N, MAX_OBJECTS, 256) float
    captions: list[str]
    object_boxes: torch.Tensor | None = None  # (N, MAX_OBJECTS, 256) float; None in banks built before it existed


@torch.no_grad()
def build_bank(vae, tokenizer, seed: int, count: int, level: int, batch: int = 256) -> Bank:
    scenes, images = render_bank(seed, count, level)
    latents = []
    for start in range(0, count, batch):
        x = images_to_tensor(images[start : start + batch])
        latents.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    captions = [s.caption.text for s in scenes]
    ids = tokenizer(captions, padding="max_length", max_length=TOKENS, truncation=True, return_tensors="pt").input_ids
    return Bank(
        latents=torch.cat(latents),
        input_ids=ids,
        token_objects=torch.from_numpy(np.stack([token_object_matrix(tokenizer, s) for s in scenes])),
        object_masks=torch.from_numpy(np.stack([object_masks_latent(s) for s in scenes])),
        captions=captions,
        object_boxes=torch.from_numpy(np.stack([object_boxes_latent(s) for s in scenes])),
    )


def load_or_build_bank(run_dir: Path, vae, tokenizer, seed: int, count: int, level: int) -> Bank:
    """Banks are cached in the run dir so that a resumed run trains on the same data."""
    path = run_dir / f"bank_seed{seed}_level{level}_n{count}.pt"
    if path.exists():
        bank = Bank(**torch.load(path, weights_only=True))
        if bank.object_boxes is None:  # an older bank: its scenes are seeded, so their boxes can be added
            scenes = bank_scenes(seed, count, level)
            bank.object_boxes = torch.from_numpy(np.stack([object_boxes_latent(s) for s in scenes]))
            torch.save(bank.__dict__, path)
        return bank
    bank = build_bank(vae, tokenizer, seed, count, level)
    torch.save(bank.__dict__, path)
    return bank


def parse_curriculum(text: str) -> list[tuple[int, dict[int, float]]]:
    """'0:0=1;2000:0=0.3,1=0.7' -> [(start_step, {level: weight})] sorted by start step."""
    phases = []
    for part in text.split(";"):
        try:
            start, mix = part.split(":")
            weights = {int(k): float(v) for k, v in (item.split("=") for item in mix.split(","))}
        except ValueError:
            raise SystemExit(f"--curriculum: cannot read {part!r}; write phases as 'STEP:LEVEL=W,LEVEL=W;...'") from None
        phases.append((int(start), weights))
    phases.sort()
    if phases[0][0] != 0:
        raise SystemExit("--curriculum: the first phase must start at step 0 (e.g. '0:0=1;2000:0=0.3,1=0.7')")
    return phases


def curriculum_weights(phases: list[tuple[int, dict[int, float]]], step: int) -> dict[int, float]:
    current = phases[0][1]
    for start, weights in phases:
        if step >= start:
            current = weights
    return current


# ------------------------------------------------------------- checkpoint
def save_atomic(obj, path: Path) -> None:
    """torch.save durably (:func:`scenewright.durable.write_atomic`), so a kill mid-save never corrupts the checkpoint."""
    write_atomic(path, lambda handle: torch.save(obj, handle))


def rng_state(np_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": random.getstate()}


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])


def log_line(run_dir: Path, record: dict) -> None:
    with open(run_dir / LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


# -------------------------------------------------------------------- VAE
def train_vae(args) -> None:
    from diffusers import AutoencoderKL

    run_dir = Path(args.run_dir)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**vae_config())
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr)
    np_rng = np.random.default_rng(args.seed)
    step = 0
    ckpt_path = run_dir / "vae_ckpt.pt"
    if ckpt_path.exists() and not args.fresh:
        state = torch.load(ckpt_path, weights_only=True)
        vae.load_state_dict(state["vae"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        set_rng_state(state["rng"], np_rng)
        print(f"resumed VAE from {ckpt_path} at step {step}", flush=True)
    started, first_step = time.time(), step
    vae.train()
    while step < args.steps:
        level = int(np_rng.integers(0, 3))
        images = np.stack(
            [sample_scene(np_rng, max_objects=MAX_OBJECTS, curriculum_level=level).render() for _ in range(args.batch)]
        )
        x = images_to_tensor(images)  # (B, 3, 64, 64)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        l1 = (recon - x).abs().mean()
        mse = F.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + mse + args.kl_weight * kl
        # Cosine decay to 5% by --steps: at a constant rate the last step's weights are as noisy as any
        # step's (a 2000-step run ended at 26.5 dB PSNR after 30 dB a few hundred steps before).
        lr = vae_lr(args.lr, step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            log_line(run_dir, {"stage": "vae", "step": step, "l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "lr": lr,
                               "it_s": (step - first_step) / (time.time() - started)})
        if step % args.save_every == 0 or step == args.steps:
            save_atomic({"vae": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "rng": rng_state(np_rng)}, ckpt_path)
    vae.eval()
    set_vae_scaling(vae, args.seed)
    vae.save_pretrained(run_dir / VAE_DIR)
    report = vae_report(vae, args.seed + 1, count=args.eval_count)
    log_line(run_dir, {"stage": "vae", "step": step, "eval": report})


def vae_lr(base: float, step: int, total: int) -> float:
    """Cosine from ``base`` at step 0 to 5% of it at ``total`` (a resumed run with a larger total re-spreads it)."""
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0))))


def unet_lr(base: float, step: int, warmup_from: int, warmup: int, cooldown: tuple[int, int] | None = None) -> float:
    """Warm-up-stable-decay: linear warm-up from ``warmup_from``, constant, then (``cooldown=(start, end)``) a
    linear decay to 2% at ``end`` (Hägele et al. 2024: a short cooldown matches a cosine schedule, and the
    stable phase's checkpoint can go on training, which a cosine fixed to a total cannot).
    """
    lr = base * min(1.0, (step - warmup_from + 1) / max(warmup, 1))
    if cooldown is not None and step >= cooldown[0]:
        start, end = cooldown
        lr *= 1.0 - 0.98 * min(1.0, (step - start) / (end - start))
    return lr


def parse_cooldown(text: str | None) -> tuple[int, int] | None:
    """'12000:13500' -> (12000, 13500); None -> None."""
    if text is None:
        return None
    try:
        start, end = (int(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"--cooldown: cannot read {text!r}; write START:END steps, e.g. 12000:13500") from None
    if not 0 <= start < end:
        raise SystemExit(f"--cooldown {text}: need 0 <= START < END, e.g. 12000:13500")
    return (start, end)


@torch.no_grad()
def set_vae_scaling(vae, seed: int, count: int = 512) -> None:
    """``scaling_factor`` = 1 / std of latent means, so the UNet sees unit-variance latents (SD's convention)."""
    _, images = render_bank(seed, count, 2)
    latents = vae.encode(images_to_tensor(images)).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))


@torch.no_grad()
def vae_report(vae, seed: int, count: int = 200) -> dict:
    """Reconstruction PSNR and the detector's exact-match rate on decoded held-out scenes."""
    scenes, images = render_bank(seed, count, 2)
    x = images_to_tensor(images)
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = F.mse_loss(recon, x, reduction="none").mean(dim=(1, 2, 3))
    psnr = (10 * torch.log10(4.0 / mse)).mean().item()  # signal range 2 -> peak^2 = 4
    decoded = ((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    exact = [kind_counts(detect(img)) == kind_counts(s.objects) for s, img in zip(scenes, decoded)]
    return {"psnr": psnr, "detector_exact": float(np.mean(exact)), "count": count}


def load_vae(run_dir: Path, init_from: str | None = None):
    from diffusers import AutoencoderKL

    path = run_dir / VAE_DIR
    if init_from and not (path / "config.json").exists():
        # The exported UNet learnt on this VAE's latents: a warm start must keep the same VAE.
        AutoencoderKL.from_pretrained(export_folder(init_from) / "vae", torch_dtype=torch.float32).save_pretrained(path)
    if not (path / "config.json").exists():
        raise SystemExit(f"no trained VAE at {path}; run `python -m scenewright.synth.shapes.train --stage vae --run-dir {run_dir}` first")
    vae = AutoencoderKL.from_pretrained(path)
    vae.requires_grad_(False).eval()
    return vae


# ------------------------------------------------------------ UNet + text
def build_models(args):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(args.seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(args.text_dim)))
    unet = UNet2DConditionModel(**unet_config(args.text_dim))
    return unet, text_encoder


def attention_alignment_loss(probs: list[torch.Tensor], token_objects: torch.Tensor, object_regions: torch.Tensor,
                             per_layer: bool = False) -> torch.Tensor:
    """Mean over grounded tokens of (1 - attention mass inside the token's objects)^2 (Chen et al. 2023, Eq. 3).

    probs: per layer (B, heads, 256, 77); token_objects: (B, 77, K) bool; object_regions: (B, K, 256), each
    object's mask or box as a weight per latent cell.
    per_layer: the loss of each layer's head-averaged map, averaged over layers; else the loss of the map
    averaged over layers, which one well-placed layer satisfies while another attends outside its objects.
    """
    target = torch.bmm(token_objects.float(), object_regions).clamp(max=1.0)  # (B, 77, 256)
    grounded = token_objects.any(-1)  # (B, 77)
    layers = [p.mean(dim=1) for p in probs]  # (B, 256, 77) each
    maps = layers if per_layer else [torch.stack(layers).mean(dim=0)]
    if not grounded.any():
        return sum(m.sum() for m in maps) * 0.0
    losses = []
    for attn in maps:  # (B, 256, 77)
        mass = attn.transpose(1, 2)  # (B, 77, 256)
        inside = (mass * target).sum(-1) / mass.sum(-1).clamp_min(1e-8)  # (B, 77)
        losses.append(((1.0 - inside) ** 2)[grounded].mean())
    return torch.stack(losses).mean()


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction: min(SNR, gamma) / SNR (Hang et al. 2023, Eq. 7)."""
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


class EMA:
    """Exponential moving average of parameters (sampled models and the export use these weights)."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module], step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up: early weights are not frozen in
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                shadow = self.shadow[name][key]
                if value.is_floating_point():
                    shadow.lerp_(value, 1 - decay)
                else:
                    shadow.copy_(value)


def make_pipeline(unet, text_encoder, vae, tokenizer):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@torch.no_grad()
def evaluate(pipe, seed: int, count: int, steps: int, guidance: float) -> dict:
    """Unguided generations scored by the exact detector.

    single: one-object captions (level 0/1 scenes with one object) -> color recall, color+shape exact.
    multi: 1-4 object captions -> per-instance color recall, exact (color, shape) multiset, count exact.
    """
    rng = np.random.default_rng([seed, 99])
    results = {}
    for name, level in (("single", 0), ("multi", 2)):
        scenes = [sample_scene(rng, max_objects=MAX_OBJECTS, curriculum_level=level) for _ in range(count)]
        images = pipe(
            [s.caption.text for s in scenes],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images
        images = (images * 255).round().astype(np.uint8)
        recall, exact, count_ok = [], [], []
        for scene, image in zip(scenes, images):
            found = detect(image)
            want_colors = kind_counts(scene.objects)
            got = kind_counts(found)
            want_by_color: dict[str, int] = {}
            got_by_color: dict[str, int] = {}
            for (color, _), n in want_colors.items():
                want_by_color[color] = want_by_color.get(color, 0) + n
            for (color, _), n in got.items():
                got_by_color[color] = got_by_color.get(color, 0) + n
            recall.append(sum(min(n, got_by_color.get(c, 0)) for c, n in want_by_color.items()) / len(scene.objects))
            exact.append(got == want_colors)
            count_ok.append(len(found) == len(scene.objects))
        results[name] = {"color_recall": float(np.mean(recall)), "exact": float(np.mean(exact)),
                         "count_exact": float(np.mean(count_ok))}
    return results


def training_setup(args, run_dir: Path, vae, tokenizer):
    """What both UNet stages train with: DDPM noise schedule, curriculum phases, cooldown, latent banks, "" ids."""
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config().items() if k != "set_alpha_to_one"})
    phases = parse_curriculum(args.curriculum)
    cooldown = parse_cooldown(args.cooldown)
    levels = sorted({level for _, weights in phases for level in weights})
    banks = {level: load_or_build_bank(run_dir, vae, tokenizer, args.seed, args.bank_size, level) for level in levels}
    empty_ids = tokenizer([""], padding="max_length", max_length=TOKENS, return_tensors="pt").input_ids[0]
    return noise_scheduler, phases, cooldown, banks, empty_ids


def sample_rows(np_rng: np.random.Generator, phases, step: int, banks: dict[int, Bank], batch: int):
    """This step's curriculum mix and, per level, the bank rows of a batch drawn from it."""
    weights = curriculum_weights(phases, step)
    level_choice = np_rng.choice(list(weights), size=batch, p=np.array(list(weights.values())) / sum(weights.values()))
    rows = {level: np_rng.integers(0, len(banks[level].captions), size=int((level_choice == level).sum()))
            for level in weights}  # fmt: skip
    return weights, rows


def train_unet(args) -> None:
    run_dir = Path(args.run_dir)
    vae = load_vae(run_dir, args.init_from)
    tokenizer = load_tokenizer()
    ckpt_path = run_dir / CKPT
    state = torch.load(ckpt_path, weights_only=True) if ckpt_path.exists() and not args.fresh else None
    warm = warm_start(args.init_from) if state is None and args.init_from else None
    if warm is not None:
        args.text_dim = warm["text_dim"]  # the exported architecture wins
    if state is not None and state["args"]["text_dim"] != args.text_dim:
        # The architecture must match the checkpoint; the checkpoint's own setting wins, loudly.
        print(f"--text-dim {args.text_dim} ignored: {ckpt_path} was trained with {state['args']['text_dim']}", flush=True)
        args.text_dim = state["args"]["text_dim"]
    unet, text_encoder = build_models(args)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    modules = {"unet": unet, "text_encoder": text_encoder}
    ema = EMA(modules, args.ema_decay)
    np_rng = np.random.default_rng(args.seed)
    step = 0
    warmup_from = 0  # a fresh optimizer warms up again, also when the weights are not fresh
    if warm is not None:
        unet.load_state_dict(warm["unet"])
        text_encoder.load_state_dict(warm["text_encoder"])
        ema = EMA(modules, args.ema_decay)  # the exported (EMA) weights are the new EMA's start
        step = warmup_from = warm["step"]
        np_rng = np.random.default_rng(args.seed + step)  # new draws, not a replay of the first run's
        print(f"warm start from {args.init_from} at step {step} (fresh optimizer)", flush=True)
    if state is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        ema.shadow = state["ema"]
        step = state["step"]
        warmup_from = state.get("warmup_from", 0)
        set_rng_state(state["rng"], np_rng)
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    if args.export and step >= args.steps:
        export(args.export, ema, unet, text_encoder, vae, tokenizer, step)
        return

    noise_scheduler, phases, cooldown, banks, empty_ids = training_setup(args, run_dir, vae, tokenizer)
    # The aux loss reads the 16x16 cross-attention maps, the maps attention control guides.
    request = MapRequest(kind="cross", resolutions=((LATENT_SIZE, LATENT_SIZE),))
    aux_regions = "object_boxes" if args.aux_target == "box" else "object_masks"  # the Bank field the loss aims at
    unet.train()
    text_encoder.train()
    window_start, window_steps = time.time(), 0
    with attention_capture(unet, [request], early_exit=False) as capture:
        while step < args.steps:
            weights, rows = sample_rows(np_rng, phases, step, banks, args.batch)
            latents = torch.cat([banks[lv].latents[idx] for lv, idx in rows.items()])
            input_ids = torch.cat([banks[lv].input_ids[idx] for lv, idx in rows.items()])
            token_objects = torch.cat([banks[lv].token_objects[idx] for lv, idx in rows.items()])
            object_regions = torch.cat([getattr(banks[lv], aux_regions)[idx] for lv, idx in rows.items()])
            # Caption dropout for classifier-free guidance; a dropped caption grounds no token.
            dropped = torch.from_numpy(np_rng.random(args.batch) < args.caption_dropout)
            input_ids = torch.where(dropped[:, None], empty_ids[None], input_ids)
            token_objects = token_objects & ~dropped[:, None, None]

            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch,))
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            text = text_encoder(input_ids)[0]  # (B, 77, D)
            out: dict[str, torch.Tensor] = {}

            def run_unet():
                out["eps"] = unet(noisy, timesteps, encoder_hidden_states=text).sample

            capture.guidance_forward(run_unet, (LATENT_SIZE, LATENT_SIZE))
            per_sample = F.mse_loss(out["eps"], noise, reduction="none").mean(dim=(1, 2, 3))
            mse = (per_sample * min_snr_weights(noise_scheduler, timesteps, args.snr_gamma)).mean()
            probs = [layer.probs for layer in capture.layers.values()]
            aux = attention_alignment_loss(probs, token_objects, object_regions, per_layer=args.aux_maps == "each")
            loss = mse + args.aux_weight * aux
            capture.clear()

            lr = unet_lr(args.lr, step, warmup_from, args.warmup, cooldown)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            ema.update(modules, step)
            window_steps += 1

            if step % args.log_every == 0:
                elapsed = time.time() - window_start
                log_line(run_dir, {"stage": "unet", "step": step, "loss": loss.item(), "mse": mse.item(), "aux": aux.item(),
                                   "lr": lr, "levels": {str(k): v for k, v in weights.items()},
                                   "it_s": window_steps / elapsed, "time": time.time()})
                window_start, window_steps = time.time(), 0
            if step % args.save_every == 0 or step == args.steps:
                save_atomic({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                             "optimizer": optimizer.state_dict(), "ema": ema.shadow, "step": step,
                             "rng": rng_state(np_rng), "args": vars(args), "warmup_from": warmup_from}, ckpt_path)
            if args.eval_every and (step % args.eval_every == 0 or step == args.steps):
                log_line(run_dir, {"stage": "unet", "step": step, "eval": run_eval(args, ema, vae, tokenizer)})
                window_start, window_steps = time.time(), 0
    if args.export:
        export(args.export, ema, unet, text_encoder, vae, tokenizer, step)


def ema_models(args, ema: EMA, gligen: bool = False):
    """Fresh UNet (``gligen``: with grounding layers) and text encoder holding the EMA weights."""
    unet, text_encoder = build_models(args)
    unet = gligen_unet(unet) if gligen else unet
    unet.load_state_dict(ema.shadow["unet"])
    text_encoder.load_state_dict(ema.shadow["text_encoder"])
    return unet.eval(), text_encoder.eval()


def run_eval(args, ema: EMA, vae, tokenizer) -> dict:
    unet, text_encoder = ema_models(args, ema)
    pipe = make_pipeline(unet, text_encoder, vae, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return evaluate(pipe, args.seed, args.eval_count, args.eval_steps, args.eval_guidance)


def export_folder(folder: str) -> Path:
    """``folder`` as a Path, or exit saying it is not what ``--export`` writes."""
    path = Path(folder)
    if not (path / "model_index.json").is_file():
        raise SystemExit(f"--init-from {folder}: not an exported SD folder (no model_index.json)")
    return path


def warm_start(folder: str) -> dict:
    """UNet and text-encoder weights (fp32) and the step count of an exported folder, to train on from it.

    The optimizer state is not exported (it would triple the folder), so training continues with a fresh
    optimizer; this is how a run resumes in a later session from the committed model alone.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    path = export_folder(folder)
    unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=torch.float32)
    info_path = path / TRAINING_INFO
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    return {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "step": int(info.get("step", 0)),
            "text_dim": text_encoder.config.hidden_size}


def export(out_dir: str, ema: EMA, unet, text_encoder, vae, tokenizer, step: int, gligen_step: int | None = None) -> None:
    """fp16 safetensors SD folder with the EMA weights, plus the step counts (for ``--init-from``)."""
    unet.load_state_dict(ema.shadow["unet"])
    text_encoder.load_state_dict(ema.shadow["text_encoder"])
    pipe = make_pipeline(unet.eval(), text_encoder.eval(), vae, tokenizer)
    pipe.to(torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    # transformers loads a model in the dtype its config names while diffusers loads fp32 unless told:
    # naming float32 here makes a plain `from_pretrained(DIR)` give one dtype for all components
    # (fp32, CPU-safe) and `torch_dtype=torch.float16` still gives fp16 everywhere.
    config_path = Path(out_dir) / "text_encoder" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    info = {"step": step, "trained_with": "python -m scenewright.synth.shapes.train (see synth/shapes/MODEL_CARD.md)"}
    if gligen_step is not None:
        info["gligen_step"] = gligen_step  # steps of --stage gligen on top of the base model's `step`
    (Path(out_dir) / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    defaults = {
        **asdict(SHAPES_MODEL_DEFAULTS),
        "_why": f"cross-attention trained to follow object masks at the latent's own {LATENT_SIZE}x{LATENT_SIZE} "
        "(not SD's latent / 4); CFG above ~2 shifts colors (blue to purple, orange to yellow) and noises the canvas; "
        "the world's objects are 12-28 px of 64 ('small' 12-16, 'large' 21-28), so planned boxes are fitted to "
        "the middle of their size word's range, a latent cell apart; "
        "composition keeps the objects' latents for 70% of the steps (the caption re-forms multi-object scenes)",
    }
    (Path(out_dir) / GUIDANCE_DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    print(f"exported to {out_dir} ({size / 2**20:.1f} MiB)", flush=True)


# ------------------------------------------------------------------ GLIGEN
GLIGEN_CKPT = "gligen_ckpt.pt"


def gligen_unet(base):
    """``base`` plus GLIGEN's gated self-attention layers and position net (Li et al. 2023), its weights kept.

    The new layers start with their gates at 0 (``tanh(alpha) = 0``), so the UNet begins as ``base`` exactly.
    """
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(base.config, attention_type="gated")
    missing, unexpected = unet.load_state_dict(base.state_dict(), strict=False)
    foreign = [k for k in missing if not is_grounding_parameter(k)] + list(unexpected)
    if foreign:
        raise RuntimeError(f"the base UNet does not fit a gated copy of its own config: {foreign[:5]}")
    return unet


def is_grounding_parameter(name: str) -> bool:
    """GLIGEN's new parameters: the fusers (gated self-attention) and the position net."""
    return ".fuser." in name or name.startswith("position_net.")


def phrase_vocabulary() -> list[str]:
    """Every object phrase a shapes layout can hold: 'a red circle' and 'a small red circle' (Scene.to_layout)."""
    return [" ".join(["a", *size, color, shape]) for size in ((), *((z,) for z in SIZES)) for color in COLORS
            for shape in SHAPES]  # fmt: skip


@dataclass
class GroundingBank:
    """Each bank scene's object boxes and phrases (same scenes, same order as the latent :class:`Bank`)."""

    boxes: torch.Tensor  # (N, MAX_OBJECTS, 4) normalized xyxy, zeros for absent slots
    phrases: torch.Tensor  # (N, MAX_OBJECTS, 2) long: vocabulary index without / with the size word
    counts: torch.Tensor  # (N,) long: objects in the scene


def load_or_build_grounding_bank(run_dir: Path, seed: int, count: int, level: int) -> GroundingBank:
    path = run_dir / f"grounding_seed{seed}_level{level}_n{count}.pt"
    if path.exists():
        return GroundingBank(**torch.load(path, weights_only=True))
    index = {phrase: i for i, phrase in enumerate(phrase_vocabulary())}
    scenes = bank_scenes(seed, count, level)
    boxes = torch.zeros(count, MAX_OBJECTS, 4)
    phrases = torch.zeros(count, MAX_OBJECTS, 2, dtype=torch.long)
    for n, scene in enumerate(scenes):
        for k, obj in enumerate(scene.objects):
            boxes[n, k] = torch.tensor(obj.box)
            phrases[n, k, 0], phrases[n, k, 1] = index[obj.phrase(False)], index[obj.phrase(True)]
    bank = GroundingBank(boxes, phrases, torch.tensor([len(s.objects) for s in scenes]))
    torch.save(bank.__dict__, path)
    return bank


def grounding_batch(banks: dict[int, GroundingBank], rows: dict[int, np.ndarray], table: torch.Tensor,
                    np_rng: np.random.Generator, dropped: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cross_attention_kwargs["gligen"]`` of a training batch, in :func:`scenewright.synth.gligen.grounding_kwargs`' form.

    The 30 slots as at inference (empty ones hold the learnt null token); a phrase names the size or not at
    random (planners write both); ``dropped`` rows ground nothing (GLIGEN's null-token dropout, and the
    unconditional branch of classifier-free guidance).
    """
    boxes = torch.cat([banks[lv].boxes[idx] for lv, idx in rows.items()])
    ids = torch.cat([banks[lv].phrases[idx] for lv, idx in rows.items()])
    counts = torch.cat([banks[lv].counts[idx] for lv, idx in rows.items()])
    batch = len(counts)
    with_size = torch.from_numpy(np_rng.random((batch, MAX_OBJECTS)) < 0.5).long()
    embeddings = table[ids.gather(2, with_size[..., None]).squeeze(2)]  # (B, MAX_OBJECTS, D)
    masks = (torch.arange(MAX_OBJECTS)[None] < counts[:, None]) & ~dropped[:, None]
    out = {"boxes": torch.zeros(batch, GLIGEN_MAX_OBJECTS, 4),
           "positive_embeddings": torch.zeros(batch, GLIGEN_MAX_OBJECTS, table.shape[1]),
           "masks": torch.zeros(batch, GLIGEN_MAX_OBJECTS)}  # fmt: skip
    out["boxes"][:, :MAX_OBJECTS] = boxes
    out["positive_embeddings"][:, :MAX_OBJECTS] = embeddings
    out["masks"][:, :MAX_OBJECTS] = masks.float()
    return out


def train_gligen(args) -> None:
    """Add GLIGEN's grounding layers to an exported shapes model and train them alone, everything else frozen.

    Frozen as in GLIGEN: without grounding tokens the UNet is the base model exactly, so one shipped folder
    is both the plain SD model and the GLIGEN one. ``--base-lr`` > 0 also fine-tunes the base UNet.
    """
    run_dir = Path(args.run_dir)
    if not args.init_from:
        raise SystemExit("--stage gligen needs --init-from DIR, an exported shapes model (e.g. synth/shapes/model)")
    vae = load_vae(run_dir, args.init_from)
    tokenizer = load_tokenizer()
    warm = warm_start(args.init_from)
    args.text_dim = warm["text_dim"]
    base, text_encoder = build_models(args)
    base.load_state_dict({k: v for k, v in warm["unet"].items() if not is_grounding_parameter(k)})
    text_encoder.load_state_dict(warm["text_encoder"])
    unet = gligen_unet(base)
    if any(is_grounding_parameter(k) for k in warm["unet"]):
        unet.load_state_dict(warm["unet"])  # an exported GLIGEN model: train its grounding layers on
    text_encoder.requires_grad_(False).eval()
    grounding = [p for n, p in unet.named_parameters() if is_grounding_parameter(n)]
    rest = [p for n, p in unet.named_parameters() if not is_grounding_parameter(n)]
    for p in rest:
        p.requires_grad_(args.base_lr > 0)
    groups = [{"params": grounding, "scale": 1.0}]
    if args.base_lr > 0:
        groups.append({"params": rest, "scale": args.base_lr / args.lr})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01)
    modules = {"unet": unet, "text_encoder": text_encoder}
    ema = EMA(modules, args.ema_decay)
    np_rng = np.random.default_rng(args.seed + 7)
    step = 0
    ckpt_path = run_dir / GLIGEN_CKPT
    if ckpt_path.exists() and not args.fresh:
        state = torch.load(ckpt_path, weights_only=True)
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        ema.shadow = state["ema"]
        step = state["step"]
        set_rng_state(state["rng"], np_rng)
        print(f"resumed GLIGEN training from {ckpt_path} at step {step}", flush=True)
    if args.export and step >= args.steps:
        export(args.export, ema, unet, text_encoder, vae, tokenizer, warm["step"], gligen_step=step)
        return

    noise_scheduler, phases, cooldown, banks, empty_ids = training_setup(args, run_dir, vae, tokenizer)
    boxes = {level: load_or_build_grounding_bank(run_dir, args.seed, args.bank_size, level) for level in banks}
    table = phrase_embeddings(tokenizer, text_encoder, phrase_vocabulary(), torch.device("cpu"))
    unet.train()
    window_start, window_steps = time.time(), 0
    while step < args.steps:
        weights, rows = sample_rows(np_rng, phases, step, banks, args.batch)
        latents = torch.cat([banks[lv].latents[idx] for lv, idx in rows.items()])
        input_ids = torch.cat([banks[lv].input_ids[idx] for lv, idx in rows.items()])
        # A dropped caption also drops the grounding (the CFG branch); grounding alone drops as often.
        dropped = torch.from_numpy(np_rng.random(args.batch) < args.caption_dropout)
        ungrounded = dropped | torch.from_numpy(np_rng.random(args.batch) < args.caption_dropout)
        input_ids = torch.where(dropped[:, None], empty_ids[None], input_ids)
        gligen = grounding_batch(boxes, rows, table, np_rng, ungrounded)

        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch,))
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.no_grad():
            text = text_encoder(input_ids)[0]
        eps = unet(noisy, timesteps, encoder_hidden_states=text, cross_attention_kwargs={"gligen": gligen}).sample
        per_sample = F.mse_loss(eps, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weights(noise_scheduler, timesteps, args.snr_gamma)).mean()

        lr = unet_lr(args.lr, step, 0, args.warmup, cooldown)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["scale"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(grounding + rest, 1.0)
        optimizer.step()
        step += 1
        ema.update(modules, step)
        window_steps += 1

        if step % args.log_every == 0:
            elapsed = time.time() - window_start
            gates = [round(float(m.alpha_attn.detach().tanh()), 3) for m in unet.modules() if hasattr(m, "alpha_attn")]
            log_line(run_dir, {"stage": "gligen", "step": step, "loss": loss.item(), "lr": lr, "gates": gates,
                               "it_s": window_steps / elapsed, "time": time.time()})  # fmt: skip
            window_start, window_steps = time.time(), 0
        if step % args.save_every == 0 or step == args.steps:
            save_atomic({"unet": unet.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema.shadow, "step": step,
                         "rng": rng_state(np_rng), "args": vars(args)}, ckpt_path)  # fmt: skip
        if args.eval_every and (step % args.eval_every == 0 or step == args.steps):
            log_line(run_dir, {"stage": "gligen", "step": step, "eval": run_grounded_eval(args, ema, vae, tokenizer)})
            window_start, window_steps = time.time(), 0
    if args.export:
        export(args.export, ema, unet, text_encoder, vae, tokenizer, warm["step"], gligen_step=step)


def run_grounded_eval(args, ema: EMA, vae, tokenizer) -> dict:
    unet, text_encoder = ema_models(args, ema, gligen=True)
    pipe = make_pipeline(unet, text_encoder, vae, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return evaluate_grounded(pipe, args.seed, args.eval_count, args.eval_steps, guidance=2.0)


@torch.no_grad()
def evaluate_grounded(pipe, seed: int, count: int, steps: int, guidance: float, beta: float = 0.3) -> dict:
    """1-4 object scenes drawn from their captions and true boxes by :class:`scenewright.synth.Synthesizer` (GLIGEN on for
    the first ``beta`` of the steps), scored by the exact detector against the boxes: count accuracy, objects
    matched at IoU >= 0.5, clean background (:func:`scenewright.eval.verify.verify`, as the bench scores)."""
    from scenewright.synth.pipeline import Synthesizer  # diffusers, as the other diffusers imports here: only when used

    synthesizer = Synthesizer.from_pipe(pipe)
    rng = np.random.default_rng([seed, 98])
    layouts = [sample_scene(rng, max_objects=MAX_OBJECTS, curriculum_level=2).to_layout() for _ in range(count)]
    images = synthesizer.generate(layouts, num_inference_steps=steps, guidance_scale=guidance, seed=list(range(count)),
                                  gligen=True, gligen_scheduled_sampling_beta=beta, output_type="np").images  # fmt: skip
    images = (np.asarray(images) * 255).round().astype(np.uint8)
    detector = ShapesDetector()
    scores = [verify(plan_for_layout(layout), detector(image)).scores | {"background_clean": background_clean(image)}
              for image, layout in zip(images, layouts)]  # fmt: skip
    return {key: float(np.mean([s[key] for s in scores])) for key in ("count_acc", "box_iou50", "background_clean")}


# -------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scenewright.synth.shapes.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("vae", "unet", "gligen"), default="unet",
                   help="what to train: the VAE first, then the UNet, then (optional) GLIGEN's grounding layers")
    p.add_argument("--run-dir", default="runs/shapes", help="checkpoints, data banks and log.jsonl go here")
    p.add_argument("--steps", type=int, default=200_000, help="train until this total step (resumes count)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (vae), 5e-4 (unet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --run-dir")
    p.add_argument("--init-from", default=None, metavar="DIR", help="(unet) with no checkpoint in --run-dir, start"
                   " from an exported folder's weights and step (and its VAE), e.g. the shipped synth/shapes/model")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: default 1)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--export", default=None, metavar="DIR", help="(unet) write the fp16 SD folder here at the end;"
                   " with --steps <= the checkpoint's step, export without training")
    # VAE
    p.add_argument("--kl-weight", type=float, default=1e-4, help="(vae) weight of the per-dimension KL term")
    # UNet + text encoder
    p.add_argument("--text-dim", type=int, default=64, help="(unet) CLIP text hidden size = cross-attention dim")
    p.add_argument("--bank-size", type=int, default=20_000, help="(unet) pre-encoded scenes per curriculum level")
    p.add_argument("--curriculum", default=None, help="'STEP:LEVEL=W,...;...' mixture of curriculum levels from each"
                   f" step on; default (unet) {UNET_CURRICULUM!r}, (gligen) {GLIGEN_CURRICULUM!r}")
    p.add_argument("--aux-weight", type=float, default=0.1, help="(unet) weight of the attention-alignment loss; 0 = off")
    p.add_argument("--aux-target", choices=("mask", "box"), default="box",
                   help="(unet) where the auxiliary loss wants each word's attention: its objects' boxes, which guidance"
                   " and the attention benchmark read, or only their masks (steps 0-18000)")
    p.add_argument("--aux-maps", choices=("mean", "each"), default="each",
                   help="(unet) align each 16x16 layer's map (what guidance averages), or only their average (steps 0-16000)")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--snr-gamma", type=float, default=5.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--cooldown", default=None, metavar="START:END", help="(unet) decay the rate linearly from"
                   " step START to 2%% at END (then stop with --steps END); keep the START checkpoint to train on")
    p.add_argument("--eval-every", type=int, default=1000, help="(unet) steps between detector evaluations; 0 = never")
    p.add_argument("--eval-count", type=int, default=32, help="images per evaluation suite (vae: held-out scenes)")
    p.add_argument("--eval-steps", type=int, default=25, help="(unet) DDIM steps of evaluation samples")
    p.add_argument("--eval-guidance", type=float, default=5.0)
    # GLIGEN
    p.add_argument("--base-lr", type=float, default=0.0, help="(gligen) also fine-tune the base UNet at this rate;"
                   " 0 (default) keeps it frozen, so the model without boxes stays the base model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.steps < 0:
        raise SystemExit("--batch must be >= 1 and --steps >= 0")
    if args.lr is None:
        args.lr = 1e-3 if args.stage == "vae" else 5e-4
    if args.curriculum is None:  # grounding layers join a model that already draws every level: no easy start
        args.curriculum = GLIGEN_CURRICULUM if args.stage == "gligen" else UNET_CURRICULUM
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    if args.stage == "vae":
        if args.export:
            raise SystemExit("--export applies to --stage unet (the VAE is saved to <run-dir>/vae automatically)")
        train_vae(args)
    elif args.stage == "gligen":
        train_gligen(args)
    else:
        train_unet(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
