"""Open-vocabulary detectors through transformers, behind :class:`scenewright.eval.detect.Detector`.

- OWL-ViT (Minderer et al. 2022) and OWLv2 (Minderer et al. 2023): one text query per name,
  ``"a photo of a {name}"`` (the query LMD's evaluation uses); each predicted box takes the query
  with the highest sigmoid score.
- Grounding DINO (Liu et al. 2023): one caption ``"cat. teddy bear."``; each box's score for a
  name is its highest token probability over that name's tokens (found by character offsets).

Both return normalized xyxy boxes relative to the image (OWLv2's square padding undone), the
asked names (not the query text), scores above ``threshold``, and a class-aware NMS
(:func:`scenewright.eval.boxes.nms`) so that one object gives one detection. Loading goes through
``from_pretrained`` (hub id or local folder) and fails with :class:`scenewright.synth.loading.ModelNotAvailableError`
saying how to get the weights onto an offline machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenewright.errors import ModelNotAvailableError
from scenewright.eval.boxes import nms
from scenewright.eval.detection import Detection

OWLV2_DEFAULT = "google/owlv2-base-patch16-ensemble"
OWLVIT_DEFAULT = "google/owlvit-base-patch32"
GROUNDING_DINO_DEFAULT = "IDEA-Research/grounding-dino-tiny"


def load_weights(loader: Callable[..., Any], name: str | os.PathLike, what: str, registry_key: str, **kwargs) -> Any:
    """``loader(name, **kwargs)`` (a ``from_pretrained``), any failure turned into one actionable error."""
    name = str(name)
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not path.exists():
        raise ModelNotAvailableError(
            f"{what} folder {name!r} does not exist; pass a folder made by `save_pretrained(...)` or "
            f"`huggingface-cli download <repo> --local-dir <folder>`, or a hub id"
        )
    try:
        return loader(str(path) if path.is_dir() else name, **kwargs)
    except Exception as err:  # huggingface_hub / OSError / bad config: one message that says what to do
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        where = "the local folder" if path.is_dir() else "the Hugging Face hub" + (" (HF_HUB_OFFLINE is set)" if offline else "")
        raise ModelNotAvailableError(
            f"cannot load {what} weights {name!r} from {where} ({type(err).__name__}: {first}). If this machine has no "
            f"internet, download them on a connected machine (`huggingface-cli download {name} --local-dir <folder>`), "
            f"copy the folder here and pass it: get_detector({registry_key!r}, model='<folder>')"
        ) from err


def to_pil(image: Any):
    """A PIL RGB image from a PIL image, an (H, W, 3) array (uint8 or floats in [0, 1]) or a (3, H, W) tensor."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
        image = image.permute(1, 2, 0).numpy() if image.ndim == 3 and image.shape[0] in (1, 3) else image.numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"`image` must be a PIL image, an (H, W, 3) array or a (3, H, W) tensor, got shape {array.shape}")
    if array.dtype.kind == "f":
        array = (np.clip(array, 0.0, 1.0) * 255).round()
    array = array.astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return Image.fromarray(array[..., :3])


def _unique(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise TypeError(f"`names` must be a list of object names, got the string {names!r}; wrap it: [{names!r}]")
    return list(dict.fromkeys(" ".join(str(n).split()) for n in names if str(n).strip()))


def _detections(
    boxes_cxcywh: torch.Tensor, name_scores: torch.Tensor, names: Sequence[str], threshold: float, nms_threshold: float | None
) -> list[Detection]:
    """Boxes (Q, 4 normalized cxcywh) + per-name scores (Q, K) -> detections above ``threshold``, best first, NMS'd."""
    scores, labels = name_scores.float().max(dim=-1)
    cx, cy, w, h = boxes_cxcywh.float().unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).clamp(0.0, 1.0)
    out = []
    for q in torch.nonzero(scores >= threshold).flatten().tolist():
        x0, y0, x1, y1 = xyxy[q].tolist()
        if x1 > x0 and y1 > y0:
            out.append(Detection(names[labels[q]], (x0, y0, x1, y1), float(scores[q])))
    out.sort(key=lambda d: -d.score)
    return out if nms_threshold is None else nms(out, nms_threshold, class_aware=True)


def _to_model(model, inputs) -> dict[str, torch.Tensor]:
    """Processor outputs on the model's device; floating inputs (pixels) in the model's dtype."""
    param = next(model.parameters())
    return {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device)) for k, v in inputs.items()}


