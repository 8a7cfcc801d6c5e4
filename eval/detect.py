"""One detector interface for every stage that checks an image: image + names -> detections.

The agent's verify step, the benchmark runner and the scorers all take a :class:`Detector`, so an
open-vocabulary model (OWLv2, Grounding DINO) and the shapes world's exact detector are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object: kind (singular noun), normalized xyxy box, confidence, optional mask and color."""

    name: str
    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # (H, W) bool
    color: str | None = None

    @property
    def phrase(self) -> str:
        return f"a {self.color} {self.name}" if self.color else f"a {self.name}"


class Detector(Protocol):
    """``detector(image, names)`` -> detections of those kinds (a closed-world detector may ignore ``names``)."""

    def __call__(self, image: Any, names: Sequence[str]) -> list[Detection]: ...


class ShapesDetector:
    """The shapes world's exact detector (:func:`scenewright.eval.shapes.detector.detect`) behind the common interface."""

    def __init__(self, **options: Any):
        self.options = options

    def __call__(self, image: Any, names: Sequence[str] = ()) -> list[Detection]:
        from scenewright.eval.shapes.detector import detect

        wanted = set(names)
        return [d for d in detect(image, **self.options) if not wanted or d.name in wanted]


def _owlv2(**options: Any) -> Detector:
    """OWLv2 (:class:`scenewright.eval.detectors.OwlDetector`); ``model=`` a hub id or local folder."""
    from scenewright.eval.detectors import OwlDetector

    return OwlDetector.from_pretrained(version=2, **options)


def _owlvit(**options: Any) -> Detector:
    """OWL-ViT (:class:`scenewright.eval.detectors.OwlDetector`); ``model=`` a hub id or local folder."""
    from scenewright.eval.detectors import OwlDetector

    return OwlDetector.from_pretrained(version=1, **options)


def _grounding_dino(**options: Any) -> Detector:
    """Grounding DINO (:class:`scenewright.eval.detectors.GroundingDinoDetector`); ``model=`` a hub id or local folder."""
    from scenewright.eval.detectors import GroundingDinoDetector

    return GroundingDinoDetector.from_pretrained(**options)


#: Detector name -> factory (transformers is imported only when an open-vocabulary one is built).
DETECTORS: dict[str, Callable[..., Detector]] = {
    "shapes": ShapesDetector,
    "owlv2": _owlv2,
    "owlvit": _owlvit,
    "grounding-dino": _grounding_dino,
}


def get_detector(name: str, **options: Any) -> Detector:
    """Build a registered detector by name, or raise naming the ones there are."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return factory(**options)


def detector_segmenter(detector: Detector) -> Callable[[np.ndarray, str], list[np.ndarray]]:
    """``segmenter(image, phrase)`` for :mod:`scenewright.synth.composition` from a detector (LMD segments with SAM).

    A (H, W) bool mask per detection of the phrase's kind whose color fits the phrase, most confident
    first (its box, filled, for detectors without masks); [] when the detector finds no such object.
    """
    from scenewright.eval.detectors import to_pil  # every detector is handed PIL images, as the bench and agent do
    from scenewright.eval.scores import color_fits, detection_region
    from scenewright.layout.parse import name_of_phrase

    def segment(image: np.ndarray, phrase: str) -> list[np.ndarray]:
        name = name_of_phrase(phrase)
        found = [d for d in detector(to_pil(image), [name]) if d.name == name and color_fits(d.color, phrase)]
        h, w = np.asarray(image).shape[:2]
        return [detection_region(d, h, w) for d in sorted(found, key=lambda d: -d.score)]

    return segment

