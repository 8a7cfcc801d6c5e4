"""CLIP image-text similarities (open_clip): full-prompt and Attend-and-Excite's minimum-object similarity.

Also GenEval's CLIP color classifier for detected objects (:meth:`ClipScorer.color_detections`).

Attend-and-Excite (Chefer et al. 2023; yuval-alaluf/Attend-and-Excite ``metrics/compute_clip_similarity.py``,
``metrics/imagenet_utils.py``) scores an image by the cosine similarity of its CLIP ViT-B/16 embedding to:

- the full prompt ("full prompt similarity"), and
- each object part of the prompt, keeping the smallest ("minimum object similarity"): the prompt is
  split on " and " (else " with ") and the image must show every part, so neglecting one object shows.

Each text is embedded as the mean of its unit embeddings over CLIP's 80 ImageNet templates
("a bad photo of a {}.", ..., "a photo of a {}.", ...), renormalized, with A&E's clean-ups
('a a' -> 'a', 'the a' -> 'a'); ``templates=None`` embeds the bare text instead (CLIPScore style).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from scenewright.errors import ModelNotAvailableError
from scenewright.eval.benchmarks.geneval import GENEVAL_COLORS
from scenewright.eval.detectors import to_pil
AE_MODEL, AE_PRETRAINED = "ViT-B-16", "openai"


@lru_cache(maxsize=1)
def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompt templates as format strings (open_clip's copy of OpenAI's list, which A&E uses)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)


def template_texts(text: str, templates: Sequence[str]) -> list[str]:
    """A&E's ``get_embedding_for_prompt`` texts: each template filled, then 'a a' -> 'a' and 'the a' -> 'a'."""
    return [template.format(text).replace("a a", "a").replace("the a", "a") for template in templates]


def ae_prompt_parts(prompt: str) -> list[str]:
    """A&E's object parts of a prompt: split on ' and ', else on ' with '; raises when neither is there."""
    for word in (" and ", " with "):
        if word in prompt:
            return prompt.split(word)
    raise ValueError(f"cannot split {prompt!r} into objects: A&E looks for ' and ' or ' with '; pass the objects explicitly")


