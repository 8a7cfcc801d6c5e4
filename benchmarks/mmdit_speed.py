"""Time and peak memory of layout control on FLUX.1's and SD3's architectures at real width, reduced depth.

The transformers have the published widths and heads with random weights, no download:

- FLUX.1-dev (black-forest-labs/FLUX.1-dev ``transformer/config.json``): 24 heads x 128 = 3072 wide, joint
  attention from a 4096-wide T5, pooled CLIP-L 768, RoPE axes (16, 56, 56), guidance embedding; 2 dual-stream
  + 2 single-stream blocks (``--depth 2``; the model has 19 + 38);
- SD3-medium (stabilityai/stable-diffusion-3-medium-diffusers ``transformer/config.json``): 24 heads x 64 = 1536
  wide, patch 2, 16 latent channels, context 4096, pooled 2048; 2 joint blocks (the model has 24).

The text encoders have the real widths (CLIP-L 768, CLIP-G 1280 projected to 1280, T5 4096) but one layer, and
T5's vocabulary is the offline tokenizer's; generation stops at the latent (``output_type="latent"``), so the VAE
is a small stand-in that gives the pipeline its factor 8 and 16 channels. Each configuration runs in its own
subprocess, so that its peak memory is its own:

- ``unguided``: ``Synthesizer.generate(layout)``;
- ``regional``: ``spatial_temporal=True``, box-confined regional attention (no backward);
- ``car_sar``: ``methods={"car": ..., "sar": ...}`` on the joint-attention maps of the first block, ``--guided``
  of ``--steps`` steps guided, one update each;
- ``car_sar_ckpt``: the same with ``gradient_checkpointing=True``.

It prints each configuration's time and peak memory above model load (``speed_common.py``) and its ratio to
unguided, and the cost of one transformer block in one unguided and one regional forward (forward hooks, mean
over the timed steps), from which the full model's step reads off: FLUX.1 19 dual + 38 single blocks, SD3-medium
24. Timings on a shared CPU drift by tens of percent between processes, so the regional run also times unguided
generations in the same process, interleaved with its own: the per-block ratio printed is from that pair.

    python benchmarks/mmdit_speed.py --model sd3 --threads 2 --size 512
    python benchmarks/mmdit_speed.py --model flux --threads 2 --size 512 --configs unguided,regional,car_sar

Goals (issue 24): regional attention <= 1.15x unguided time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# same directory: the script's folder is on sys.path
from speed_common import add_run_arguments, chosen_configs, loaded_bytes, measure, run_configs, write_result

CONFIGS = ("unguided", "regional", "car_sar", "car_sar_ckpt")
CAT_AND_DOG = {
    "prompt": "a cat and a dog",
    "objects": [
        {"name": "cat", "phrase": "a cat", "box": [0.05, 0.2, 0.45, 0.8]},
        {"name": "dog", "phrase": "a dog", "box": [0.55, 0.2, 0.95, 0.8]},
    ],
}
#: Blocks of the published models, to read the full model's step off the per-block cost.
FULL_DEPTH = {"flux": {"dual-stream": 19, "single-stream": 38}, "sd3": {"joint": 24}}
T5_LENGTH = {"flux": 512, "sd3": 256}  # FluxPipeline's and StableDiffusion3Pipeline's default max_sequence_length
GUIDANCE_SCALE = {"flux": 3.5, "sd3": 7.0}


# ----------------------------------------------------------------------------- the models


def _clip(width: int, heads: int, projection: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=width, intermediate_size=4 * width, num_attention_heads=heads, num_hidden_layers=1,
                            max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=projection)  # fmt: skip
    return config, CLIPTextModel, CLIPTextModelWithProjection


def _t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=4096, d_kv=64, d_ff=10240, num_layers=1, num_heads=64,
                                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1))  # fmt: skip


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # only its 4 levels (factor 8) and 16 channels matter: generation stops at the latent
        block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=16, norm_num_groups=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip


def build_random(model: str, depth: int, seed: int = 0, dtype: str = "float32"):
    """A ``FluxPipeline`` or ``StableDiffusion3Pipeline`` at real width, ``depth`` blocks (of each kind), random weights."""
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)  # fmt: skip

    from scenewright.synth.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # built in dtype: no float32 copy at the peak
    t5_tokenizer = build_t5_tokenizer()
    try:
        if model == "flux":
            transformer = FluxTransformer2DModel(
                patch_size=1, in_channels=64, num_layers=depth, num_single_layers=depth, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56),
            )  # fmt: skip
            config, plain, _ = _clip(768, 12, 768)
            pipe = FluxPipeline(
                transformer=transformer, text_encoder=plain(config), text_encoder_2=_t5(t5_tokenizer),
                tokenizer=build_clip_tokenizer(), tokenizer_2=t5_tokenizer, vae=_vae(),
                scheduler=FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                          max_shift=1.15, shift=3.0, use_dynamic_shifting=True),
            )  # fmt: skip
        else:
            transformer = SD3Transformer2DModel(
                sample_size=128, patch_size=2, in_channels=16, num_layers=depth, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
            )  # fmt: skip
            config_l, _, projected = _clip(768, 12, 768)
            config_g, _, _ = _clip(1280, 20, 1280)
            pipe = StableDiffusion3Pipeline(
                transformer=transformer, text_encoder=projected(config_l), text_encoder_2=projected(config_g),
                text_encoder_3=_t5(t5_tokenizer), tokenizer=build_clip_tokenizer(), tokenizer_2=build_clip_tokenizer(),
                tokenizer_3=t5_tokenizer, vae=_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            )  # fmt: skip
    finally:
        torch.set_default_dtype(default_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- one config (subprocess)


class BlockTimer:
    """Wall time of each transformer block's forward, by kind, into the list of ``label`` (forward pre- and
    post-hooks); nothing while ``label`` is None."""

    def __init__(self, transformer):
        self.label: str | None = None
        self.seconds: dict[str, dict[str, list[float]]] = {}
        self._handles = []
        kinds = {"transformer_blocks": "dual-stream" if hasattr(transformer, "single_transformer_blocks") else "joint",
                 "single_transformer_blocks": "single-stream"}  # fmt: skip
        for attribute, kind in kinds.items():
            for block in getattr(transformer, attribute, []):
                self._handles.append(block.register_forward_pre_hook(self._start))
                self._handles.append(block.register_forward_hook(lambda m, a, o, kind=kind: self._stop(kind)))

    def _start(self, module, args) -> None:
        self._began = time.perf_counter()

    def _stop(self, kind: str) -> None:
        if self.label is not None:
            self.seconds.setdefault(self.label, {}).setdefault(kind, []).append(time.perf_counter() - self._began)

    def means(self) -> dict[str, dict[str, float]]:
        """label -> block kind -> mean seconds of one block's forward."""
        return {label: {kind: sum(t) / len(t) for kind, t in kinds.items()} for label, kinds in self.seconds.items()}


