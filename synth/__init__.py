"""Synthesis stage: training-free attention control on Stable Diffusion and GLIGEN.

``from synth import Synthesizer`` loads diffusers lazily, so ``scenewright.synth.maps`` and friends stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import GuidanceMeasure, StepRecord, SynthesisOutput, Synthesizer

__all__ = ["GuidanceMeasure", "StepRecord", "SynthesisOutput", "Synthesizer"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'scenewright.synth' has no attribute {name!r}")
