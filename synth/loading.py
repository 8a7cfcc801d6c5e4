"""Loading Stable Diffusion weights from the hub or a local folder, with errors that say what to do."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from scenewright.errors import CLIError, ModelNotAvailableError

from .gligen import check_gligen_unet
from .maps import SD_ATTENTION_DOWNSCALE


#: Models shipped inside the package (package data), by the short name users pass as ``--model``.
EMBEDDED_MODELS: dict[str, Path] = {"shapes": Path(__file__).parent / "shapes" / "model"}
DEFAULT_MODEL = "shapes"


def resolve_model(model: str | os.PathLike) -> str:
    """An embedded model's short name -> its packaged folder; any other hub id or path unchanged."""
    name = str(model)
    if name not in EMBEDDED_MODELS:
        return name
    folder = EMBEDDED_MODELS[name]
    if not (folder / "model_index.json").is_file():
        raise ModelNotAvailableError(
            f"the embedded {name!r} model is not in this build (no {folder}/model_index.json); train and export it "
            f"with `python -m scenewright.synth.shapes.train --stage unet --run-dir runs/shapes --steps 0 --export {folder}` "
            "(see synth/shapes/MODEL_CARD.md), or pass another --model"
        )
    return str(folder)


#: Optional file in a model folder: scenewright's defaults for that model (diffusers ignores the file).
GUIDANCE_DEFAULTS_FILE = "scenewright.json"


@dataclass(frozen=True)
class ModelDefaults:
    """What a model folder's ``scenewright.json`` may declare; SD 1.x/2.x's values otherwise.

    The embedded shapes model declares all six: its cross-attention was trained at the latent's own 16x16
    (``attention_downscale: 1``); classifier-free guidance above ~2 shifts its colors (blue to purple,
    orange to yellow) and noises its background, so ``guidance_scale: 2.0``; its world's objects are
    12-28 px of 64, "small" ones 12-16 px and "large" ones 21-28 px, so planned boxes are fitted to
    ``object_sides`` 0.19-0.44 and ``size_sides``, ``object_gap`` 0.0625 apart;
    and its caption re-forms composed objects less the later it takes over, so ``composition_steps: 0.7``.
    """

    #: latent size / the attention-map size every method reads unless told (``attn_res``, ``car_res``,
    #: ``sar_res``, ``up_res``, ``grounding_res``); SD: 16x16 maps at 512 px = latent / 4.
    attention_downscale: int = SD_ATTENTION_DOWNSCALE
    #: classifier-free guidance scale when the caller gives none; SD's usual 7.5.
    guidance_scale: float = 7.5
    #: ``(low, high)``: the longer side of the objects the model draws, as fractions of the canvas; planned
    #: layouts are fitted to it (:func:`scenewright.layout.size_fit.fit_object_sizes`). None (SD): any size.
    object_sides: tuple[float, float] | None = None
    #: ``{size word: (low, high)}``: the longer side of the objects the model draws for each size word
    #: ("small", "large"); a fitted box aims at the middle of its word's range. None: ``object_sides`` only.
    size_sides: dict[str, tuple[float, float]] | None = None
    #: least gap between the boxes of a fitted layout (fraction of the canvas), so drawn objects do not touch.
    object_gap: float = 0.0
    #: share of the denoising steps LMD's latent composition pastes the objects' own latents for
    #: (:class:`scenewright.synth.composition.CompositionOptions` ``steps`` when not given); LMD's 0.5.
    composition_steps: float = 0.5

    def layout_fit(self) -> dict:
        """:func:`scenewright.layout.planners.plan_layout`'s ``object_sides`` / ``object_gap`` (and ``size_sides`` where
        declared) for this model; {} when it declares no object sizes (planned boxes are then drawn as they are)."""
        if not self.object_sides:
            return {}
        fit = {"object_sides": self.object_sides, "object_gap": self.object_gap}
        return {**fit, "size_sides": self.size_sides} if self.size_sides else fit