def _generate(synthesizer, config: str, args, steps: int, guided: int, timer: BlockTimer | None = None):
    from scenewright.layout.schema import Layout

    guidance = {"methods": {"car": {}, "sar": {}}, "max_iter_to_alter": guided, "thresholds": {},
                "gradient_checkpointing": config.endswith("_ckpt"), "mmdit_blocks": [0]} if config.startswith("car_sar") else {}  # fmt: skip
    if timer is not None:  # one pass of each block per forward in these two (no guided pass)
        timer.label = config if config in ("unguided", "regional") else None
    try:
        return synthesizer.generate(
            Layout.parse(CAT_AND_DOG), num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE[args.model],
            height=args.size, width=args.size, seed=args.seed, output_type="latent",
            spatial_temporal=config == "regional", **guidance,
        ).images  # fmt: skip
    finally:
        if timer is not None:
            timer.label = None


def run_worker(args: argparse.Namespace) -> None:
    """Build the model, warm up, time ``--repeats`` generations of one config; write JSON + latents to --result."""
    import numpy as np
    import torch

    from scenewright.synth.pipeline import Synthesizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe = build_random(args.model, args.depth, args.seed, args.dtype).to(device=device, dtype=getattr(torch, args.dtype))
    synthesizer = Synthesizer.from_pipe(pipe, max_sequence_length=T5_LENGTH[args.model])
    loaded = loaded_bytes(pipe)
    timer = BlockTimer(pipe.transformer)
    _generate(synthesizer, args.worker, args, steps=1, guided=1)  # warm-up: kernels, allocator, caches
    measured = measure(lambda: _generate(synthesizer, args.worker, args, steps=args.steps, guided=args.guided, timer=timer),
                       device, args.repeats, loaded)  # fmt: skip
    if args.worker == "regional":  # the pair: unguided generations in this process, interleaved with regional ones
        for _ in range(args.repeats):
            _generate(synthesizer, "unguided", args, steps=args.steps, guided=args.guided, timer=timer)
            _generate(synthesizer, "regional", args, steps=args.steps, guided=args.guided, timer=timer)
    np.save(Path(args.result).with_suffix(".npy"), measured["output"].float().cpu().numpy())
    write_result(args.result, args.worker, measured, block_seconds=timer.means())


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("flux", "sd3"), default="sd3")
    parser.add_argument("--depth", type=int, default=2, help="blocks of each kind (FLUX: dual and single; default 2)")
    add_run_arguments(parser, CONFIGS, size_help="image height and width in px (512; 1024 is native)")
    args = parser.parse_args(argv)
    if args.size % 16:
        parser.error("--size must be a multiple of 16 (VAE x8, then 2x2 patches)")
    if args.worker:
        run_worker(args)
        return 0

    configs = chosen_configs(parser, args, CONFIGS)
    print(f"{args.model} architecture at real width, depth {args.depth}, random weights: device={args.device} "
          f"dtype={args.dtype} {args.size}x{args.size} px steps={args.steps} guided={args.guided} threads={args.threads}",
          flush=True)  # fmt: skip
    import numpy as np

    keys = ("model", "depth", "device", "dtype", "size", "steps", "guided", "seed", "threads", "repeats")
    ok = run_configs(__file__, configs, args, keys, width=14)
    if "unguided" in ok:
        base = ok["unguided"]
        for config in configs:
            if config != "unguided" and config in ok:
                res = ok[config]
                goal = " (goal <= 1.15x)" if config == "regional" else ""
                moved = float(np.abs(res["latents"] - base["latents"]).max())
                print(f"{config:14s} / unguided: time {res['seconds'] / base['seconds']:.3f}x{goal}, peak memory above load "
                      f"{res['peak_bytes'] / max(base['peak_bytes'], 1):.3f}x; max |latent - unguided| {moved:.2e}")  # fmt: skip
        depth = " + ".join(f"{n} {kind}" for kind, n in FULL_DEPTH[args.model].items())
        blocks = ok["regional"]["block_seconds"] if "regional" in ok else base["block_seconds"]
        full = {}
        for config, kinds in blocks.items():
            for kind, seconds in kinds.items():
                print(f"one {kind} block, one {config} forward: {seconds * 1e3:.1f} ms")
            full[config] = sum(seconds * FULL_DEPTH[args.model][kind] for kind, seconds in kinds.items())
            print(f"the full model's blocks ({depth}), one {config} forward at {args.size} px: ~{full[config]:.1f} s here")
        if len(full) == 2:
            print(f"regional / unguided, the full model's blocks, timed in one process: "
                  f"{full['regional'] / full['unguided']:.3f}x (goal <= 1.15x)")  # fmt: skip
    if "car_sar" in ok and "car_sar_ckpt" in ok:
        diff = float(np.abs(ok["car_sar"]["latents"] - ok["car_sar_ckpt"]["latents"]).max())
        print(f"max |car_sar_ckpt - car_sar| over latents: {diff:.2e} (checkpointing changes no result)")
    return 0 if len(ok) == len(configs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
