"""Which CLIP token positions ground each object: layout phrases -> token groups in the 77-token prompt.

Every attention-control method reads the cross-attention maps of an object's tokens. Positions index
the tokenized prompt as the text encoder sees it: 0 = ``<|startoftext|>``, then one position per BPE
token, then ``<|endoftext|>`` (SD pads with it up to 77).

Rules (documented choices):

- An object is grounded by its noun, all of its BPE tokens ("teddy bear" -> 2 positions,
  "hydrant" may be 2 tokens); Attend-and-Excite (Chefer et al. 2023) and Attention Refocusing
  (Phung et al. 2024) attend to the noun. ``include_attributes=True`` adds the phrase's modifiers
  found just before the noun in the prompt ("red" of "a red car").
- Plurals match singulars ("three cats" grounds each "a cat"), via :func:`scenewright.layout.vocabulary.singularize`.
- Repeated kinds: with at least as many mentions as instances, instances take mentions in order,
  preferring a mention whose modifiers match the phrase ("a cat and a cat": the 1st instance gets
  the 1st "cat", the 2nd the 2nd); with fewer mentions, instances share them ("three cats": all
  three ground on "cats"), as LMD (Lian et al. 2023) and Attention Refocusing do.
- A longer kind claims its words first: in "a hot dog and a dog", "dog" grounds on the second dog.
- A phrase whose noun the prompt never mentions is appended LMD-style (``prompt + "| " + phrase``),
  or rejected with ``missing="error"``. A noun beyond CLIP's 77-token window is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Literal

from scenewright.errors import InputError
from scenewright.layout.parse import name_of_phrase
from scenewright.layout.vocabulary import NUMBER_WORDS, singularize

MAX_LENGTH = 77  # CLIP's context: <|startoftext|> + 75 tokens + <|endoftext|>
MAX_PROMPT_TOKENS = MAX_LENGTH - 2
#: LMD appends a phrase missing from the prompt after a "|" (``get_phrase_indices``, Lian et al. 2023).
APPEND_SEPARATOR = "| "
#: Words in a phrase that never ground an object: articles, possessives, counts.
_NON_ATTRIBUTES = frozenset(
    ("a", "an", "the", "this", "that", "these", "those", "another", "some", "several", "many", "few",
     "each", "every", "his", "her", "their", "its", "my", "your", "our", "of", "and", "or", "with")
) | frozenset(NUMBER_WORDS)  # fmt: skip
#: A modifier is searched at most this many words before its noun, and never across these words.
_ATTRIBUTE_WINDOW = 4
_WINDOW_STOPS = frozenset(("and", "or", "with", "of", "next", "near", "on", "in", "under", "above", "below", "behind"))


class TokenMappingError(InputError):
    """A phrase or token index cannot be located in the prompt; the message names it and the fix."""


@dataclass(frozen=True)
class TokenMapping:
    """The prompt to encode and, per object, the positions of its grounding tokens."""

    prompt: str  # the given prompt, extended with any appended phrases
    token_groups: list[list[int]]  # per object, ascending positions in the 77-token sequence (0 = start token)
    eot_index: int  # position of the (first) <|endoftext|>
    appended: list[str] = field(default_factory=list)  # phrases appended to the prompt, in order


@dataclass(frozen=True)
class PromptWord:
    """One CLIP pre-token (a letter run, one digit or a punctuation run) and its token positions."""

    text: str  # lower-cased
    positions: tuple[int, ...]  # in the 77-token sequence (0 = <|startoftext|>)

    @property
    def key(self) -> str:
        """What a noun is compared by: the singular ("cats" -> "cat")."""
        return singularize(self.text) if self.text.isalpha() else self.text


def prompt_words(tokenizer, text: str) -> list[PromptWord]:
    """``text`` split into CLIP words (tokens up to one ending in ``</w>``), with their positions."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    words: list[PromptWord] = []
    current: list[int] = []
    for position, token in enumerate(tokens, start=1):
        current.append(position)
        if token.endswith("</w>") or position == len(tokens):
            piece = tokenizer.convert_tokens_to_string([tokens[p - 1] for p in current])
            words.append(PromptWord(text=piece.replace("</w>", " ").strip().lower(), positions=tuple(current)))
            current = []
    return words


def prompt_tokens(tokenizer, prompt: str) -> dict[int, str]:
    """Position -> token text of the prompt as encoded (diffusers' A&E ``get_indices``), specials included."""
    ids = tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    eot = _eot_index(tokenizer, prompt)
    return {i: tokens[i].replace("</w>", "") for i in range(eot + 1)}


def _eot_index(tokenizer, prompt: str) -> int:
    """Position of <|endoftext|>: right after the prompt's tokens, at most 76 (truncated prompts)."""
    n = len(tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False).input_ids)
    return min(n, MAX_PROMPT_TOKENS) + 1


