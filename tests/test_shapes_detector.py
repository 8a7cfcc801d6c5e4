"""The exact detector recovers rendered scenes, tolerates mild noise, and flags color floods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scenewright.eval.boxes import box_iou
from scenewright.synth.shapes.detector import background_clean, detect, kind_counts
from scenewright.synth.shapes.world import PALETTE, sample_scene


def _scenes(seed: int, n: int):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(n)]


def test_detector_is_exact_on_500_rendered_scenes():
    wrong = []
    for scene in _scenes(2024, 500):
        detections = detect(scene.render())
        if kind_counts(detections) != kind_counts(scene.objects):
            wrong.append(scene.caption.text)
            continue
        for obj in scene.objects:
            same_kind = [d for d in detections if (d.color, d.name) == (obj.color, obj.shape)]
            assert max(box_iou(obj.box, d.box) for d in same_kind) > 0.9
    assert not wrong, wrong


def test_masks_are_the_objects_pixels():
    for scene in _scenes(7, 20):
        detections = detect(scene.render())
        truth = sorted(int(o.mask.sum()) for o in scene.objects)
        assert sorted(int(d.mask.sum()) for d in detections) == truth


def test_pil_uint8_and_tensor_inputs_agree():
    scene = _scenes(3, 1)[0]
    image = scene.render()
    as_tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    results = [detect(x) for x in (image, Image.fromarray(image), as_tensor)]
    boxes = [[(d.color, d.name, d.box) for d in r] for r in results]
    assert boxes[0] == boxes[1] == boxes[2]


def test_mild_noise_does_not_change_detections():
    rng = np.random.default_rng(0)
    for scene in _scenes(9, 30):
        noisy = np.clip(scene.render().astype(float) + rng.normal(0, 8, (64, 64, 3)), 0, 255).astype(np.uint8)
        assert kind_counts(detect(noisy)) == kind_counts(scene.objects)


def test_background_clean_is_one_on_renders_and_low_on_a_color_flood():
    scene = _scenes(1, 1)[0]
    image = scene.render()
    assert background_clean(image) == 1.0
    flooded = image.copy()
    flooded[:, 40:] = PALETTE["red"]  # a red band covering the right third is no shape
    flooded[10:12, :40] = PALETTE["red"]
    assert background_clean(flooded) < 0.75
    grey = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert detect(grey) == [] and background_clean(grey) == 0.0


def test_noise_specks_are_not_objects():
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    image[5, 5] = PALETTE["blue"]
    image[30:32, 30:32] = PALETTE["green"]
    assert detect(image) == []


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detect(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        detect(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="min_score"):
        detect(np.zeros((64, 64, 3), dtype=np.uint8), min_score=2.0)


def test_a_hue_fringe_on_an_objects_edge_is_not_a_second_object():
    # A generated yellow square whose corner drifted orange: the detector saw a 12-pixel orange triangle.
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    image[10:34, 10:34] = PALETTE["yellow"]
    image[30:34, 10:13] = PALETTE["orange"]
    assert [(d.color, d.name) for d in detect(image)] == [("yellow", "square")]
    # With the rule off the patch counts; alone on the canvas, or apart from the square, it counts as before.
    assert [d.color for d in detect(image, fringe_area=0)] == ["yellow", "orange"]
    alone = np.full((64, 64, 3), 255, dtype=np.uint8)
    alone[40:46, 40:46] = PALETTE["orange"]  # 36 px: below the smallest object, touching nothing
    assert [(d.color, d.name) for d in detect(alone)] == [("orange", "square")]
    beside = alone.copy()
    beside[10:38, 10:38] = PALETTE["yellow"]  # an object two pixels away does not make it a fringe
    assert [(d.color, d.name) for d in detect(beside)] == [("yellow", "square"), ("orange", "square")]
