"""One detector interface for every stage that checks an image: image + names -> detections.

The agent's verify step, the benchmark runner and the scorers all take a :class:`Detector`, so an
open-vocabulary model (OWLv2, Grounding DINO) and the shapes world's exact detector are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from scenewright.errors import InputError
from scenewright.eval.boxes import detection_region
from scenewright.eval.detection import Detection
from scenewright.eval.detectors import GroundingDinoDetector, OwlDetector, to_pil
from scenewright.eval.scores import color_fits
from scenewright.layout.parse import name_of_phrase
from scenewright.synth.shapes.detector import ShapesDetector


class Detector(Protocol):
    """``detector(image, names)`` -> detections of those kinds (a closed-world detector may ignore ``names``)."""

    def __call__(self, image: Any, names: Sequence[str]) -> list[Detection]: ...


def _owlv2(**options: Any) -> Detector:
    """OWLv2 (:class:`scenewright.eval.detectors.OwlDetector`); ``model=`` a hub id or local folder."""
    return OwlDetector.from_pretrained(version=2, **options)


def _owlvit(**options: Any) -> Detector:
    """OWL-ViT (:class:`scenewright.eval.detectors.OwlDetector`); ``model=`` a hub id or local folder."""
    return OwlDetector.from_pretrained(version=1, **options)


def _grounding_dino(**options: Any) -> Detector:
    """Grounding DINO (:class:`scenewright.eval.detectors.GroundingDinoDetector`); ``model=`` a hub id or local folder."""
    return GroundingDinoDetector.from_pretrained(**options)


#: Detector name -> factory (transformers is imported only when an open-vocabulary one is built, in its from_pretrained).
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
        raise InputError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return factory(**options)


def detector_segmenter(detector: Detector) -> Callable[[np.ndarray, str], list[np.ndarray]]:
    """``segmenter(image, phrase)`` for :mod:`scenewright.synth.composition` from a detector (LMD segments with SAM).

    A (H, W) bool mask per detection of the phrase's kind whose color fits the phrase, most confident
    first (its box, filled, for detectors without masks); [] when the detector finds no such object.
    """
    def segment(image: np.ndarray, phrase: str) -> list[np.ndarray]:
        name = name_of_phrase(phrase)
        # every detector is handed PIL images, as the bench and agent do
        found = [d for d in detector(to_pil(image), [name]) if d.name == name and color_fits(d.color, phrase)]
        h, w = np.asarray(image).shape[:2]
        return [detection_region(d, h, w) for d in sorted(found, key=lambda d: -d.score)]

    return segment