def _occurrences(words: list[PromptWord], noun: list[str], claimed: set[int]) -> list[int]:
    """Start indices (into ``words``) of the noun's word sequence, plurals matching singulars."""
    keys = [singularize(w) if w.isalpha() else w for w in noun]
    n = len(keys)
    found = []
    for start in range(len(words) - n + 1):
        span = range(start, start + n)
        if all(words[start + k].key == keys[k] for k in range(n)) and not claimed.intersection(span):
            found.append(start)
    return found


def _noun_words(tokenizer, phrase: str, name: str | None) -> list[list[str]]:
    """Candidate word sequences naming the object: its kind, then the phrase's last content word."""
    candidates = []
    kind = name if name else name_of_phrase(phrase)
    kind_words = [w.text for w in prompt_words(tokenizer, kind)]
    if kind_words:
        candidates.append(kind_words)
    content = [w.text for w in prompt_words(tokenizer, phrase) if w.text.isalnum() and w.text not in _NON_ATTRIBUTES]
    # A kind the parser renamed ("motorbike" -> "motorcycle") is found by the phrase's own word; never by a
    # part of the kind ("dog" of "hot dog"), which would steal another object's mention.
    if content and singularize(content[-1]) not in {singularize(w) for w in kind_words}:
        candidates.append([content[-1]])
    return candidates


def _attribute_words(tokenizer, phrase: str, noun: list[str]) -> list[str]:
    """The phrase's modifiers: its alphanumeric words before the noun that are not articles or counts."""
    words = [w.text for w in prompt_words(tokenizer, phrase)]
    noun_keys = [singularize(w) for w in noun]
    end = len(words)
    for start in range(len(words) - len(noun) + 1):
        if [singularize(w) for w in words[start : start + len(noun)]] == noun_keys:
            end = start
            break
    return [w for w in words[:end] if w.isalnum() and w not in _NON_ATTRIBUTES and singularize(w) not in noun_keys]


def phrase_positions(words, obj, include_attributes: bool) -> set[int]:
    """Token positions of a located phrase: its noun's words at every mention (and their attributes' words).

    ``words`` are a tokenization's words (CLIP here, T5 in :mod:`scenewright.synth.t5_tokens`), so the same
    grounding rule gives both tokenizers' positions.
    """
    positions: set[int] = set()
    for start in obj.mentions:
        for word in words[start : start + len(obj.noun)]:
            positions.update(word.positions)
        if include_attributes:
            positions.update(_attribute_positions(words, start, obj.attributes))
    return positions


def _attribute_positions(words: list[PromptWord], start: int, attributes: list[str]) -> list[int]:
    """Positions of ``attributes`` among the few words before the noun at ``start`` (not across a stop)."""
    positions: list[int] = []
    wanted = set(attributes)
    for k in range(start - 1, max(-1, start - 1 - _ATTRIBUTE_WINDOW), -1):
        word = words[k].text
        if word in _WINDOW_STOPS or not (word.isalnum() or word == "-"):
            break
        if word in wanted:
            positions.extend(words[k].positions)
    return positions


@dataclass
class _Object:
    index: int
    phrase: str
    noun: list[str]  # the matched noun's words
    attributes: list[str]
    mentions: list[int] = field(default_factory=list)  # assigned start indices into the prompt's words


def _assign(words: list[PromptWord], objects: list[_Object], occurrences: list[int]) -> None:
    """Give each object of one kind its mention(s) (rules in the module docstring)."""
    def matches(obj: _Object, start: int) -> bool:
        return bool(obj.attributes) and len(_attribute_positions(words, start, obj.attributes)) > 0

    if len(objects) <= len(occurrences):
        free = list(occurrences)
        for obj in objects:
            preferred = [s for s in free if matches(obj, s)]
            choice = preferred[0] if preferred else free[0]
            obj.mentions = [choice]
            free.remove(choice)
    else:
        for obj in objects:
            preferred = [s for s in occurrences if matches(obj, s)]
            obj.mentions = preferred or list(occurrences)


def _locate(
    tokenizer, prompt: str, phrases: Sequence[str], names: Sequence[str | None]
) -> tuple[list[PromptWord], list[_Object], list[int]]:
    """Match every phrase's noun in the prompt; returns the words, the located objects and missing indices."""
    words = prompt_words(tokenizer, prompt)
    candidates = [_noun_words(tokenizer, p, n) for p, n in zip(phrases, names)]
    # Group instances by kind; longer kinds first so "hot dog" claims its "dog" before "dog" looks.
    kinds: dict[tuple[str, ...], list[int]] = {}
    for i, cands in enumerate(candidates):
        key = tuple(singularize(w) for w in cands[0]) if cands else (phrases[i].lower(),)
        kinds.setdefault(key, []).append(i)
    claimed: set[int] = set()
    located: list[_Object] = []
    missing: list[int] = []
    for key in sorted(kinds, key=len, reverse=True):
        members = kinds[key]
        noun, occurrences = [], []
        for cand in candidates[members[0]]:
            occurrences = _occurrences(words, cand, claimed)
            if occurrences:
                noun = cand
                break
        if not occurrences:
            missing.extend(members)
            continue
        objects = [_Object(i, phrases[i], noun, _attribute_words(tokenizer, phrases[i], noun)) for i in members]
        _assign(words, objects, occurrences)
        located.extend(objects)
        for start in occurrences:
            claimed.update(range(start, start + len(noun)))
    return words, located, sorted(missing)


