"""CLIP scores on a tiny open_clip model built from a custom config without pretrained weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scenewright.eval.clip_score import ClipScorer, ae_prompt_parts, imagenet_templates, template_texts
from scenewright.errors import ModelNotAvailableError

TINY = "scenewright-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("clip") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY


@pytest.fixture(scope="module")
def scorer(tiny_name):
    torch.manual_seed(0)
    return ClipScorer.from_pretrained(tiny_name, pretrained=None, batch_size=2, text_batch_size=100)


def images(n=3):
    rng = np.random.default_rng(0)
    return [(rng.random((40, 48, 3)) * 255).astype(np.uint8) for _ in range(n)]


def test_scores_are_deterministic_cosines(scorer):
    ims = images(2)
    a = scorer.full_prompt_similarity(ims, ["a cat and a dog", "a red ball"])
    b = scorer.full_prompt_similarity(ims, ["a cat and a dog", "a red ball"])
    assert a.shape == (2,) and torch.equal(a, b)
    assert bool((a.abs() <= 1 + 1e-6).all())
    # identical images give identical scores; the score is the dot product of the unit embeddings
    same = scorer.full_prompt_similarity([ims[0], ims[0]], ["a cat", "a cat"], templates=None)
    assert same[0] == same[1]
    img, txt = scorer.encode_images([ims[0]]), scorer.encode_texts(["a cat"])
    assert torch.allclose(img.norm(dim=-1), torch.ones(1)) and torch.allclose(same[0], (img * txt).sum())


def test_batch_equals_one_by_one(scorer):
    ims = images(3)  # batch_size=2: batches of 2 and 1; 3 x 80 template texts: batches of 100, 100 and 40
    prompts = ["a cat and a dog", "a bowl with a spoon", "two apples"]
    batched = scorer.full_prompt_similarity(ims, prompts)
    single = torch.cat([scorer.full_prompt_similarity([im], [p]) for im, p in zip(ims, prompts)])
    assert torch.allclose(batched, single, atol=1e-5)
    objects = [["a cat", "a dog"], ["a bowl", "a spoon"], ["an apple"]]
    batched = scorer.min_object_similarity(ims, objects)
    single = torch.cat([scorer.min_object_similarity([im], [o]) for im, o in zip(ims, objects)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_min_object_is_the_minimum_over_objects(scorer):
    ims = images(1)
    pair = scorer.min_object_similarity(ims, [["a cat", "a dog"]])
    cat = scorer.full_prompt_similarity(ims, ["a cat"])
    dog = scorer.full_prompt_similarity(ims, ["a dog"])
    assert torch.allclose(pair, torch.minimum(cat, dog), atol=1e-6)
    assert pair <= cat + 1e-6 and pair <= dog + 1e-6
    assert scorer.min_object_similarity(ims, [["a cat", "a dog", "a car"]]) <= pair + 1e-6  # more objects, never higher
    scores = scorer.ae_scores(ims, "a cat and a dog")
    assert torch.allclose(scores["min_object"], pair) and torch.allclose(scores["full_prompt"], scorer.full_prompt_similarity(ims, ["a cat and a dog"]))


def test_template_ensemble_follows_attend_and_excite():
    templates = imagenet_templates()
    assert len(templates) == 80 and "a photo of a {}." in templates
    texts = template_texts("a cat", templates)
    assert "a photo of a cat." in texts and not any("a a cat" in t for t in texts)
    assert "a photo of the cat." not in texts and "a photo of a cat." in template_texts("a cat", ["a photo of the {}."])
    assert ae_prompt_parts("a cat and a dog") == ["a cat", "a dog"]
    assert ae_prompt_parts("a bowl with a spoon") == ["a bowl", "a spoon"]
    with pytest.raises(ValueError, match="' and ' or ' with '"):
        ae_prompt_parts("a cat")


def test_ensemble_is_the_renormalized_mean_of_template_embeddings(scorer):
    texts = template_texts("a cat", ["a photo of a {}.", "a drawing of a {}."])
    each = scorer.encode_texts(texts)
    mean = each.mean(dim=0)
    expected = mean / mean.norm()
    got = scorer.encode_texts(["a cat"], ["a photo of a {}.", "a drawing of a {}."])[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_bad_inputs_are_rejected(scorer):
    with pytest.raises(ValueError, match="same length"):
        scorer.full_prompt_similarity(images(2), ["a cat"])
    with pytest.raises(ValueError, match="one non-empty list"):
        scorer.min_object_similarity(images(1), ["a cat"])
    with pytest.raises(TypeError, match="list of strings"):
        scorer.encode_texts("a cat")


def test_loading_errors_and_a_local_checkpoint(scorer, tiny_name, tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ClipScorer.from_pretrained("no-such-clip", pretrained=None)
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        ClipScorer.from_pretrained(tiny_name, pretrained=str(tmp_path / "missing.bin"))
    with pytest.raises(ModelNotAvailableError, match="pretrained='/path/to/open_clip_pytorch_model.bin'"):
        ClipScorer.from_pretrained(tiny_name, pretrained="openai")  # no such tag for this model, no internet
    checkpoint = tmp_path / "tiny.pt"
    torch.save(scorer.model.state_dict(), checkpoint)
    loaded = ClipScorer.from_pretrained(tiny_name, pretrained=str(checkpoint))
    ims = images(1)
    assert torch.allclose(loaded.full_prompt_similarity(ims, ["a cat"]), scorer.full_prompt_similarity(ims, ["a cat"]))


def test_geneval_color_classification_plumbing(scorer):
    from PIL import Image

    from scenewright.eval.detection import Detection
    from scenewright.eval.benchmarks.geneval import GENEVAL_COLORS

    image = images(1)[0]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[5:30, 10:40] = True
    dets = [Detection("cat", (0.1, 0.1, 0.8, 0.7), 0.9, mask=mask), Detection("bus", (0.0, 0.5, 0.5, 1.0), 0.8),
            Detection("cat", (0.5, 0.0, 1.0, 0.5), 0.7)]  # fmt: skip
    colored = scorer.color_detections(image, dets)
    assert [(d.name, d.box) for d in colored] == [(d.name, d.box) for d in dets]
    assert all(d.color in GENEVAL_COLORS for d in colored)
    # the first cat, recomputed by hand: its box crop with the pixels outside its mask gray (#999)
    pil = Image.fromarray(image)
    masked = Image.composite(pil, Image.new("RGB", pil.size, "#999"), Image.fromarray(mask.astype(np.uint8) * 255))
    crop = masked.crop((0.1 * 48, 0.1 * 40, 0.8 * 48, 0.7 * 40))
    templates = ["a photo of a {} cat", "a photo of a {}-colored cat", "a photo of a {} object"]
    logits = scorer.encode_images([crop]) @ scorer.encode_texts(list(GENEVAL_COLORS), templates).T
    assert colored[0].color == GENEVAL_COLORS[int(logits.argmax())]
    with pytest.raises(ValueError, match="mask"):
        scorer.color_detections(image, [Detection("cat", (0, 0, 1, 1), 0.9, mask=np.ones((4, 4), dtype=bool))])
