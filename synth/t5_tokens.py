"""Which T5 token positions ground each object, for the maps FLUX.1 and SD3 read on their T5 tokens.

T5's SentencePiece tokens differ from CLIP's: no BOS token (position 0 is the prompt's first piece), ``▁`` marks
a word start and a word may be several pieces (``▁zebra`` ``s``), ``</s>`` ends the prompt, and the length is
FLUX's ``max_sequence_length`` (512 for dev, 256 for schnell) or SD3's (256), not 77.

The grounding rules are :mod:`scenewright.synth.tokens`' (nouns, plurals, repeated kinds, appended phrases),
applied to the same words: words are found as CLIP's pre-tokenizer splits text (letter runs, single digits,
punctuation runs), so the rules run unchanged on CLIP's tokenizer, and each word is then mapped to the T5 pieces
that overlap its characters (the T5 tokenizer's offsets). A phrase beyond the T5 length is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Literal

import regex

from scenewright.errors import InputError

from .tokens import (
    APPEND_SEPARATOR,
    PromptWord,
    TokenMapping,
    TokenMappingError,
    _check_phrases,
    _locate,
    phrase_positions,
)

#: CLIP's pre-tokenizer (openai/CLIP ``simple_tokenizer.py``): the words the grounding rules count.
CLIP_WORD_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def t5_prompt_words(t5_tokenizer, text: str) -> list[PromptWord]:
    """``text``'s CLIP-style words, each with the positions of the T5 pieces overlapping it (0 = first piece)."""
    offsets = t5_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
    words = []
    for match in CLIP_WORD_PATTERN.finditer(text):
        start, end = match.span()
        positions = tuple(i for i, (a, b) in enumerate(offsets) if a < end and b > start)
        words.append(PromptWord(text=match.group().lower(), positions=positions))
    return words


def t5_token_groups_for_layout(
    clip_tokenizer,
    t5_tokenizer,
    prompt: str,
    phrases: Sequence[str],
    *,
    max_length: int,
    names: Sequence[str | None] | None = None,
    missing: Literal["append", "error"] = "append",
    include_attributes: bool = False,
    offset: int = 0,
) -> TokenMapping:
    """Each object's grounding positions among ``prompt``'s T5 tokens, by ``token_groups_for_layout``'s rules.

    ``clip_tokenizer`` finds the words (the pipeline's ``tokenizer``), ``t5_tokenizer`` gives their positions;
    ``max_length`` is the T5 length the model reads (``FluxBackbone.max_sequence_length``). ``offset`` shifts
    every position: SD3's joint attention reads 77 CLIP tokens before the T5 ones, so its T5 maps take 77.
    Raises :class:`TokenMappingError` naming the phrase when it is missing (``missing="error"``), is cut by T5's
    normalization, or falls beyond ``max_length`` (e.g. too many appended phrases).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise TokenMappingError(f"`prompt` must be a non-empty string, got {prompt!r}")
    if missing not in ("append", "error"):
        raise InputError(f"`missing` must be 'append' or 'error', got {missing!r}")
    kinds = _check_phrases(phrases, names)
    clip_words, located, absent = _locate(clip_tokenizer, prompt, phrases, kinds)
    appended = list(dict.fromkeys(phrases[i] for i in absent))
    if appended and missing == "error":
        raise TokenMappingError(
            f"phrase(s) {', '.join(map(repr, appended))} do not occur in the prompt {prompt!r}; mention each object "
            "in the prompt, or pass missing='append' to add them LMD-style"
        )
    if appended:
        prompt = prompt + "".join(APPEND_SEPARATOR + phrase for phrase in appended)
        clip_words, located, absent = _locate(clip_tokenizer, prompt, phrases, kinds)
        if absent:
            phrase = phrases[absent[0]]
            raise TokenMappingError(f"cannot ground phrase {phrase!r} even after appending it to the prompt")
    words = t5_prompt_words(t5_tokenizer, prompt)
    if [w.text for w in words] != [w.text for w in clip_words]:  # our bug, not the user's: say what differed
        t5_texts, clip_texts = [w.text for w in words], [w.text for w in clip_words]
        raise RuntimeError(f"T5 words {t5_texts} do not align with CLIP's {clip_texts}")
    num_tokens = len(t5_tokenizer(prompt, add_special_tokens=False).input_ids)
    groups: list[list[int]] = [[] for _ in phrases]
    for obj in located:
        positions = phrase_positions(words, obj, include_attributes)
        if not positions:
            raise TokenMappingError(f"phrase {obj.phrase!r} has no T5 token: T5's normalization removed its characters")
        beyond = sorted(p for p in positions if p >= max_length - 1)
        if beyond:
            raise TokenMappingError(
                f"phrase {obj.phrase!r} falls at T5 token positions {beyond}, beyond the {max_length}-token T5 length "
                f"(the prompt{' with its appended phrases' if appended else ''} has {num_tokens} tokens, at most "
                f"{max_length - 1} are read before </s>); shorten the prompt, use fewer phrases or raise "
                "max_sequence_length (at most 512)"
            )
        groups[obj.index] = sorted(p + offset for p in positions)
    eot_index = min(num_tokens, max_length - 1) + offset  # </s> follows the prompt's pieces; no BOS before them
    return TokenMapping(prompt=prompt, token_groups=groups, eot_index=eot_index, appended=appended)


def validate_t5_token_indices(t5_tokenizer, prompt: str, token_indices: Sequence[int], max_length: int) -> list[int]:
    """Check explicit A&E-style indices into ``prompt``'s T5 pieces (FLUX: "a cat and a frog" -> 0-based, no BOS)."""
    pieces = t5_tokenizer.convert_ids_to_tokens(t5_tokenizer(prompt, add_special_tokens=False).input_ids)
    end = min(len(pieces), max_length - 1)
    bad = [i for i in token_indices if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < end]
    if not token_indices or bad:
        tokens = ", ".join(f"{i}: {p!r}" for i, p in enumerate(pieces[:end]))
        what = f"{bad} are not piece positions" if bad else "is empty"
        raise TokenMappingError(
            f"`token_indices` {what} for prompt {prompt!r}; on T5 tokens valid positions are 0..{end - 1}, "
            f"its pieces are {{{tokens}}}"
        )
    return [int(i) for i in token_indices]


__all__ = ["CLIP_WORD_PATTERN", "t5_prompt_words", "t5_token_groups_for_layout", "validate_t5_token_indices"]
