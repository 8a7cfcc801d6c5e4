"""Phrase -> CLIP token positions, checked against the real SD tokenizer's token strings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenewright.layout.vocabulary import singularize
from scenewright.synth.tokens import (
    APPEND_SEPARATOR,
    TokenMappingError,
    prompt_tokens,
    token_groups_for_layout,
    validate_token_indices,
)


def _texts(tokenizer, mapping) -> list[list[str]]:
    """The token strings each group points at, read back from the encoded prompt."""
    tokens = prompt_tokens(tokenizer, mapping.prompt)
    return [[tokens[p] for p in group] for group in mapping.token_groups]


def test_nouns_map_to_their_tokens_as_diffusers_attend_and_excite_indexes_them(clip_tokenizer):
    # diffusers' A&E docs: "a cat and a frog" -> token_indices [2, 5].
    mapping = token_groups_for_layout(clip_tokenizer, "a cat and a frog", ["a cat", "a frog"])
    assert mapping.token_groups == [[2], [5]]
    assert mapping.eot_index == 6
    ids = clip_tokenizer("a cat and a frog", padding="max_length", max_length=77).input_ids
    assert ids[mapping.eot_index] == clip_tokenizer.eos_token_id and ids[mapping.eot_index - 1] != clip_tokenizer.eos_token_id
    assert mapping.prompt == "a cat and a frog" and mapping.appended == []


def test_multitoken_and_multiword_kinds_get_every_token(clip_tokenizer):
    prompt = "two teddy bears next to a fire hydrant"
    mapping = token_groups_for_layout(clip_tokenizer, prompt, ["a teddy bear", "a teddy bear", "a fire hydrant"])
    texts = _texts(clip_tokenizer, mapping)
    assert texts[0] == texts[1] == ["teddy", "bears"]  # two instances, one mention: shared
    assert "".join(texts[2]) == "firehydrant" and len(texts[2]) >= 3  # "hydrant" is several BPE tokens


def test_repeated_kind_takes_mentions_in_order(clip_tokenizer):
    mapping = token_groups_for_layout(clip_tokenizer, "a cat and a cat", ["a cat", "a cat"])
    assert mapping.token_groups == [[2], [5]]


def test_more_instances_than_mentions_share_the_mentions(clip_tokenizer):
    three = token_groups_for_layout(clip_tokenizer, "three cats on a sofa", ["a cat"] * 3 + ["a sofa"])
    assert three.token_groups[:3] == [[2], [2], [2]] and _texts(clip_tokenizer, three)[3] == ["sofa"]
    mixed = token_groups_for_layout(clip_tokenizer, "a cat and two cats", ["a cat"] * 3)
    assert mixed.token_groups == [[2, 5]] * 3


def test_modifiers_pick_the_matching_mention_and_are_included_on_request(clip_tokenizer):
    prompt = "a red cat and a black cat"
    nouns = token_groups_for_layout(clip_tokenizer, prompt, ["a black cat", "a red cat"])
    assert nouns.token_groups == [[7], [3]]  # the black cat is the second mention although listed first
    with_attrs = token_groups_for_layout(clip_tokenizer, prompt, ["a black cat", "a red cat"], include_attributes=True)
    assert _texts(clip_tokenizer, with_attrs) == [["black", "cat"], ["red", "cat"]]


def test_longer_kind_claims_its_words_first(clip_tokenizer):
    mapping = token_groups_for_layout(clip_tokenizer, "a hot dog and a dog", ["a dog", "a hot dog"])
    assert mapping.token_groups == [[6], [2, 3]]


def test_explicit_names_ground_phrases_the_parser_would_read_differently(clip_tokenizer):
    mapping = token_groups_for_layout(
        clip_tokenizer, "a shiny robot and a tin can", ["a shiny robot", "a tin can"], names=["robot", "tin can"]
    )
    assert _texts(clip_tokenizer, mapping) == [["robot"], ["tin", "can"]]
    with pytest.raises(TokenMappingError, match="`names` has 1 entries for 2 phrases"):
        token_groups_for_layout(clip_tokenizer, "a cat and a dog", ["a cat", "a dog"], names=["cat"])


def test_missing_phrase_is_appended_lmd_style_or_rejected(clip_tokenizer):
    mapping = token_groups_for_layout(clip_tokenizer, "a cat on the grass", ["a cat", "a dog", "a dog"])
    assert mapping.prompt == "a cat on the grass" + APPEND_SEPARATOR + "a dog"
    assert mapping.appended == ["a dog"]
    texts = _texts(clip_tokenizer, mapping)
    assert texts == [["cat"], ["dog"], ["dog"]]
    assert mapping.eot_index == len(clip_tokenizer(mapping.prompt).input_ids) - 1
    with pytest.raises(TokenMappingError, match="'a dog'.*missing='append'"):
        token_groups_for_layout(clip_tokenizer, "a cat on the grass", ["a cat", "a dog"], missing="error")


def test_phrase_beyond_77_tokens_is_an_error_naming_it(clip_tokenizer):
    prompt = "a cat " + "sitting very quietly " * 30 + "next to a dog"
    with pytest.raises(TokenMappingError, match="phrase 'a dog' falls at token positions"):
        token_groups_for_layout(clip_tokenizer, prompt, ["a cat", "a dog"])
    # The cat is inside the window: mapping it alone is fine, and the end token sits at 76.
    mapping = token_groups_for_layout(clip_tokenizer, prompt, ["a cat"])
    assert mapping.token_groups == [[2]] and mapping.eot_index == 76


def test_bad_inputs_raise_clear_errors(clip_tokenizer):
    with pytest.raises(TokenMappingError, match="phrases\\[1\\]"):
        token_groups_for_layout(clip_tokenizer, "a cat", ["a cat", "  "])
    with pytest.raises(TypeError, match="list of strings"):
        token_groups_for_layout(clip_tokenizer, "a cat", "a cat")
    with pytest.raises(ValueError, match="`missing`"):
        token_groups_for_layout(clip_tokenizer, "a cat", ["a cat"], missing="drop")
    empty = token_groups_for_layout(clip_tokenizer, "a cat", [])
    assert empty.token_groups == [] and empty.eot_index == 3


def test_validate_token_indices_lists_the_prompt_tokens_on_error(clip_tokenizer):
    assert validate_token_indices(clip_tokenizer, "a cat and a frog", [2, 5]) == [2, 5]
    for bad in ([2, 6], [0], [-1], [], [True]):
        with pytest.raises(TokenMappingError, match="1: 'a', 2: 'cat', 3: 'and', 4: 'a', 5: 'frog'"):
            validate_token_indices(clip_tokenizer, "a cat and a frog", bad)


NOUNS = ["cat", "dog", "teddy bear", "fire hydrant", "apple", "hot dog", "person", "bench", "wine glass", "mouse"]
ADJECTIVES = ["red", "big", "wooden", "black", "shiny"]
FILLERS = ["and", "next to", "on", "with", ",", "a photo of", "above", "three", "two", "the"]
PLURAL = {"person": "people", "mouse": "mice", "bench": "benches"}


def _plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    return (head + " " if head else "") + PLURAL.get(last, last + "s")


@st.composite
def scenes(draw):
    pieces = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["noun", "filler"]))
        if kind == "filler":
            pieces.append(draw(st.sampled_from(FILLERS)))
        else:
            noun = draw(st.sampled_from(NOUNS))
            adjective = draw(st.sampled_from([""] + ADJECTIVES))
            pieces.append(" ".join(w for w in ("a", adjective, _plural(noun) if draw(st.booleans()) else noun) if w))
    objects = draw(st.lists(st.tuples(st.sampled_from(NOUNS), st.sampled_from([""] + ADJECTIVES)), max_size=5))
    phrases = [" ".join(w for w in ("a", adjective, noun) if w) for noun, adjective in objects]
    return " ".join(pieces), phrases, [noun for noun, _ in objects]


def _word_at(prompt: str, start: int) -> str:
    """The letter run of ``prompt`` around character ``start``."""
    left = re.search(r"[A-Za-z]*$", prompt[:start]).group()
    right = re.match(r"[A-Za-z]*", prompt[start:]).group()
    return (left + right).lower()


@settings(max_examples=150, deadline=None)
@given(scene=scenes(), include_attributes=st.booleans(), pass_names=st.booleans())
def test_fuzz_groups_always_point_at_the_phrase_words(clip_tokenizer, scene, include_attributes, pass_names):
    prompt, phrases, names = scene
    mapping = token_groups_for_layout(
        clip_tokenizer, prompt, phrases, names=names if pass_names else None, include_attributes=include_attributes
    )
    assert mapping.prompt.startswith(prompt) and len(mapping.token_groups) == len(phrases)
    assert set(mapping.appended) <= set(phrases)
    # Independent read-back: the tokenizer's character offsets, position p = offsets[p].
    offsets = clip_tokenizer(mapping.prompt, return_offsets_mapping=True).offset_mapping
    for phrase, name, group in zip(phrases, names, mapping.token_groups):
        assert group and all(0 < p < mapping.eot_index for p in group)
        words = {_word_at(mapping.prompt, offsets[p][0]) for p in group}
        noun_words = {singularize(w) for w in name.split()}
        assert {singularize(w) for w in words} <= {singularize(w) for w in phrase.split()} - {"a"}
        assert noun_words & {singularize(w) for w in words}  # the noun itself is always grounded
