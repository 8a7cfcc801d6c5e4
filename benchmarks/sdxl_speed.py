"""Time and peak memory of guidance on SDXL's architecture: unguided, A&E and CAR+SAR, with and without checkpointing.

Runs on the real SDXL UNet (``UNet2DConditionModel`` from stabilityai/stable-diffusion-xl-base-1.0's
``unet/config.json``, 2.6 B parameters) with random weights, no download. The two text encoders have SDXL's
widths (768, and 1280 with a 1280 projection) but 2 layers each; generation stops at the latent
(``output_type="latent"``), so the VAE is a small stand-in that only gives the pipeline its factor 8.
Each configuration runs in its own subprocess, so that its peak memory is its own:

- ``unguided``: ``Synthesizer.generate(layout)``
- ``attend_excite``: ``methods={"attend_excite": ...}``
- ``car_sar``: ``methods={"car": ..., "sar": ...}`` (CAR + SAR of Attention Refocusing, Phung et al. 2024)
- ``attend_excite_ckpt``, ``car_sar_ckpt``: the same with ``gradient_checkpointing=True``

Both guided configurations use the same schedule: ``--guided`` of ``--steps`` steps guided, one update
each (A&E's step sizes, no iterative refinement), maps at the model's default size (latent / 4).

Memory is the peak above model load (``speed_common.py``): on CPU the process's peak resident set less the one
right after loading (the warm-up is the same configuration), on CUDA ``torch.cuda.max_memory_allocated`` above
the allocation before the run.

    python benchmarks/sdxl_speed.py --threads 2 --size 512           # CPU, 4 steps, 2 guided
    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/sdxl_speed.py --size 512   # memory closer to live tensors
    python benchmarks/sdxl_speed.py --threads 2 --size 1024          # needs ~16 GB on top of the 10 GB of weights
    python benchmarks/sdxl_speed.py --size 256 --steps 2 --guided 1 --dtype bfloat16 --configs unguided,car_sar_ckpt

Goals (issue 23): guided / unguided time <= 2.0x; peak memory above load of guided generation (whose peak
is a guided step's) <= 1.5x the unguided one's, with checkpointing on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# same directory: the script's folder is on sys.path
from speed_common import add_run_arguments, chosen_configs, loaded_bytes, measure, run_configs, write_result

CONFIGS = ("unguided", "attend_excite", "car_sar", "attend_excite_ckpt", "car_sar_ckpt")
CAT_AND_DOG = {
    "prompt": "a cat and a dog",
    "objects": [
        {"name": "cat", "phrase": "a cat", "box": [0.05, 0.2, 0.45, 0.8]},
        {"name": "dog", "phrase": "a dog", "box": [0.55, 0.2, 0.95, 0.8]},
    ],
}
# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (diffusers 0.19.0.dev0), without the bookkeeping keys
SDXL_UNET_CONFIG = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}


# ----------------------------------------------------------------------------- the model


def build_sdxl_random(seed: int = 0, dtype: str = "float32"):
    """A ``StableDiffusionXLPipeline`` with SDXL's UNet, 2-layer text encoders of SDXL's widths, random weights.

    The weights are created in ``dtype``: a float32 UNet first would need 10 GB more at its peak.
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from scenewright.synth.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        unet = UNet2DConditionModel.from_config(SDXL_UNET_CONFIG)
    finally:
        torch.set_default_dtype(default_dtype)

    def clip_config(width: int, heads: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            hidden_size=width, intermediate_size=4 * width, num_attention_heads=heads, num_hidden_layers=2,
            max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280,
        )  # fmt: skip

    text_encoder = CLIPTextModel(clip_config(768, 12))  # CLIP ViT-L's text tower: 768 wide
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(1280, 20))  # OpenCLIP bigG's: 1280, projected to 1280
    vae = AutoencoderKL(  # only its 4 levels matter (factor 8): generation stops at the latent
        block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=32,
    )  # fmt: skip
    # SDXL's scheduler config (scheduler/scheduler_config.json)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(), scheduler=scheduler, add_watermarker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- one config (subprocess)


def _methods(config: str) -> dict:
    """The methods of ``config``, their map sizes left to the model's default (latent / 4)."""
    if config.startswith("attend_excite"):
        return {"attend_excite": {}}
    if config.startswith("car_sar"):
        return {"car": {}, "sar": {}}
    return {}


def _generate(synthesizer, config: str, args, steps: int, guided: int):
    from scenewright.layout.schema import Layout

    return synthesizer.generate(
        Layout.parse(CAT_AND_DOG), methods=_methods(config), num_inference_steps=steps, guidance_scale=5.0,
        height=args.size, width=args.size, seed=args.seed, output_type="latent",
        max_iter_to_alter=guided, thresholds={}, gradient_checkpointing=config.endswith("_ckpt"),
    ).images  # fmt: skip


def run_worker(args: argparse.Namespace) -> None:
    """Build the model, warm up, time ``--repeats`` generations of one config; write JSON + latents to --result."""
    import numpy as np
    import torch

    from scenewright.synth.pipeline import Synthesizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe = build_sdxl_random(args.seed, args.dtype).to(device=device, dtype=getattr(torch, args.dtype))
    synthesizer = Synthesizer.from_pipe(pipe)
    loaded = loaded_bytes(pipe)
    _generate(synthesizer, args.worker, args, steps=1, guided=1)  # warm-up: kernels, allocator, caches
    measured = measure(lambda: _generate(synthesizer, args.worker, args, steps=args.steps, guided=args.guided),
                       device, args.repeats, loaded)  # fmt: skip
    np.save(Path(args.result).with_suffix(".npy"), measured["output"].float().cpu().numpy())
    write_result(args.result, args.worker, measured)


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, CONFIGS, size_help="image height and width in px (512; 1024 is SDXL's own)")
    args = parser.parse_args(argv)
    if args.size % 64:
        parser.error("--size must be a multiple of 64 (VAE x8, then the UNet's three levels)")
    if args.worker:
        run_worker(args)
        return 0

    configs = chosen_configs(parser, args, CONFIGS)
    print(f"SDXL architecture, random weights: device={args.device} dtype={args.dtype} {args.size}x{args.size} px "
          f"steps={args.steps} guided={args.guided} threads={args.threads}", flush=True)  # fmt: skip
    import numpy as np

    keys = ("device", "dtype", "size", "steps", "guided", "seed", "threads", "repeats")
    ok = run_configs(__file__, configs, args, keys, width=20)
    if "unguided" in ok:
        base = ok["unguided"]
        for config in configs:
            if config != "unguided" and config in ok:
                res = ok[config]
                moved = float(np.abs(res["latents"] - base["latents"]).max())
                print(f"{config:20s} / unguided: time {res['seconds'] / base['seconds']:.3f}x (goal <= 2.0x), "
                      f"peak memory above load {res['peak_bytes'] / max(base['peak_bytes'], 1):.3f}x "
                      f"(goal <= 1.5x with checkpointing); max |latent - unguided| {moved:.2e}")  # fmt: skip
    for plain, checkpointed in (("attend_excite", "attend_excite_ckpt"), ("car_sar", "car_sar_ckpt")):
        if plain in ok and checkpointed in ok:
            diff = float(np.abs(ok[plain]["latents"] - ok[checkpointed]["latents"]).max())
            print(f"max |{checkpointed} - {plain}| over latents: {diff:.2e} (checkpointing changes no result)")
    return 0 if len(ok) == len(configs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