def model_defaults(folder: str | os.PathLike | None) -> ModelDefaults:
    """The :class:`ModelDefaults` a local model folder declares (SD's when it has no ``scenewright.json``)."""
    path = None if folder is None else Path(folder).expanduser() / GUIDANCE_DEFAULTS_FILE
    if path is None or not path.is_file():
        return ModelDefaults()
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(declared, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(f"{path} is not a JSON object ({err}); fix or delete it") from err
    known = set(ModelDefaults.__dataclass_fields__)
    unknown = sorted(k for k in declared if k not in known and not k.startswith("_"))  # "_why" etc. are notes
    if unknown:
        raise ModelNotAvailableError(f"{path}: unknown key(s) {unknown}; it may set {sorted(known)}")
    downscale = declared.get("attention_downscale", ModelDefaults.attention_downscale)
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise ModelNotAvailableError(
            f"{path}: `attention_downscale` must be a positive int (latent size / attention map size), got {downscale!r}"
        )
    def number(key: str, within, what: str) -> float:
        """The declared number ``key`` (its default when absent), or an error naming it and its range."""
        value = declared.get(key, getattr(ModelDefaults, key))
        if not _is_number(value) or not within(value):
            raise ModelNotAvailableError(f"{path}: `{key}` must be {what}, got {value!r}")
        return float(value)

    scale = number("guidance_scale", lambda v: 0 <= v <= 100, "a number in [0, 100]")
    sides = declared.get("object_sides")
    if sides is not None:
        if not _is_side_range(sides):
            raise ModelNotAvailableError(
                f"{path}: `object_sides` must be [low, high] with 0 < low <= high <= 1 (fractions of the canvas), got {sides!r}"
            )
        sides = (float(sides[0]), float(sides[1]))
    words = declared.get("size_sides")
    if words is not None:
        if sides is None or not isinstance(words, dict) or not words or not all(map(_is_side_range, words.values())):
            raise ModelNotAvailableError(
                f"{path}: `size_sides` must map size words to [low, high] with 0 < low <= high <= 1 (fractions of the "
                f"canvas), e.g. {{\"small\": [0.19, 0.25]}}, and needs `object_sides`; got {words!r}"
            )
        words = {str(w).lower(): (float(a), float(b)) for w, (a, b) in words.items()}
    gap = number("object_gap", lambda v: 0 <= v < 0.5, "a number in [0, 0.5) (a fraction of the canvas)")
    share = number("composition_steps", lambda v: 0 < v <= 1, "a share of the steps in (0, 1]")
    return ModelDefaults(attention_downscale=downscale, guidance_scale=scale, object_sides=sides, size_sides=words,
                         object_gap=gap, composition_steps=share)  # fmt: skip


def _is_side_range(value: object) -> bool:
    """A JSON ``[low, high]`` of sides as fractions of the canvas: 0 < low <= high <= 1."""
    return isinstance(value, list) and len(value) == 2 and all(map(_is_number, value)) and 0 < value[0] <= value[1] <= 1


def _is_number(value: object) -> bool:
    """An int or float from JSON, not a bool (``True`` is an int to Python, not a size to a user)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _looks_like_path(model: str) -> bool:
    """Hub ids are 'owner/name'; anything rooted or deeper is a local path."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model)


#: model_index.json ``_class_name`` -> the pipeline class we load it with (text-to-image base models only).
PIPELINE_CLASSES = {
    "StableDiffusionPipeline": "StableDiffusionPipeline",
    "StableDiffusionGLIGENPipeline": "StableDiffusionGLIGENPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLPipeline",
    "FluxPipeline": "FluxPipeline",
    "StableDiffusion3Pipeline": "StableDiffusion3Pipeline",
}


def _pipeline_class(source: str, gligen: bool | None):
    """The diffusers pipeline class for ``source``'s model_index.json (read from the folder or the hub)."""
    import diffusers  # heavy: loaded when a model is, so that `scenewright --help` stays fast

    if gligen:
        return diffusers.StableDiffusionGLIGENPipeline
    index = Path(source) / "model_index.json"
    if index.is_file():
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "StableDiffusionPipeline")
    else:
        class_name = diffusers.DiffusionPipeline.load_config(source).get("_class_name", "StableDiffusionPipeline")
    if class_name == "StableDiffusionXLImg2ImgPipeline":
        raise ModelNotAvailableError(
            f"{source!r} is an SDXL refiner (StableDiffusionXLImg2ImgPipeline), which only denoises the last steps of "
            "an image; pass the base model (e.g. stabilityai/stable-diffusion-xl-base-1.0) as --model, and refine its "
            "output with StableDiffusionXLImg2ImgPipeline as a second stage if you want"
        )
    if class_name not in PIPELINE_CLASSES:
        raise ModelNotAvailableError(
            f"{source!r} is a {class_name}; scenewright draws with {', '.join(PIPELINE_CLASSES)} weights"
        )
    return getattr(diffusers, PIPELINE_CLASSES[class_name])


