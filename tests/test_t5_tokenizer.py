"""The offline T5-style tokenizer: ``▁`` word pieces, no BOS, ``</s>`` appended, T5's special ids, T5's lengths."""

from __future__ import annotations

from collections import Counter

import pytest

from scenewright.synth.tokenizer import build_t5_tokenizer, shipped_prompt_words, t5_unigram_vocab


@pytest.fixture(scope="module")
def t5_tokenizer():
    return build_t5_tokenizer()


@pytest.mark.parametrize("text", ["a cat and a dog", "A photo of 3 red cars, parked on the street!", "zebras"])
def test_round_trip(t5_tokenizer, text):
    ids = t5_tokenizer(text).input_ids
    assert t5_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_ids_no_bos_and_eos_appended(t5_tokenizer):
    assert (t5_tokenizer.pad_token_id, t5_tokenizer.eos_token_id, t5_tokenizer.unk_token_id) == (0, 1, 2)
    assert t5_tokenizer.bos_token_id is None
    ids = t5_tokenizer("a cat and a dog").input_ids
    assert t5_tokenizer.convert_ids_to_tokens(ids) == ["▁a", "▁cat", "▁and", "▁a", "▁dog", "</s>"]
    # Padding to the T5 length pads with <pad> = 0 after </s>, as FLUX's and SD3's encode_prompt ask.
    padded = t5_tokenizer("a cat", padding="max_length", max_length=8).input_ids
    assert padded == ids[:2] + [1, 0, 0, 0, 0, 0]


def test_unseen_words_split_into_word_pieces_and_unknown_characters_are_unk(t5_tokenizer):
    tokens = t5_tokenizer.convert_ids_to_tokens(t5_tokenizer("zebras parked").input_ids)
    assert tokens[0] == "▁zebra" and tokens[1] == "s" and tokens[2].startswith("▁") and tokens[-1] == "</s>"
    assert not any(token.startswith("▁") for token in tokens[3:])  # "parked": one word start, then pieces
    assert t5_tokenizer("ï").input_ids == [t5_tokenizer.convert_tokens_to_ids("▁"), 2, 1]


def test_max_length_truncates_keeping_eos(t5_tokenizer):
    assert t5_tokenizer.model_max_length == 512
    ids = t5_tokenizer("a cat " * 400, truncation=True, max_length=256).input_ids
    assert len(ids) == 256 and ids[-1] == 1
    assert build_t5_tokenizer(model_max_length=77).model_max_length == 77


def test_vocabulary_is_t5_ordered_and_built_from_the_given_words():
    vocab = t5_unigram_vocab(Counter({"cat": 3, "dog": 1}))
    assert [piece for piece, _ in vocab[:5]] == ["<pad>", "</s>", "<unk>", "▁cat", "▁dog"]
    assert vocab[3][1] > vocab[4][1] > -20.0  # the more frequent word scores higher; both beat characters
    tokenizer = build_t5_tokenizer(Counter({"cat": 3, "dog": 1}))
    assert tokenizer.convert_ids_to_tokens(tokenizer("cat dog").input_ids) == ["▁cat", "▁dog", "</s>"]
    assert shipped_prompt_words()["a"] > 100  # the shipped prompts are read