class OwlDetector:
    """OWL-ViT / OWLv2 open-vocabulary detector: ``detector(image, names)`` -> detections of those names."""

    def __init__(
        self,
        model,
        processor,
        *,
        threshold: float = 0.1,
        nms_threshold: float | None = 0.5,
        query_template: str = "a photo of a {name}",
    ):
        if "{name}" not in query_template:
            raise ValueError(f"`query_template` must contain '{{name}}', got {query_template!r}")
        self.model = model.eval()
        self.processor = processor
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.query_template = query_template
        # OWLv2 pads the image to a square (bottom/right) before predicting; OWL-ViT stretches it.
        self.pads_to_square = type(model).__name__.startswith("Owlv2")

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        version: int = 2,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        **options,
    ) -> OwlDetector:
        """Load OWLv2 (``version=2``, default ``google/owlv2-base-patch16-ensemble``) or OWL-ViT (``version=1``)."""
        from transformers import Owlv2ForObjectDetection, Owlv2Processor, OwlViTForObjectDetection, OwlViTProcessor

        if version not in (1, 2):
            raise ValueError(f"`version` must be 1 (OWL-ViT) or 2 (OWLv2), got {version!r}")
        model_cls, processor_cls = (Owlv2ForObjectDetection, Owlv2Processor) if version == 2 else (OwlViTForObjectDetection, OwlViTProcessor)
        name = model or (OWLV2_DEFAULT if version == 2 else OWLVIT_DEFAULT)
        key = "owlv2" if version == 2 else "owlvit"
        what = "OWLv2" if version == 2 else "OWL-ViT"
        net = load_weights(model_cls.from_pretrained, name, what, key, torch_dtype=torch_dtype)
        processor = load_weights(processor_cls.from_pretrained, name, f"{what} processor", key)
        return cls(net if device is None else net.to(device), processor, **options)

    @torch.no_grad()
    def __call__(self, image: Any, names: Sequence[str]) -> list[Detection]:
        names = _unique(names)
        if not names:
            return []
        pil = to_pil(image)
        width, height = pil.size
        queries = [self.query_template.format(name=n) for n in names]
        max_length = self.model.config.text_config.max_position_embeddings
        inputs = self.processor(
            text=[queries], images=pil, return_tensors="pt", padding="max_length", truncation=True, max_length=max_length
        )
        outputs = self.model(**_to_model(self.model, inputs))
        boxes = outputs.pred_boxes[0].float()
        if self.pads_to_square:  # boxes are fractions of the padded square: rescale to the image
            side = max(width, height)
            boxes = boxes * torch.tensor([side / width, side / height, side / width, side / height], device=boxes.device)
        return _detections(boxes.cpu(), outputs.logits[0].float().sigmoid().cpu(), names, self.threshold, self.nms_threshold)


class GroundingDinoDetector:
    """Grounding DINO open-vocabulary detector: ``detector(image, names)`` -> detections of those names."""

    def __init__(self, model, processor, *, threshold: float = 0.35, nms_threshold: float | None = 0.5):
        self.model = model.eval()
        self.processor = processor
        self.threshold = threshold
        self.nms_threshold = nms_threshold

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        **options,
    ) -> GroundingDinoDetector:
        """Load Grounding DINO (default ``IDEA-Research/grounding-dino-tiny``) via ``AutoModelForZeroShotObjectDetection``."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        name = model or GROUNDING_DINO_DEFAULT
        net = load_weights(AutoModelForZeroShotObjectDetection.from_pretrained, name, "Grounding DINO", "grounding-dino", torch_dtype=torch_dtype)
        processor = load_weights(AutoProcessor.from_pretrained, name, "Grounding DINO processor", "grounding-dino")
        return cls(net if device is None else net.to(device), processor, **options)

    @staticmethod
    def caption(names: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
        """Grounding DINO's caption ('cat. teddy bear.', lower case, '.'-separated) and each name's character span."""
        text, spans = "", []
        for name in names:
            spans.append((len(text), len(text) + len(name)))
            text += name.lower() + ". "
        return text.strip(), spans

    @torch.no_grad()
    def __call__(self, image: Any, names: Sequence[str]) -> list[Detection]:
        names = _unique(names)
        if not names:
            return []
        pil = to_pil(image)
        text, spans = self.caption(names)
        inputs = self.processor(images=pil, text=text, return_tensors="pt", truncation=True)
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True, truncation=True)["offset_mapping"]
        token_sets = [
            [t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end] for start, end in spans
        ]
        outputs = self.model(**_to_model(self.model, inputs))
        probs = outputs.logits[0].float().sigmoid().cpu()  # (queries, max_text_len): per-token probability
        name_scores = torch.stack(
            [probs[:, tokens].max(dim=-1).values if tokens else torch.zeros(probs.shape[0]) for tokens in token_sets], dim=-1
        )
        return _detections(outputs.pred_boxes[0].float().cpu(), name_scores, names, self.threshold, self.nms_threshold)
