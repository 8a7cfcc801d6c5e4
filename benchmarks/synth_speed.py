"""Time and peak memory per image: scenewright's ``attend_excite`` vs diffusers' Attend-and-Excite pipeline.

Runs on Stable Diffusion 1.5's ARCHITECTURE with random weights (no download): SD1.5's UNet
(``UNet2DConditionModel(sample_size=64, cross_attention_dim=768)``, default blocks), SD1.5's CLIP text
tower (768 wide, 12 layers) and VAE configs, the offline CLIP tokenizer. Three configurations, each in
its own subprocess so that peak memory is its own:

- ``ours``: ``Synthesizer.generate(prompt, methods=["attend_excite"], token_indices=...)``
- ``diffusers``: ``StableDiffusionAttendAndExcitePipeline(prompt, token_indices=...)``
- ``unguided``: ``StableDiffusionPipeline(prompt)``

Same seed, steps, ``max_iter_to_alter``, thresholds, ``scale_factor`` and ``attn_res`` (latent / 4, SD's
"16x16 at 512 px" level) for both A&E runs; the script also reports how far apart their images are.

Memory is the peak above model load (``speed_common.py``): on CPU the process's peak resident set less the one
right after loading, i.e. the working memory of one image without the weights; plus the process's ``ru_maxrss``.
On CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the run.

    python benchmarks/synth_speed.py --threads 2                 # CPU, 512 px, 4 steps, 2 guided (~7 min)
    nice python benchmarks/synth_speed.py --height 256 --width 256 --steps 8 --max-iter-to-alter 4   # ~5 min
    python benchmarks/synth_speed.py --device cuda --dtype float16 --steps 50 --max-iter-to-alter 25

The default is SD1.5's own 512 px (64x64 latent) with few steps: there the reference's costs are the
ones users pay (explicit softmax over 4096 pixels in the 64x64 layers of every pass, a grad-enabled
forward through the whole UNet at every step). At a 32x32 latent (256 px) the convolutions dominate
and the ratio is closer to ours/unguided. Measured on the shared 2-core CPU, fp32 (2026-12-02):

    512 px, 4 steps, 2 guided, 2 threads: ours 108.9 s, diffusers 196.5 s, unguided 65.4 s
        -> time 0.554x (CPU time 0.482x), peak memory above load 0.207x, max pixel difference 2.7e-6
    256 px, 8 steps, 4 guided, 1 thread:  ours 45.9 s, diffusers 56.2 s, unguided 30.1 s
        -> time 0.817x, peak memory above load 0.506x, max pixel difference 2.5e-6
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

# same directory: the script's folder is on sys.path
from speed_common import loaded_bytes, measure, mib, run_config, write_result

CONFIGS = ("ours", "diffusers", "unguided")
PROMPT = "a cat and a frog"
TOKEN_INDICES = [2, 5]  # "cat", "frog" (diffusers' A&E docs example)


# ----------------------------------------------------------------------------- the model


def build_sd15_random(folder: Path, seed: int = 0, gligen: bool = False) -> None:
    """Save an SD1.5-architecture pipeline with random weights (seeded) to ``folder``.

    ``gligen=True``: GLIGEN's gated config (``attention_type="gated"``, its position net) saved as a
    ``StableDiffusionGLIGENPipeline``, the architecture of gligen-1-4-generation-text-box.
    """
    import torch
    from diffusers import (
        AutoencoderKL, DDIMScheduler, StableDiffusionGLIGENPipeline, StableDiffusionPipeline, UNet2DConditionModel,
    )  # fmt: skip
    from transformers import CLIPTextConfig, CLIPTextModel

    from scenewright.synth.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(  # SD1.5's defaults otherwise
        sample_size=64, cross_attention_dim=768, attention_type="gated" if gligen else "default"
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768,
        )
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = (StableDiffusionGLIGENPipeline if gligen else StableDiffusionPipeline)(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)


# ----------------------------------------------------------------------------- one config (subprocess)


def _load(config: str, folder: str, dtype, device):
    from diffusers import StableDiffusionAttendAndExcitePipeline, StableDiffusionPipeline

    if config == "ours":
        from scenewright.synth import Synthesizer

        return Synthesizer.from_pretrained(folder, torch_dtype=dtype, device=device)
    cls = StableDiffusionAttendAndExcitePipeline if config == "diffusers" else StableDiffusionPipeline
    pipe = cls.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(config: str, model, args, steps: int, max_iter_to_alter: int):
    import torch

    thresholds = {int(k): float(v) for k, v in args.thresholds.items()}
    attn_res = (args.height // 32, args.width // 32)  # latent / 4: SD1.5's 16x16 maps at 512 px
    common = dict(num_inference_steps=steps, guidance_scale=args.guidance_scale, height=args.height, width=args.width)
    if config == "ours":
        ae = dict(max_iter_to_alter=max_iter_to_alter, thresholds=thresholds, scale_factor=args.scale_factor, attn_res=attn_res)
        out = model.generate(PROMPT, methods=["attend_excite"], token_indices=TOKEN_INDICES, seed=args.seed,
                             output_type="np", **common, **ae)  # fmt: skip
        return out.images
    generator = torch.Generator("cpu").manual_seed(args.seed)
    if config == "diffusers":
        ae = dict(max_iter_to_alter=max_iter_to_alter, thresholds=thresholds, scale_factor=args.scale_factor, attn_res=attn_res)
        return model(PROMPT, token_indices=TOKEN_INDICES, generator=generator, output_type="np", **common, **ae).images
    return model(PROMPT, generator=generator, output_type="np", **common).images


def run_worker(args: argparse.Namespace) -> None:
    """Load one config, warm it up, time ``--repeats`` generations, write JSON + the image to --result."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = _load(args.worker, args.model_dir, dtype, device)
    loaded = loaded_bytes(getattr(model, "pipe", model))  # a Synthesizer or a diffusers pipeline
    _generate(args.worker, model, args, steps=1, max_iter_to_alter=1)  # warm-up: kernels, allocator, caches
    measured = measure(lambda: _generate(args.worker, model, args, steps=args.steps, max_iter_to_alter=args.max_iter_to_alter),
                       device, args.repeats, loaded)  # fmt: skip
    np.save(Path(args.result).with_suffix(".npy"), np.asarray(measured["output"], dtype=np.float32))
    write_result(args.result, args.worker, measured)