def load_stable_diffusion(
    model: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    gligen: bool | None = None,
    **kwargs,
):
    """The pipeline of a hub id, local folder or embedded name, moved to ``device``.

    The class is the one ``model_index.json`` names: ``StableDiffusionPipeline`` (SD 1.x/2.x),
    ``StableDiffusionGLIGENPipeline`` or ``StableDiffusionXLPipeline``; an SDXL refiner is an error naming the base.
    ``gligen=True`` loads ``StableDiffusionGLIGENPipeline`` and requires the UNet's gated layers
    (``position_net``), raising :class:`scenewright.synth.gligen.GligenError` naming a GLIGEN checkpoint when they
    are missing; ``None`` takes whatever UNet the folder has (GLIGEN is then used when it is gated).
    Failures (no internet, unknown repo, incomplete folder) raise :class:`ModelNotAvailableError`
    naming the model, the underlying reason and the fix, never a raw huggingface_hub traceback.
    """
    name = resolve_model(model)
    path = Path(name).expanduser()
    if _looks_like_path(name) and not path.exists():
        raise ModelNotAvailableError(
            f"model folder {name!r} does not exist; pass a folder made by `pipe.save_pretrained(...)` or "
            "`huggingface-cli download <repo> --local-dir <folder>`, "
            "or a hub id such as 'runwayml/stable-diffusion-v1-5'"
        )
    if path.is_dir() and not (path / "model_index.json").is_file():
        raise ModelNotAvailableError(
            f"{name!r} is a folder without model_index.json, so it is not a diffusers pipeline; pass the folder "
            "that `huggingface-cli download <repo> --local-dir <folder>` created"
        )
    try:
        source = str(path) if path.is_dir() else name
        pipeline_class = _pipeline_class(source, gligen)
        pipe = pipeline_class.from_pretrained(source, torch_dtype=torch_dtype, **kwargs)
    except ModelNotAvailableError:
        raise
    except Exception as err:  # huggingface_hub / requests / OSError: turn them into one actionable message
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        reason = f"{type(err).__name__}: {first_line}"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        hub = "the Hugging Face hub" + (" (HF_HUB_OFFLINE is set)" if offline else "")
        where = "the local folder" if path.is_dir() else hub
        raise ModelNotAvailableError(
            f"cannot load Stable Diffusion weights {name!r} from {where} ({reason}). If this machine has no internet, "
            f"download it on a connected machine (`huggingface-cli download {name} --local-dir <folder>`), copy the "
            "folder here and pass it: Synthesizer.from_pretrained('<folder>')"
        ) from err
    if gligen:
        check_gligen_unet(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe = pipe.to(device)
    return pipe


def device_and_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """``--device`` / ``--dtype`` -> torch's: CUDA when there, fp16 on CUDA and fp32 on CPU unless given."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise CLIError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked but torch sees no CUDA GPU; use --device cpu")
    name = dtype or ("float16" if device.type == "cuda" else "float32")
    return device, getattr(torch, name)


@contextmanager
def quiet_loading(quiet: bool):
    """Silence diffusers'/transformers' weight-loading progress bars for ``--quiet``; restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    modules = (diffusers_logging, transformers_logging)
    were_enabled = [module.is_progress_bar_enabled() for module in modules]
    if quiet:
        for module in modules:
            module.disable_progress_bar()
    try:
        yield
    finally:
        for module, was_enabled in zip(modules, were_enabled):
            (module.enable_progress_bar if was_enabled else module.disable_progress_bar)()
