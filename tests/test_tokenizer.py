"""The offline CLIP tokenizer tokenizes exactly as OpenAI CLIP's own tokenizer (open_clip's copy)."""

from __future__ import annotations

import shutil
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenewright.synth.tokenizer import build_clip_tokenizer

SENTENCES = [
    "a cat and a dog",
    "A photo of 3 red cars, parked on the street!",
    "two teddy bears next to a fire hydrant",
    "An astronaut riding a horse on Mars; 12.5% chance of rain?",
    "hello   world's  cat-dog (it's) [sic] {x} ... naïve café",
    "a ROBOT, a robot and a Robot",
    "1234567890",
    "",
]


@pytest.fixture(scope="module")
def reference():
    """OpenAI CLIP's tokenizer as shipped by open_clip: ids are [49406, ..., 49407, 0, 0, ...]."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def _until_eot(ids: list[int]) -> list[int]:
    return ids[: ids.index(49407) + 1]


@pytest.mark.parametrize("text", SENTENCES)
def test_ids_equal_openai_clip_tokenizer(clip_tokenizer, reference, text):
    ours = clip_tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    ref = reference(text)[0].tolist()  # (77,), zero-padded
    assert len(ours) == 77
    assert ours[0] == 49406
    assert _until_eot(ours) == _until_eot(ref)
    # SD pads with <|endoftext|> (its text encoder was trained so), not with 0 as open_clip does.
    assert all(i == 49407 for i in ours[len(_until_eot(ref)) :])


def test_long_prompt_truncates_to_77_ending_in_eot_like_clip(clip_tokenizer, reference):
    text = " ".join(["a red cube next to a blue sphere"] * 20)
    ours = clip_tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    assert ours == reference(text)[0].tolist()
    assert len(ours) == 77 and ours[-1] == 49407


def test_special_tokens_and_lengths_match_stable_diffusion(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    assert (clip_tokenizer.bos_token_id, clip_tokenizer.eos_token_id, clip_tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert clip_tokenizer.model_max_length == 77


def test_saved_vocab_and_merges_load_back_as_the_same_tokenizer(tmp_path, clip_tokenizer):
    from transformers import CLIPTokenizer

    build_clip_tokenizer(save_dir=tmp_path / "tok")
    # Only CLIP's two files (the hub's slow-tokenizer format), without the fast tokenizer.json.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tmp_path / "tok" / name, legacy / name)
    assert (tmp_path / "tok" / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    for folder in (tmp_path / "tok", legacy):
        loaded = CLIPTokenizer.from_pretrained(folder)
        for text in SENTENCES:
            assert loaded(text, padding="max_length").input_ids == clip_tokenizer(text, padding="max_length").input_ids


# ASCII without '&' (open_clip unescapes HTML entities with ftfy/html; SD's tokenizer does not).
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,;:!?'\"()-_/%#@*+=<>[]{}|~^$\t\n", max_size=120)


@settings(max_examples=150, deadline=None)
@given(text=_TEXT)
def test_fuzz_ids_equal_openai_clip_tokenizer(clip_tokenizer, reference, text):
    ours = clip_tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    assert ours[:len(_until_eot(ours))] == _until_eot(reference(text)[0].tolist())