# ----------------------------------------------------------------------------- driver


def _run_config(config: str, args: argparse.Namespace, workdir: Path) -> dict:
    keys = ("device", "dtype", "height", "width", "steps", "max_iter_to_alter", "guidance_scale", "scale_factor",
            "seed", "threads", "repeats")  # fmt: skip
    extra = ["--model-dir", str(args.model_dir), "--thresholds", json.dumps(args.thresholds)]
    return run_config(__file__, config, args, keys, workdir, extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--height", type=int, default=512, help="image height in px (default 512, SD1.5's own)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-iter-to-alter", type=int, default=2, help="guided steps (A&E: 25 of 50; default 2 of 4)")
    parser.add_argument("--thresholds", type=json.loads, default={}, help='refinement steps as JSON, e.g. \'{"0": 0.05}\'')
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--scale-factor", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (1: steadiest on a shared CPU)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per config (the minimum is reported)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "scenewright-bench-sd15-random")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.height % 64 or args.width % 64:
        parser.error("--height/--width must be multiples of 64 (SD1.5: VAE x8, UNet /8)")
    if args.worker:
        run_worker(args)
        return 0

    if not (args.model_dir / "model_index.json").is_file():
        print(f"building SD1.5-architecture pipeline with random weights in {args.model_dir} ...", flush=True)
        build_sd15_random(args.model_dir, seed=0)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    print(f"device={args.device} dtype={args.dtype} {args.height}x{args.width} px steps={args.steps} "
          f"max_iter_to_alter={args.max_iter_to_alter} thresholds={args.thresholds} threads={args.threads} "
          f"attn_res={args.height // 32}x{args.width // 32} prompt={PROMPT!r} token_indices={TOKEN_INDICES}")  # fmt: skip
    import numpy as np

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            results[config] = res = _run_config(config, args, Path(tmp))
            if "error" in res:
                print(f"{config:10s} FAILED {res['error']}")
                continue
            res["image"] = np.load(Path(tmp) / f"{config}.npy")
            print(f"{config:10s} wall {res['seconds']:7.2f} s  cpu {res['cpu_seconds']:7.2f} s  "
                  f"peak memory above load {mib(res['peak_bytes'])}  process max RSS {mib(res['maxrss_bytes'])}")  # fmt: skip
    ok = {c: r for c, r in results.items() if "error" not in r}
    if "ours" in ok and "diffusers" in ok:
        ours, ref = ok["ours"], ok["diffusers"]
        diff = float(np.abs(ours["image"] - ref["image"]).max())
        print(f"ours / diffusers A&E: time {ours['seconds'] / ref['seconds']:.3f}x (cpu {ours['cpu_seconds'] / ref['cpu_seconds']:.3f}x), "
              f"peak memory above load {ours['peak_bytes'] / max(ref['peak_bytes'], 1):.3f}x, "
              f"max RSS {ours['maxrss_bytes'] / ref['maxrss_bytes']:.3f}x")  # fmt: skip
        print(f"max |ours - diffusers| over image pixels in [0, 1]: {diff:.2e}")
        if "unguided" in ok:
            moved = float(np.abs(ours["image"] - ok["unguided"]["image"]).max())
            print(f"max |ours - unguided|: {moved:.2e} (guidance changed the image)")
    if "unguided" in ok:
        for config in ("ours", "diffusers"):
            if config in ok:
                print(f"{config} / unguided: time {ok[config]['seconds'] / ok['unguided']['seconds']:.3f}x")
    return 0 if len(ok) == len(configs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
