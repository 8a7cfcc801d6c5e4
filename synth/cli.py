"""`scenewright generate`: a prompt or a layout -> an image, with training-free attention control.

    scenewright generate "two cats left of a dog" --model runwayml/stable-diffusion-v1-5 --method car,sar
    scenewright generate --layout layout.json --model ./sd15 --method attend_excite --seed 3 --out cat.png

A prompt given with a guidance method is first planned into a layout (``--planner``, default the
offline planner; every method needs the objects' phrases, the box methods their boxes).
Exit codes: 0 success, 2 bad arguments, unknown method, unreadable layout or unloadable model,
1 generation failed (e.g. out of memory). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from scenewright.cli_checks import check_finite, check_finite_options, check_output_file
from scenewright.errors import CLIError, InputError, ModelNotAvailableError
from scenewright.layout.llm import LLMServerError
from scenewright.layout.plan import Plan, plan, plan_for_layout
from scenewright.layout.planners import PLANNER_NAMES, get_planner
from scenewright.layout.schema import Layout, LayoutError
from scenewright.synth.loading import device_and_dtype, model_defaults, quiet_loading, resolve_model
from scenewright.synth.recipe import Recipe, parse_method_names, parse_options

DTYPES = ("float32", "float16", "bfloat16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: The largest --height/--width, as a multiple of the model's native side: 4x (2048 px for SD 1.5) already
#: needs ~16x the memory of a native image; a larger one would only fail at allocation, after the model load.
MAX_SIZE_FACTOR = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``generate`` to the `scenewright` parser."""
    parser = subparsers.add_parser(
        "generate",
        help="generate an image from a prompt or a layout, with attention control",
        description="Generate an image from a prompt (planned into a layout) or a layout JSON file, guided by "
        "training-free attention control on a Stable Diffusion model.",
    )
    parser.add_argument("prompt", nargs="?", help="the text to draw (or use --layout)")
    parser.add_argument("--layout", type=Path, metavar="FILE", help="a layout JSON file (as `scenewright plan` writes)")
    parser.add_argument("--model", default="shapes",
                        help="diffusers Stable Diffusion folder or hub id, e.g. runwayml/stable-diffusion-v1-5 "
                             "(default: 'shapes', the embedded shapes-world model)")  # fmt: skip
    parser.add_argument(
        "--method", default="car,sar",
        help="comma-separated guidance methods (default car,sar = Attention Refocusing); 'none' for plain SD",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="initial-noise seed (default 0)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance scale (default: the model's, 7.5 for SD, 2.0 for shapes)")  # fmt: skip
    parser.add_argument("--height", type=int, default=None,
                        help="image height in px: a multiple of the model's size factor (8 px latent cells x its "
                        f"downsampling), at most {MAX_SIZE_FACTOR}x its native size (default: the native size)")  # fmt: skip
    parser.add_argument("--width", type=int, default=None, help="image width in px, as --height (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=1, help="images to make (saved as OUT, OUT_1, ...)")
    parser.add_argument("--negative-prompt", default=None, help="what the image must not show")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default: float16 on cuda, else float32)")
    parser.add_argument("--out", type=Path, default=Path("out.png"), help="output image (default out.png)")
    parser.add_argument("--planner", choices=PLANNER_NAMES, default="offline", help="plans a PROMPT's layout (default offline)")
    parser.add_argument("--planner-model", default=None, help="llm/local planner: the model name or folder")
    parser.add_argument("--save-layout", type=Path, metavar="FILE", help="also write the layout used as JSON")
    parser.add_argument(
        "--token-indices", default=None,
        help="explicit A&E token positions, e.g. 2,5 for 'a cat and a frog' (instead of the layout's phrases)",
    )  # fmt: skip
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a method/engine option, VALUE as JSON, e.g. --option max_iter_to_alter=10 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--spatial-temporal", type=float, nargs="?", const=1.0, default=None, metavar="WEIGHT",
        help="box-confined spatial-temporal attention control (Wu et al. 2023): blend each object's phrase into "
        "its box in every cross-attention layer, the weight rising from 0 to WEIGHT (default 1.0) over the steps; "
        "needs a layout (planned from PROMPT if not given) and composes with --method",
    )  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_generate)