def _check_phrases(phrases: Sequence[str], names: Sequence[str | None] | None) -> list[str | None]:
    if isinstance(phrases, str):
        raise TypeError(f"`phrases` must be a list of strings, one per object, got the string {phrases!r}")
    for k, phrase in enumerate(phrases):
        if not isinstance(phrase, str) or not phrase.strip():
            raise TokenMappingError(f"`phrases[{k}]` is {phrase!r}; give each object a non-empty phrase such as 'a cat'")
    if names is None:
        return [None] * len(phrases)
    if len(names) != len(phrases):
        raise TokenMappingError(f"`names` has {len(names)} entries for {len(phrases)} phrases; give one kind per phrase")
    return list(names)


def token_groups_for_layout(
    tokenizer,
    prompt: str,
    phrases: Sequence[str],
    *,
    names: Sequence[str | None] | None = None,
    missing: Literal["append", "error"] = "append",
    include_attributes: bool = False,
) -> TokenMapping:
    """Each object's grounding token positions in ``prompt`` (module docstring has the rules).

    ``phrases`` are the layout's per-instance phrases ("a red car"); ``names`` their kinds
    ("car", "teddy bear": give them for multiword kinds; by default read from the phrase with
    :func:`scenewright.layout.parse.name_of_phrase`). Raises :class:`TokenMappingError` naming the phrase when
    it is missing (``missing="error"``) or falls beyond the 77-token window.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise TokenMappingError(f"`prompt` must be a non-empty string, got {prompt!r}")
    if missing not in ("append", "error"):
        raise InputError(f"`missing` must be 'append' or 'error', got {missing!r}")
    kinds = _check_phrases(phrases, names)
    words, located, absent = _locate(tokenizer, prompt, phrases, kinds)
    appended: list[str] = []
    if absent and missing == "error":
        listed = ", ".join(repr(phrases[i]) for i in absent)
        raise TokenMappingError(
            f"phrase(s) {listed} do not occur in the prompt {prompt!r}; mention each object in the prompt, "
            "or pass missing='append' to add them LMD-style"
        )
    if absent:
        for i in absent:
            if phrases[i] not in appended:
                appended.append(phrases[i])
        prompt = prompt + "".join(APPEND_SEPARATOR + p for p in appended)
        words, located, absent = _locate(tokenizer, prompt, phrases, kinds)
        if absent:  # the phrase's words tokenize differently next to the separator: cannot ground it
            raise TokenMappingError(f"cannot ground phrase {phrases[absent[0]]!r} even after appending it to the prompt")
    groups: list[list[int]] = [[] for _ in phrases]
    for obj in located:
        groups[obj.index] = sorted(phrase_positions(words, obj, include_attributes))
    for k, group in enumerate(groups):
        beyond = [p for p in group if p > MAX_PROMPT_TOKENS]
        if beyond:
            raise TokenMappingError(
                f"phrase {phrases[k]!r} falls at token positions {beyond}, beyond CLIP's {MAX_LENGTH}-token window "
                f"(the prompt has {words[-1].positions[-1]} tokens, at most "
                f"{MAX_PROMPT_TOKENS} are read); shorten the prompt or mention the object earlier"
            )
    return TokenMapping(prompt=prompt, token_groups=groups, eot_index=_eot_index(tokenizer, prompt), appended=appended)


def validate_token_indices(tokenizer, prompt: str, token_indices: Sequence[int]) -> list[int]:
    """Check explicit A&E-style indices (into the tokenized prompt, e.g. "a cat and a frog" -> [2, 5])."""
    eot = _eot_index(tokenizer, prompt)
    bad = [i for i in token_indices if isinstance(i, bool) or not isinstance(i, Integral) or not 0 < i < eot]
    if not token_indices or bad:
        tokens = ", ".join(f"{i}: {t!r}" for i, t in prompt_tokens(tokenizer, prompt).items() if 0 < i < eot)
        what = f"{bad} are not word positions" if bad else "is empty"
        raise TokenMappingError(
            f"`token_indices` {what} for prompt {prompt!r}; valid positions are 1..{eot - 1}, "
            f"its tokens are {{{tokens}}}"
        )
    return [int(i) for i in token_indices]


__all__ = [
    "APPEND_SEPARATOR",
    "PromptWord",
    "TokenMapping",
    "TokenMappingError",
    "prompt_tokens",
    "prompt_words",
    "token_groups_for_layout",
    "validate_token_indices",
]
