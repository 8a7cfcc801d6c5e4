"""The shapes world: procedural scenes with exact masks, boxes and captions, and their exact detector."""

from scenewright.eval.shapes.detector import Detection, background_clean, detect
from scenewright.eval.shapes.world import COLORS, PALETTE, SHAPES, Caption, Scene, ShapeObject, sample_scene

__all__ = [
    "COLORS",
    "PALETTE",
    "SHAPES",
    "Caption",
    "Detection",
    "Scene",
    "ShapeObject",
    "background_clean",
    "detect",
    "sample_scene",
]