def parse_token_indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--token-indices {text!r} must be comma-separated integers, e.g. 2,5") from None


def _check_args(args: argparse.Namespace) -> None:
    if (args.prompt is None) == (args.layout is None):
        raise CLIError("give exactly one of PROMPT or --layout FILE")
    if not args.model:
        raise CLIError("--model is empty: give a diffusers Stable Diffusion folder or hub id, or 'shapes' (the default)")
    if args.out.suffix.lower() not in IMAGE_SUFFIXES:
        raise CLIError(f"--out {args.out} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            raise CLIError(f"{flag} must be >= 1, got {value}")
    weight = args.spatial_temporal
    if weight is not None and not (math.isfinite(weight) and weight >= 0):
        raise CLIError(f"--spatial-temporal WEIGHT must be a finite number >= 0 (1.0 by default), got {weight}")
    check_finite("--guidance-scale", args.guidance_scale, low=0)
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and value < 1:
            raise CLIError(f"{flag} must be a positive number of pixels, got {value}; leave it out for the model's native size")
    check_output_file("--out", args.out)
    if args.save_layout is not None:
        check_output_file("--save-layout", args.save_layout)


def size_multiple(synthesizer) -> int:
    """The pixels an image side must be a multiple of: one latent cell times the backbone's downsampling."""
    backbone = synthesizer.backbone
    if hasattr(backbone, "size_multiple"):  # MM-DiT backbones: VAE factor x token patch
        return backbone.size_multiple
    # UNet backbones: VAE factor x the UNet's down blocks (the check Synthesizer.generate makes)
    return synthesizer.pipe.vae_scale_factor * 2 ** (len(synthesizer.unet.config.block_out_channels) - 1)


def check_image_size(synthesizer, height: int | None, width: int | None) -> None:
    """--height/--width fit the model: multiples of its size factor, at most :data:`MAX_SIZE_FACTOR` x native."""
    multiple = size_multiple(synthesizer)
    for flag, value, native in (("--height", height, synthesizer.backbone.native_size[0]),
                                ("--width", width, synthesizer.backbone.native_size[1])):  # fmt: skip
        if value is None:
            continue
        largest = MAX_SIZE_FACTOR * native
        if value % multiple or not multiple <= value <= largest:
            nearest = min(largest, max(multiple, round(value / multiple) * multiple))
            raise CLIError(
                f"{flag} {value}: this model draws multiples of {multiple} px from {multiple} to {largest} "
                f"({MAX_SIZE_FACTOR}x its native {native}); try {flag} {nearest}"
            )


def _load_plan(args: argparse.Namespace, methods: list[str], token_indices: list[int] | None) -> Plan:
    """The plan to draw: its layout read from --layout, planned from PROMPT when guidance needs one, else the bare
    prompt (a layout without objects, which draws as the prompt alone)."""
    if args.layout is not None:
        return plan_for_layout(Layout.load(args.layout))  # LayoutError names the file and the field
    if (methods == ["none"] and args.spatial_temporal is None) or token_indices is not None:
        return plan_for_layout(Layout(prompt=args.prompt))
    options = {"model": args.planner_model} if args.planner != "offline" else {}
    if args.planner == "offline" and args.planner_model:
        raise CLIError("--planner-model is only used by --planner llm or local")
    try:
        planner = get_planner(args.planner, **options)
    except (InputError, OSError) as err:  # the planner cannot be set up with these flags
        raise CLIError(f"--planner {args.planner}: {err}") from None
    planned = plan(args.prompt, planner, seed=args.seed, **_declared_fit(args.model))
    layout = planned.layout
    for change in planned.notes:
        print(f"layout changed: {change}", file=sys.stderr)
    placed = ", ".join(f"{o.phrase} {[round(v, 2) for v in o.box]}" for o in layout.objects) or "no objects"
    print(f"planned layout: {placed}", file=sys.stderr)
    if not layout.objects:
        raise CLIError(
            f"the {args.planner} planner found no objects in {args.prompt!r} to guide; "
            "use --method none (without --spatial-temporal), --token-indices, or a --layout file"
        )
    return planned


def _declared_fit(model: str) -> dict:
    """The object sizes a local model folder declares for planned boxes (its scenewright.json); {} for others."""
    folder = Path(resolve_model(model))
    return model_defaults(folder if folder.is_dir() else None).layout_fit()


def _output_paths(out: Path, count: int) -> list[Path]:
    return [out] + [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(1, count)]


def run_generate(args: argparse.Namespace) -> int:
    try:
        _check_args(args)
        recipe = Recipe(tuple(parse_method_names(args.method)), parse_options(args.option), seed=args.seed, steps=args.steps,
                        spatial_temporal=args.spatial_temporal, guidance_scale=args.guidance_scale)  # fmt: skip
        check_finite_options(recipe.options)
        token_indices = parse_token_indices(args.token_indices)
        device, dtype = device_and_dtype(args.device, args.dtype)
        planned = _load_plan(args, list(recipe.methods), token_indices)
    # The user's to fix: a bad flag, layout file or prompt, an unreachable planner server, a model folder that
    # declares bad sizes. Anything else is our bug and keeps its traceback.
    except (CLIError, LayoutError, LLMServerError, ModelNotAvailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from scenewright.synth import Synthesizer  # diffusers: loaded only when an image is drawn

    try:
        with quiet_loading(args.quiet):
            synthesizer = Synthesizer.from_pretrained(args.model, torch_dtype=dtype, device=device)
        check_image_size(synthesizer, args.height, args.width)
    except (ModelNotAvailableError, CLIError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.save_layout is not None and planned.layout.objects:
        args.save_layout.parent.mkdir(parents=True, exist_ok=True)
        args.save_layout.write_text(planned.layout.to_json(indent=2) + "\n", encoding="utf-8")
    return _generate(args, synthesizer, planned, recipe, token_indices)


def _generate(args, synthesizer, planned: Plan, recipe: Recipe, token_indices: list[int] | None) -> int:
    """Draw ``planned`` through the one attempt runner (:func:`scenewright.eval.attempt.attempt`), without a detector."""
    import torch  # torch, diffusers and tqdm: loaded only when an image is drawn (``--help`` stays fast)
    from tqdm.auto import tqdm

    from scenewright.eval.attempt import AttemptError, attempt

    progress = tqdm(total=args.steps, desc="denoising", unit="step", disable=args.quiet, file=sys.stderr)

    def on_step(step: int, total: int, record) -> None:
        if record is not None:  # a guided step: show the loss the engine descended
            progress.set_postfix(loss=f"{sum(record.total_loss) / len(record.total_loss):.3f}", refresh=False)
        progress.update(1)

    try:
        drawn = attempt(synthesizer, planned, recipe, on_step=on_step, batch_size=args.batch_size, height=args.height,
                        width=args.width, negative_prompt=args.negative_prompt, token_indices=token_indices)  # fmt: skip
    except AttemptError as err:
        progress.close()
        # The user's to fix: a method option, token indices or a layout this method or model cannot use (InputError
        # names the argument). Anything else is our bug and keeps its traceback.
        if isinstance(err.__cause__, (InputError, LayoutError)):
            print(f"error: {err.__cause__}", file=sys.stderr)
            return 2
        if isinstance(err.__cause__, torch.cuda.OutOfMemoryError):
            print("error: out of GPU memory; try --dtype float16, a smaller --height/--width or --batch-size 1", file=sys.stderr)
            return 1
        raise
    progress.close()
    if drawn.appended_phrases:
        print(f"appended to the prompt (not in it): {', '.join(drawn.appended_phrases)}", file=sys.stderr)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        paths = _output_paths(args.out, len(drawn.images))
        for image, path in zip(drawn.images, paths):
            image.save(path)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


__all__ = ["register", "run_generate"]
