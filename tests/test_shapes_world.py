"""The shapes world: seeded scenes whose masks, boxes, captions and layouts agree with each other."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenewright.synth.shapes.world import (
    BACKGROUND_RGB,
    COLORS,
    PALETTE,
    SHAPES,
    mask_box,
    region_of,
    sample_scene,
    shape_mask,
)

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}


def _scenes(seed: int, n: int, level: int = 2):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, curriculum_level=level) for _ in range(n)]


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = _scenes(3, 5), _scenes(3, 5), _scenes(4, 5)
    assert [s.caption.text for s in a] == [s.caption.text for s in b]
    assert all(np.array_equal(x.render(), y.render()) for x, y in zip(a, b))
    assert [s.caption.text for s in a] != [s.caption.text for s in c]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), level=st.sampled_from([0, 1, 2]))
def test_scene_objects_are_separate_and_boxes_are_their_masks(seed, level):
    scene = sample_scene(np.random.default_rng(seed), curriculum_level=level)
    assert 1 <= len(scene.objects) <= 4
    covered = np.zeros((scene.size, scene.size), dtype=int)
    for obj in scene.objects:
        assert obj.mask.sum() >= 40, "every object is far above the detector's noise floor"
        assert obj.box == mask_box(obj.mask)
        covered += obj.mask
    assert covered.max() == 1, "objects never overlap"
    # Boxes keep a background gap between them, so no two objects touch.
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1 :]:
            gap_x = max(a.box[0] - b.box[2], b.box[0] - a.box[2])
            gap_y = max(a.box[1] - b.box[3], b.box[1] - a.box[3])
            assert max(gap_x, gap_y) * scene.size >= 1
    image = scene.render()
    assert image.shape == (scene.size, scene.size, 3) and image.dtype == np.uint8
    assert (image[covered == 0] == BACKGROUND_RGB).all()
    for obj in scene.objects:
        assert (image[obj.mask] == PALETTE[obj.color]).all()


def test_curriculum_level_zero_is_one_large_object():
    for scene in _scenes(0, 50, level=0):
        assert len(scene.objects) == 1 and scene.objects[0].size == "large"
    assert max(len(s.objects) for s in _scenes(0, 100, level=1)) == 2
    assert max(len(s.objects) for s in _scenes(0, 200, level=2)) == 4


def _caption_groups(text: str) -> list[tuple[int, str, str]]:
    """(count, color, shape) for every '<count> [size] <color> <shape(s)>' phrase, read independently of the world."""
    pattern = r"\b(a|an|one|two|three|four) (?:small |large )?(" + "|".join(COLORS) + r") (" + "|".join(SHAPES) + r")s?\b"
    return [(_NUMBERS[n], color, shape) for n, color, shape in re.findall(pattern, text)]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_caption_names_every_object_with_its_count_and_color(seed):
    scene = sample_scene(np.random.default_rng(seed))
    truth: dict[tuple[str, str], int] = {}
    for obj in scene.objects:
        truth[(obj.color, obj.shape)] = truth.get((obj.color, obj.shape), 0) + 1
    said = {(color, shape): count for count, color, shape in _caption_groups(scene.caption.text)}
    assert said == truth, scene.caption.text
    assert len(scene.caption.word_objects) == len(scene.caption.text.split())
    for word, refs in zip(scene.caption.text.split(), scene.caption.word_objects):
        word = word.rstrip(",")
        for i in refs:  # a word that points at an object names its color, shape, size or count
            obj = scene.objects[i]
            assert word in {obj.color, obj.shape, obj.shape + "s", obj.size, *_NUMBERS}, (word, obj)


def test_relation_and_region_words_are_true():
    checked = {"left": 0, "right": 0, "above": 0, "below": 0, "region": 0}
    for scene in _scenes(11, 400):
        text = scene.caption.text
        groups = scene.group_masks()
        if len(groups) == 2:
            words = text.split()
            refs = scene.caption.word_objects
            first = next(r for r in refs if r)  # objects of the first-mentioned group
            second = next(r for r in refs[::-1] if r)
            cx = lambda idx: [scene.objects[i].center[0] for i in idx]  # noqa: E731
            cy = lambda idx: [scene.objects[i].center[1] for i in idx]  # noqa: E731
            if "left" in words:
                assert max(cx(first)) < min(cx(second)), text
                checked["left"] += 1
            if "right" in words:
                assert min(cx(first)) > max(cx(second)), text
                checked["right"] += 1
            if "above" in words:
                assert max(cy(first)) < min(cy(second)), text
                checked["above"] += 1
            if "below" in words:
                assert min(cy(first)) > max(cy(second)), text
                checked["below"] += 1
        elif len(scene.objects) == 1 and re.search(r"(top|bottom|left|right|center|middle)", text):
            where = region_of(*scene.objects[0].center)
            for part in where.split():
                assert part in text or (part == "center" and "middle" in text), (text, where)
            checked["region"] += 1
    assert all(v > 5 for v in checked.values()), checked


def test_to_layout_uses_shape_names_color_phrases_and_mask_boxes():
    for scene in _scenes(5, 30):
        layout = scene.to_layout()
        assert layout.prompt == scene.caption.text
        assert layout.names == [o.shape for o in scene.objects]
        assert layout.boxes == [o.box for o in scene.objects]
        for obj, phrase in zip(scene.objects, layout.phrases):
            assert obj.color in phrase and obj.shape in phrase and phrase.startswith(("a ", "an "))


def test_shape_fill_ratios_match_their_geometry():
    """Circle ~pi/4 of its box, square 1, triangle 1/2, star well below: the detector relies on these."""
    fills = {}
    for shape in SHAPES:
        mask = shape_mask(shape, 32.0, 32.0, 40.0)
        x0, y0, x1, y1 = mask_box(mask)
        fills[shape] = mask.sum() / ((x1 - x0) * (y1 - y0) * 64 * 64)
    assert abs(fills["circle"] - np.pi / 4) < 0.03
    assert fills["square"] > 0.97
    assert abs(fills["triangle"] - 0.5) < 0.04
    assert fills["star"] < 0.45


def test_bad_arguments_name_the_fix():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="curriculum_level"):
        sample_scene(rng, curriculum_level=7)
    with pytest.raises(ValueError, match="max_objects"):
        sample_scene(rng, max_objects=0)
    with pytest.raises(ValueError, match="size"):
        sample_scene(rng, size=16)
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shape_mask("hexagon", 10, 10, 10)
    with pytest.raises(ValueError, match="mask is empty"):
        mask_box(np.zeros((8, 8), dtype=bool))


def test_captions_parse_into_the_scene_and_plan_without_violations():
    """The offline planner reads every caption of the world: same (color, shape) counts, and its layout
    satisfies the caption's relations, regions and sizes (so shapes-world prompts can be planned)."""
    from collections import Counter

    from scenewright.layout.parse import parse_prompt
    from scenewright.layout.plan import plan_layout
    from scenewright.layout.relations import violations

    for scene in _scenes(seed=7, n=150):
        text = scene.caption.text
        spec = parse_prompt(text)
        parsed = Counter()
        for obj in spec.objects:
            colors = [a for a in obj.attributes if a in COLORS]
            parsed[(colors[0] if colors else None, obj.name)] += obj.count
        assert parsed == Counter((o.color, o.shape) for o in scene.objects), (text, spec)
        layout, _ = plan_layout(text)
        assert violations(spec, layout) == [], text
