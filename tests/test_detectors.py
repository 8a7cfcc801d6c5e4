"""Open-vocabulary detectors' plumbing on TINY random models built from configs (never the hub)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenewright.eval.boxes import box_iou
from scenewright.eval.detect import DETECTORS, get_detector
from scenewright.eval.detection import Detection
from scenewright.eval.detectors import GroundingDinoDetector, OwlDetector, to_pil
from scenewright.errors import ModelNotAvailableError

TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16)


def tiny_owl(version: int, clip_tokenizer):
    """A seeded OWL-ViT / OWLv2 with 1-layer 16-wide towers; the image processor keeps its class defaults."""
    from transformers import (
        Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor,
        OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor,
    )  # fmt: skip

    config_cls, model_cls, image_cls, processor_cls = (
        (Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor)
        if version == 2
        else (OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor)
    )
    image_processor = image_cls()
    vision = dict(TEXT, image_size=image_processor.size["height"], patch_size=64 if version == 2 else 48)
    torch.manual_seed(0)
    model = model_cls(config_cls(text_config=dict(TEXT, vocab_size=len(clip_tokenizer)), vision_config=vision, projection_dim=16))
    return model.eval(), processor_cls(image_processor=image_processor, tokenizer=clip_tokenizer)


@pytest.fixture(scope="module", params=[1, 2], ids=["owlvit", "owlv2"])
def owl(request, clip_tokenizer):
    return (request.param, *tiny_owl(request.param, clip_tokenizer))


def tiny_grounding_dino():
    """A seeded Grounding DINO (Swin 8-wide, BERT 32-wide, 1+2 layers, 6 queries) and a processor with a tiny vocabulary."""
    from transformers import (
        AutoModelForZeroShotObjectDetection, BertConfig, BertTokenizerFast, GroundingDinoConfig,
        GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig,
    )  # fmt: skip

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "cat", "dog", "teddy", "bear", "red"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    swin = SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], out_indices=[2, 3, 4])
    bert = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    config = GroundingDinoConfig(
        backbone_config=swin, text_config=bert, d_model=32, num_queries=6, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForZeroShotObjectDetection.from_config(config).eval()
    # The class default (shortest edge 800) would make the test slow on a shared CPU; the plumbing is the same.
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def gdino():
    return tiny_grounding_dino()


def image(width=90, height=60, seed=0):
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def assert_valid(detections: list[Detection], names: list[str]):
    assert detections, "threshold 0 must keep boxes"
    for d in detections:
        assert isinstance(d, Detection) and d.name in names
        x0, y0, x1, y1 = d.box
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        assert 0.0 <= d.score <= 1.0
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------------- OWL
def test_owl_names_boxes_scores(owl):
    _, model, processor = owl
    detector = OwlDetector(model, processor, threshold=0.0, nms_threshold=None)
    names = ["cat", "teddy bear"]
    found = detector(image(), names)
    assert_valid(found, names)


def test_owl_matches_transformers_post_processing(owl):
    """Our boxes, labels and scores are transformers' own post-processing, in image-normalized coordinates."""
    version, model, processor = owl
    width, height = 90, 60
    pil = to_pil(image(width, height))
    names = ["cat", "dog"]
    found = OwlDetector(model, processor, threshold=0.0, nms_threshold=None)(pil, names)
    inputs = processor(text=[[f"a photo of a {n}" for n in names]], images=pil, return_tensors="pt",
                       padding="max_length", truncation=True, max_length=16)  # fmt: skip
    with torch.no_grad():
        outputs = model(**inputs)
    side = max(width, height)
    size = (side, side) if version == 2 else (height, width)  # OWLv2 predicts on the padded square
    ref = processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=[size])[0]
    expected = sorted(
        (names[int(label)], round(float(score), 5), tuple(round(v, 4) for v in (b[0] / width, b[1] / height, b[2] / width, b[3] / height)))
        for label, score, b in zip(ref["labels"], ref["scores"], ref["boxes"].clamp(min=0).tolist())
        if min(b[2] / width, 1.0) > b[0] / width and min(b[3] / height, 1.0) > b[1] / height
    )
    got = sorted((d.name, round(d.score, 5), tuple(round(v, 4) for v in d.box)) for d in found)
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    for g, e in zip(got, expected):
        assert np.allclose(g[2], np.clip(e[2], 0, 1), atol=1e-3)


def test_owl_threshold_and_nms(owl):
    _, model, processor = owl
    names = ["cat", "dog"]
    raw = OwlDetector(model, processor, threshold=0.0, nms_threshold=None)(image(), names)
    kept = OwlDetector(model, processor, threshold=0.0, nms_threshold=0.3)(image(), names)
    assert len(kept) <= len(raw)
    for i, a in enumerate(kept):
        assert all(box_iou(a.box, b.box) < 0.3 for b in kept[i + 1 :] if b.name == a.name)
    median = float(np.median([d.score for d in raw]))
    high = OwlDetector(model, processor, threshold=median, nms_threshold=None)(image(), names)
    assert high and all(d.score >= median for d in high) and len(high) < len(raw)