class ClipScorer:
    """An open_clip model + preprocessing + tokenizer that scores images against texts (cosine similarity)."""

    def __init__(self, model, preprocess, tokenizer, *, batch_size: int = 32, text_batch_size: int = 256):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # images per forward pass
        self.text_batch_size = text_batch_size  # texts per forward pass (a prompt's 80 templates in one)

    @classmethod
    def from_pretrained(
        cls,
        model_name: str = AE_MODEL,
        pretrained: str | os.PathLike | None = AE_PRETRAINED,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        cache_dir: str | None = None,
        **options,
    ) -> ClipScorer:
        """``open_clip.create_model_and_transforms(model_name, pretrained=...)``; a clear error when the weights are absent."""
        import open_clip

        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model_name!r}; choose one of open_clip.list_models(), e.g. {AE_MODEL!r}")
        if pretrained is not None:
            pretrained = str(pretrained)
            path = Path(pretrained).expanduser()
            if (pretrained.startswith((".", "/", "~")) or path.suffix in (".bin", ".pt", ".pth", ".safetensors")) and not path.is_file():
                raise ModelNotAvailableError(
                    f"open_clip checkpoint {pretrained!r} does not exist; pass a file made by torch.save(model.state_dict()) "
                    f"or downloaded (e.g. open_clip_pytorch_model.bin), or a pretrained tag from open_clip.list_pretrained()"
                )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, precision=precision, cache_dir=cache_dir
            )
        except Exception as err:  # hub download / missing file / bad tag: one message saying what to do
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ModelNotAvailableError(
                f"cannot load open_clip {model_name!r} weights {pretrained!r} ({type(err).__name__}: {first}). If this machine "
                f"has no internet, download the checkpoint on a connected machine (its hub repo is listed by "
                f"open_clip.get_pretrained_cfg({model_name!r}, {pretrained!r})), copy it here and pass "
                f"pretrained='/path/to/open_clip_pytorch_model.bin'"
            ) from err
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), **options)

    # ------------------------------------------------------------------ embeddings
    @property
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.model.parameters())
        return param.device, param.dtype

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Unit CLIP embeddings (N, D), fp32, of PIL images / (H, W, 3) arrays / (3, H, W) tensors."""
        device, dtype = self._device_dtype
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(to_pil(im)) for im in images[start : start + self.batch_size]])
            features = self.model.encode_image(batch.to(device, dtype)).float()
            out.append(features / features.norm(dim=-1, keepdim=True))
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """Unit embeddings (N, D) of ``texts``; with ``templates``, each is A&E's renormalized template mean."""
        if isinstance(texts, str):
            raise TypeError(f"`texts` must be a list of strings, got the string {texts!r}; wrap it: [{texts!r}]")
        device, _ = self._device_dtype
        groups = [template_texts(t, templates) if templates else [t] for t in texts]
        flat = [t for group in groups for t in group]
        features = []
        for start in range(0, len(flat), self.text_batch_size):
            tokens = self.tokenizer(flat[start : start + self.text_batch_size]).to(device)
            f = self.model.encode_text(tokens).float()
            features.append(f / f.norm(dim=-1, keepdim=True))
        if not features:
            return torch.empty(0, 0)
        per_text = torch.cat(features).split([len(g) for g in groups])
        means = torch.stack([f.mean(dim=0) for f in per_text])
        return means / means.norm(dim=-1, keepdim=True)

    # --------------------------------------------------------------------- scores
    def full_prompt_similarity(self, images: Sequence[Any], prompts: Sequence[str], *, templates: Sequence[str] | None | str = "imagenet") -> torch.Tensor:
        """A&E full prompt similarity: cos(image_i, prompt_i) for each pair, shape (N,)."""
        if len(images) != len(prompts):
            raise ValueError(f"`images` and `prompts` must have the same length, got {len(images)} and {len(prompts)}")
        templates = imagenet_templates() if templates == "imagenet" else templates
        return (self.encode_images(images) * self.encode_texts(prompts, templates)).sum(dim=-1)

    def min_object_similarity(
        self, images: Sequence[Any], objects: Sequence[Sequence[str]], *, templates: Sequence[str] | None | str = "imagenet"
    ) -> torch.Tensor:
        """A&E minimum object similarity: min over image i's objects of cos(image_i, object), shape (N,)."""
        if len(images) != len(objects):
            raise ValueError(f"`images` and `objects` must have the same length, got {len(images)} and {len(objects)}")
        if any(isinstance(o, str) or not o for o in objects):
            raise ValueError("`objects` must hold one non-empty list of object texts per image, e.g. [['a cat', 'a dog']]")
        templates = imagenet_templates() if templates == "imagenet" else templates
        image_features = self.encode_images(images)
        unique = list(dict.fromkeys(t for group in objects for t in group))
        text_features = dict(zip(unique, self.encode_texts(unique, templates)))
        return torch.stack(
            [min((image_features[i] * text_features[t]).sum() for t in group) for i, group in enumerate(objects)]
        )

    def ae_scores(self, images: Sequence[Any], prompt: str) -> dict[str, torch.Tensor]:
        """Both A&E scores for images of one prompt: its two halves (split as A&E does) give the objects."""
        parts = ae_prompt_parts(prompt)[:2]
        return {
            "full_prompt": self.full_prompt_similarity(images, [prompt] * len(images)),
            "min_object": self.min_object_similarity(images, [parts] * len(images)),
        }

    # ---------------------------------------------------------------- GenEval colors
    def color_detections(self, image: Any, detections: Sequence, *, colors: Sequence[str] | None = None, background: str = "#999") -> list:
        """GenEval ``color_classification``: each detection's color by zero-shot CLIP on its crop (mask over gray).

        The crop is the box of the image with pixels outside the detection's mask (if any) set to
        ``background``; the classifier averages "a photo of a {c} {name}", "a photo of a {c}-colored
        {name}" and "a photo of a {c} object" per color (clip_benchmark's ``zero_shot_classifier``).
        """
        colors = tuple(colors or GENEVAL_COLORS)
        pil = to_pil(image)
        width, height = pil.size
        blank = Image.new("RGB", pil.size, color=background)
        named: dict[str, list[int]] = {}
        for i, d in enumerate(detections):
            named.setdefault(d.name, []).append(i)
        found: dict[int, str] = {}
        for name, indices in named.items():
            templates = [f"a photo of a {{}} {name}", f"a photo of a {{}}-colored {name}", "a photo of a {} object"]
            classifier = self.encode_texts(colors, templates)
            crops = []
            for i in indices:
                d, source = detections[i], pil
                if d.mask is not None:
                    mask = np.asarray(d.mask, dtype=bool)
                    if mask.shape != (height, width):
                        raise ValueError(f"detection mask of '{d.name}' has shape {mask.shape}, the image is {(height, width)}")
                    source = Image.composite(pil, blank, Image.fromarray(mask.astype(np.uint8) * 255))
                x0, y0, x1, y1 = d.box
                crops.append(source.crop((x0 * width, y0 * height, x1 * width, y1 * height)))
            best = (self.encode_images(crops) @ classifier.T).argmax(dim=-1).tolist()
            found.update((i, colors[k]) for i, k in zip(indices, best))
        return [dataclasses.replace(d, color=found[i]) for i, d in enumerate(detections)]
