"""Time and peak memory of each synthesis preset vs. unguided, SD1.5 and GLIGEN architectures, random weights.

Presets (each in its own subprocess so that peak memory is its own), all through ``Synthesizer.generate``:

- ``sd:none``, ``sd:car+sar`` (A&E's schedule), ``sd:attention_refocusing`` (official schedule, plain SD),
  ``sd:spatial_temporal`` (Wu et al. 2023, fixed schedule) on SD1.5's architecture;
- ``gligen:none``, ``gligen:attention_refocusing`` (GLIGEN + CAR + SAR + grounding loss), ``gligen:spatial_temporal``
  on GLIGEN's gated config of the same UNet (``attention_type="gated"``).

The models come from :func:`synth_speed.build_sd15_random` (SD1.5's UNet, CLIP text tower and VAE configs,
seeded random weights). Memory as in ``synth_speed``: on CPU the peak resident set during generation above
the one before it (after a one-step warm-up, so on CPU it mostly shows what the allocator could not reuse:
compare the process's max RSS, weights included, too); on CUDA ``max_memory_allocated`` above the
allocation before the run. On a shared CPU prefer the cpu-seconds ratios to the wall-clock ones.

    nice python benchmarks/synth_presets.py --height 128 --width 128 --steps 3     # CPU, 16x16 latent
    python benchmarks/synth_presets.py --device cuda --dtype float16 --height 512 --width 512 --steps 50
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

# same directory: the script's folder is on sys.path
from speed_common import loaded_bytes, measure, mib, run_config, write_result
from synth_speed import build_sd15_random

PRESETS = (
    "sd:none", "sd:car+sar", "sd:attention_refocusing", "sd:spatial_temporal",
    "gligen:none", "gligen:attention_refocusing", "gligen:spatial_temporal",
)  # fmt: skip


def _layout():
    from scenewright.layout.schema import Layout

    return Layout.from_gligen("a cat and a frog", ["a cat", "a frog"], [[0.05, 0.2, 0.45, 0.8], [0.55, 0.2, 0.95, 0.8]])


def _generate(syn, preset: str, args, steps: int):
    kind = preset.split(":", 1)[1]
    methods = {"none": ["none"], "car+sar": ["car", "sar"], "attention_refocusing": ["attention_refocusing"],
               "spatial_temporal": ["none"]}[kind]  # fmt: skip
    return syn.generate(
        _layout(), methods=methods, spatial_temporal=kind == "spatial_temporal", num_inference_steps=steps,
        height=args.height, width=args.width, seed=args.seed, output_type="np",
    )  # fmt: skip


def run_worker(args: argparse.Namespace) -> None:
    import torch

    from scenewright.synth import Synthesizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    folder = args.model_dir / args.worker.split(":")[0]
    syn = Synthesizer.from_pretrained(str(folder), torch_dtype=getattr(torch, args.dtype), device=device)
    loaded = loaded_bytes(syn.pipe)
    _generate(syn, args.worker, args, steps=1)  # warm-up
    measured = measure(lambda: _generate(syn, args.worker, args, steps=args.steps), device, 1, loaded)
    write_result(args.result, args.worker, measured, guided_steps=len(measured["output"].steps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", default=",".join(PRESETS), help=f"subset of {','.join(PRESETS)}")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "scenewright-bench-presets")
    parser.add_argument("--worker", choices=PRESETS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.height % 64 or args.width % 64:
        parser.error("--height/--width must be multiples of 64 (SD1.5: VAE x8, UNet /8)")
    if args.worker:
        run_worker(args)
        return 0
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        parser.error(f"--presets: unknown {unknown}; choose from {', '.join(PRESETS)}")
    for arch in sorted({p.split(":")[0] for p in presets}):
        if not (args.model_dir / arch / "model_index.json").is_file():
            print(f"building {arch} (SD1.5 architecture, random weights) in {args.model_dir / arch} ...", flush=True)
            build_sd15_random(args.model_dir / arch, seed=0, gligen=arch == "gligen")
    print(f"device={args.device} dtype={args.dtype} {args.height}x{args.width} px "
          f"(latent {args.height // 8}x{args.width // 8}) steps={args.steps} threads={args.threads}")  # fmt: skip
    results = {}
    keys = ("device", "dtype", "height", "width", "steps", "seed", "threads")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            res = run_config(__file__, preset, args, keys, Path(tmp), extra=["--model-dir", str(args.model_dir)])
            if "error" in res:
                print(f"{preset:28s} FAILED: {res['error']}")
                continue
            results[preset] = res
            base = results.get(preset.split(":")[0] + ":none")
            ratio = (
                f"  vs unguided: wall {res['seconds'] / base['seconds']:4.2f}x, cpu "
                f"{res['cpu_seconds'] / base['cpu_seconds']:4.2f}x, max RSS {res['maxrss_bytes'] / base['maxrss_bytes']:4.2f}x"
                if base else ""
            )  # fmt: skip
            print(f"{preset:28s} wall {res['seconds']:6.2f} s  cpu {res['cpu_seconds']:6.2f} s  guided steps "
                  f"{res['guided_steps']}  peak memory above load {mib(res['peak_bytes'])}  max RSS "
                  f"{mib(res['maxrss_bytes'])}{ratio}")  # fmt: skip
    return 0 if len(results) == len(presets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
