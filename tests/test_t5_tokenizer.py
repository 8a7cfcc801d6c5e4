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


# --- phrase -> T5 token positions ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_and_t5(clip_tokenizer, t5_tokenizer):
    return clip_tokenizer, t5_tokenizer


def _pieces(t5_tokenizer, mapping):
    tokens = t5_tokenizer.convert_ids_to_tokens(t5_tokenizer(mapping.prompt).input_ids)
    return [[tokens[p] for p in group] for group in mapping.token_groups], tokens[mapping.eot_index]


def test_t5_positions_have_no_bos_and_end_at_eos(clip_and_t5):
    from scenewright.synth.t5_tokens import t5_token_groups_for_layout

    mapping = t5_token_groups_for_layout(*clip_and_t5, "a cat and a dog", ["a cat", "a dog"], max_length=512)
    assert mapping.token_groups == [[1], [4]]  # "▁a" is position 0: no BOS before it (CLIP's would be [2], [5])
    assert mapping.eot_index == 5
    assert _pieces(clip_and_t5[1], mapping) == ([["▁cat"], ["▁dog"]], "</s>")


def test_t5_word_pieces_and_clip_rules(clip_and_t5):
    """A word of several ``▁`` pieces grounds on all of them; plurals, attributes, repeats: tokens.py's rules."""
    from scenewright.synth.t5_tokens import t5_token_groups_for_layout
    from scenewright.synth.tokens import token_groups_for_layout

    prompt, phrases = "two zebras next to a red car, at night", ["a zebra", "a zebra", "a red car"]
    mapping = t5_token_groups_for_layout(*clip_and_t5, prompt, phrases, max_length=512, include_attributes=True)
    groups, eos = _pieces(clip_and_t5[1], mapping)
    assert groups == [["▁zebra", "s"], ["▁zebra", "s"], ["▁red", "▁car"]] and eos == "</s>"
    clip = token_groups_for_layout(clip_and_t5[0], prompt, phrases, include_attributes=True)
    clip_tokens = clip_and_t5[0].convert_ids_to_tokens(clip_and_t5[0](prompt).input_ids)
    clip_words = [[clip_tokens[p].replace("</w>", "") for p in g] for g in clip.token_groups]
    assert ["".join(g).replace("▁", "") for g in groups] == ["".join(w) for w in clip_words]  # the same words


def test_missing_phrases_are_appended_and_sd3_offsets_past_the_clip_tokens(clip_and_t5):
    from scenewright.synth.t5_tokens import t5_token_groups_for_layout

    mapping = t5_token_groups_for_layout(*clip_and_t5, "a cat", ["a cat", "a teddy bear"], names=[None, "teddy bear"],
                                         max_length=256, offset=77)  # fmt: skip
    assert mapping.prompt == "a cat| a teddy bear" and mapping.appended == ["a teddy bear"]
    assert mapping.token_groups == [[78], [81, 82]] and mapping.eot_index == 83


def test_phrases_beyond_the_t5_length_are_a_clear_error(clip_and_t5):
    from scenewright.synth.t5_tokens import t5_token_groups_for_layout
    from scenewright.synth.tokens import TokenMappingError

    phrases = ["a cat"] + [f"a {animal}" for animal in ("dog", "horse", "cow", "sheep", "bird", "bear", "zebra")]
    with pytest.raises(TokenMappingError, match=r"beyond the 16-token T5 length .*appended phrases.*fewer phrases"):
        t5_token_groups_for_layout(*clip_and_t5, "a cat", phrases, max_length=16)
    with pytest.raises(TokenMappingError, match="do not occur in the prompt"):
        t5_token_groups_for_layout(*clip_and_t5, "a cat", ["a dog"], max_length=512, missing="error")
    # 511 pieces are read before </s>: a noun at position 511 no longer fits.
    long_prompt = "a " * 511 + "cat"
    with pytest.raises(TokenMappingError, match=r"positions \[511\]"):
        t5_token_groups_for_layout(*clip_and_t5, long_prompt, ["a cat"], max_length=512)
    fits = t5_token_groups_for_layout(*clip_and_t5, "a " * 510 + "cat", ["a cat"], max_length=512)
    assert fits.token_groups == [[510]]