def test_owl_input_forms_and_bad_names(owl):
    _, model, processor = owl
    detector = OwlDetector(model, processor, threshold=0.0, nms_threshold=None)
    array = image()
    as_tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    assert [d.box for d in detector(array, ["cat"])] == [d.box for d in detector(as_tensor, ["cat", "cat"])]
    assert detector(array, []) == []
    with pytest.raises(TypeError, match="list of object names"):
        detector(array, "cat")
    with pytest.raises(ValueError, match="query_template"):
        OwlDetector(model, processor, query_template="a photo")


def test_owl_registered_and_loads_a_saved_folder(owl, tmp_path):
    version, model, processor = owl
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    detector = get_detector("owlv2" if version == 2 else "owlvit", model=str(tmp_path), threshold=0.0, nms_threshold=None)
    direct = OwlDetector(model, processor, threshold=0.0, nms_threshold=None)
    assert [(d.name, d.box) for d in detector(image(), ["cat"])] == [(d.name, d.box) for d in direct(image(), ["cat"])]


# -------------------------------------------------------------- Grounding DINO
def test_grounding_dino_caption_spans():
    text, spans = GroundingDinoDetector.caption(["cat", "teddy bear"])
    assert text == "cat. teddy bear."
    assert [text[a:b] for a, b in spans] == ["cat", "teddy bear"]


def test_grounding_dino_names_and_token_scores(gdino):
    model, processor = gdino
    names = ["cat", "teddy bear"]
    found = GroundingDinoDetector(model, processor, threshold=0.0, nms_threshold=None)(image(), names)
    assert_valid(found, names)
    # each box's score is the max probability over ITS name's tokens: recompute from the raw outputs
    inputs = processor(images=to_pil(image()), text="cat. teddy bear.", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    probs = outputs.logits[0].sigmoid()
    ids = inputs["input_ids"][0].tolist()
    vocab = processor.tokenizer.get_vocab()
    cat_tokens = [ids.index(vocab["cat"])]
    bear_tokens = [ids.index(vocab["teddy"]), ids.index(vocab["bear"])]
    per_name = torch.stack([probs[:, cat_tokens].max(-1).values, probs[:, bear_tokens].max(-1).values], dim=-1)
    expected = sorted(round(float(s), 5) for s in per_name.max(-1).values)
    assert sorted(round(d.score, 5) for d in found) == expected
    for d in found:
        q = int(torch.argmin((per_name.max(-1).values - d.score).abs()))
        assert d.name == names[int(per_name[q].argmax())]


def test_grounding_dino_registered_and_loads_a_saved_folder(gdino, tmp_path):
    model, processor = gdino
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = get_detector("grounding-dino", model=str(tmp_path), threshold=0.0, nms_threshold=None)
    direct = GroundingDinoDetector(model, processor, threshold=0.0, nms_threshold=None)
    assert [(d.name, d.box) for d in loaded(image(), ["dog"])] == [(d.name, d.box) for d in direct(image(), ["dog"])]


# ------------------------------------------------------------------- loading
@pytest.mark.parametrize("name", ["owlv2", "owlvit", "grounding-dino"])
def test_missing_weights_give_an_actionable_error(name, tmp_path):
    assert name in DETECTORS
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        get_detector(name, model=str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotAvailableError, match="huggingface-cli download") as info:
        get_detector(name, model="no-such-org/no-such-detector")
    assert repr(name) in str(info.value)  # the fix names the registry key to pass the folder to
    with pytest.raises(ModelNotAvailableError, match="local folder"):
        get_detector(name, model=str(tmp_path))  # a folder without weights


def test_half_precision_models_run_and_return_floats(clip_tokenizer, gdino):
    """Models in bf16 (as on a GPU in fp16/bf16): pixels follow the model's dtype, scores and boxes come back as floats."""
    model, processor = tiny_owl(2, clip_tokenizer)
    owl = OwlDetector(model.to(torch.bfloat16), processor, threshold=0.0)
    gd_model, gd_processor = tiny_grounding_dino()
    dino = GroundingDinoDetector(gd_model.to(torch.bfloat16), gd_processor, threshold=0.0)
    for detector in (owl, dino):
        found = detector(image(), ["cat", "dog"])
        assert_valid(found, ["cat", "dog"])
        assert all(isinstance(d.score, float) and all(isinstance(v, float) for v in d.box) for d in found)
