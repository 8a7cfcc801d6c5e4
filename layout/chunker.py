"""Noun-phrase chunking for the offline parser: tokens -> quantified noun phrases over the known kinds.

A phrase is a run of quantifiers ("three", "a pair of", "a few") and content words up to a boundary word
(a preposition, a verb, a function word); its head is the rightmost known kind (English compounds take their
LAST noun: "a bird feeder" is a feeder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from scenewright.layout.vocabulary import (
    ADJECTIVE_SUFFIXES,
    ADJECTIVES,
    BOUNDARY_WORDS,
    DETERMINERS,
    GROUP_HEADS,
    INVARIANT_NOUNS,
    ING_NOUNS,
    KIND_ALIASES,
    KINDS,
    KNOWN_NOUN_TUPLES,
    MAX_KIND_WORDS,
    META_NOUNS,
    NUMBER_WORDS,
    VAGUE_WORDS,
    is_plural,
    singularize,
)

#: A word (with an apostrophe suffix: "man's") or one punctuation mark.
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


@dataclass
class Quantifier:
    """A quantifier such as 'three', 'a pair of', 'a few', 'the same number of'."""

    text: str
    count: int | None = None  # an exact number
    vague: str | None = None  # a key of VAGUE_COUNTS
    determiner: str | None = None  # 'a', 'the', ...
    row: bool = False  # "a row of"
    same_as_previous: bool = False  # "the same number of"
    pair_of: bool = False
    negated: bool = False  # "no", "zero"


@dataclass
class NounPhrase:
    """A noun phrase found in the text (token span [start, end))."""

    start: int
    end: int
    name: str
    head_plural: bool
    modifiers: list[str]
    quants: list[Quantifier]
    head_word: str
    known: bool
    negated: bool = False
    scene: bool = False
    meta: bool = False
    count: int = 1
    vague: bool = False


def tokenize(text: str) -> list[str]:
    text = text.lower().replace("’", "'").replace("-", " ").replace("_", " ")
    tokens = []
    for tok in _TOKEN_RE.findall(text):
        if tok.endswith("'s"):
            tok = tok[:-2]  # possessive: "a man's hat" -> "a man hat"
        elif "'" in tok:
            tok = tok.split("'")[0]
        if tok:
            tok = tok.rstrip("'")
            if tok:
                tokens.append(tok)
    return tokens


def _match_quantifier(tokens: list[str], i: int) -> tuple[Quantifier, int] | None:
    """A quantifier starting at ``tokens[i]`` and the index after it, or None."""
    t = tokens[i]
    if t not in _QUANT_STARTS and not _is_number(t):
        return None
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    nxt2 = tokens[i + 2] if i + 2 < len(tokens) else ""
    nxt3 = tokens[i + 3] if i + 3 < len(tokens) else ""
    # "the same number of", "an equal number of"
    if t in ("the", "an", "a") and nxt in ("same", "equal") and nxt2 == "number" and nxt3 == "of":
        return Quantifier(" ".join(tokens[i : i + 4]), same_as_previous=True, determiner=t), i + 4
    if t in ("a", "an") and nxt in ("few", "couple", "single", "dozen") and nxt2 != "of":
        if nxt == "few":
            return Quantifier("a few", vague="few", determiner=t), i + 2
        if nxt == "couple":  # "a couple sitting" is two people; "a couple cats" two cats
            if nxt2 in ("", ",", ".") or nxt2 in BOUNDARY_WORDS or nxt2 in _QUANT_STARTS:
                return None
            return Quantifier("a couple", count=2, determiner=t), i + 2
        return Quantifier(f"a {nxt}", count=NUMBER_WORDS[nxt], determiner=t), i + 2
    if t in ("a", "an") and nxt in GROUP_HEADS and nxt2 == "of":
        quant = Quantifier(f"a {nxt} of", determiner=t)
        if nxt in ("pair", "couple"):
            quant.count, quant.pair_of = 2, nxt == "pair"
        elif nxt == "dozen":
            quant.count = 12
        elif nxt in ("lot",):
            quant.vague = "many"
        else:
            quant.vague = "group"
            quant.row = nxt in ("row", "line")
        return quant, i + 3
    if t in ("lots", "dozens", "hundreds", "plenty", "groups", "rows", "piles") and nxt == "of":
        return Quantifier(f"{t} of", vague="many", row=t == "rows"), i + 2
    if t in NUMBER_WORDS and t not in ("single",) or _is_number(t):
        number = int(t) if _is_number(t) else NUMBER_WORDS[t]
        if t in ("twenty", "thirty", "forty", "fifty") and nxt in NUMBER_WORDS and 1 <= NUMBER_WORDS[nxt] <= 9:
            return Quantifier(f"{t} {nxt}", count=number + NUMBER_WORDS[nxt]), i + 2  # "twenty seven"
        if nxt in ("pairs", "pair") and nxt2 == "of":
            return Quantifier(f"{t} {nxt} of", count=number * 2, pair_of=True), i + 3
        if nxt == "of" and t != "dozen":  # "one of the cats" / "two of them": not a count of a new group
            return None
        return Quantifier(t, count=number, negated=number == 0), i + 1
    if t in VAGUE_WORDS:
        if nxt == "of":  # "some of the", "many of them"
            return None
        return Quantifier(t, vague=VAGUE_WORDS[t]), i + 1
    if t == "no" and nxt not in ("one", "longer", "more", "other"):
        return Quantifier("no", negated=True), i + 1
    if t in DETERMINERS:
        if t in ("that", "this") and nxt in BOUNDARY_WORDS:
            return None  # relative pronoun / demonstrative pronoun
        return Quantifier(t, count=DETERMINERS[t], determiner=t), i + 1
    return None


def _is_number(token: str) -> bool:
    """ASCII digits only ('²'.isdigit() is True but int('²') fails), and short enough to be a count."""
    return token.isascii() and token.isdigit() and len(token) <= 6


_QUANT_STARTS = frozenset(
    {*NUMBER_WORDS, *DETERMINERS, *VAGUE_WORDS, "no", "lots", "dozens", "hundreds", "plenty", "groups", "rows", "piles"}
)


@lru_cache(maxsize=65536)
def _is_boundary(tok: str) -> bool:
    if tok in BOUNDARY_WORDS or not tok[0].isalnum():
        return True
    if tok.endswith("ing") and len(tok) > 4 and tok not in ING_NOUNS and tok not in KINDS:
        return True
    if tok.endswith("ly") and len(tok) > 4 and tok not in KINDS and tok not in ("jelly", "belly", "lily", "holly", "family"):
        return True  # adverbs
    return False


def find_head(words: list[str]) -> tuple[int, int, str] | None:
    """The rightmost known kind in ``words``: (start, end, singular name), longest match first."""
    for end in range(len(words), 0, -1):
        for size in range(min(MAX_KIND_WORDS, end), 0, -1):
            span = words[end - size : end]
            key = tuple(span[:-1]) + (singularize(span[-1]),)
            if key in KNOWN_NOUN_TUPLES:
                return end - size, end, " ".join(key)
            if tuple(span) in KNOWN_NOUN_TUPLES:  # invariant plurals listed as kinds: "skis", "scissors"
                return end - size, end, " ".join(span)
    return None


def _compound_at(tokens: list[str], i: int) -> int:
    """Length of a multiword kind starting at ``tokens[i]`` whose first word would end a phrase, else 0."""
    if not _is_boundary(tokens[i]):
        return 0
    for size in range(MAX_KIND_WORDS, 1, -1):
        span = tokens[i : i + size]
        if len(span) == size and tuple(span[:-1]) + (singularize(span[-1]),) in KNOWN_NOUN_TUPLES:
            return size
    return 0


def chunk_tokens(tokens: list[str]) -> list[tuple[int, int, list[Quantifier], list[str]]]:
    """Split tokens into candidate noun phrases: (start, end, quantifiers, content words)."""
    chunks = []
    i, n = 0, len(tokens)
    while i < n:
        start = i
        quants: list[Quantifier] = []
        while i < n:
            matched = _match_quantifier(tokens, i)
            if matched is None:
                break
            quant, i = matched
            quants.append(quant)
        words: list[str] = []
        while i < n and _match_quantifier(tokens, i) is None:
            compound = _compound_at(tokens, i)  # "living room", "parking meter": not a verb + noun
            if compound:
                words.extend(tokens[i : i + compound])
                i += compound
                continue
            if _is_boundary(tokens[i]):
                break
            words.append(tokens[i])
            i += 1
        if quants or words:
            chunks.append((start, i, quants, words))
        if i == start:  # a boundary token: skip it
            i += 1
    return chunks


@lru_cache(maxsize=65536)
def _noun_like(word: str) -> bool:
    """Whether an unknown word can be a noun (not an adjective, participle or adverb by its form)."""
    if not word.isalpha() or len(word) < 3 or word in ADJECTIVES or word in META_NOUNS:
        return False
    if word.endswith("ed") and len(word) > 4:  # participles: "parked", "stuffed" (not "bed", "shed")
        return False
    return not word.endswith(ADJECTIVE_SUFFIXES)


def phrase_from_chunk(start: int, end: int, quants: list[Quantifier], words: list[str], notes: list[str]) -> NounPhrase | None:
    """The noun phrase in a chunk; English compounds take their LAST noun as head ('a bird feeder' is a feeder)."""
    if not words:
        return None
    chunk_words = words
    singular_det = any(q.count == 1 for q in quants) and not any(q.count and q.count > 1 for q in quants)
    # "a lone car parks near ...": after a singular determiner, a trailing -s word is a verb.
    while len(words) > 1 and singular_det and is_plural(words[-1]) and find_head(words[:-1]) is not None:
        words = words[:-1]
    # Words about the picture or a part ("an umbrella set", "the screen on") do not head a phrase.
    while len(words) > 1 and (words[-1] in META_NOUNS or not _noun_like(words[-1])):
        known = find_head(words)
        if known is not None and known[1] == len(words) and known[2] not in META_NOUNS:
            break  # a known kind ends here: "traffic light", "a toy"
        words = words[:-1]
    end -= len(chunk_words) - len(words)  # dropped trailing words belong to the gap after the phrase
    head = find_head(words)
    last = words[-1]
    if head is not None and head[1] < len(words) and _noun_like(last) and find_head([last]) is None:
        head = None  # compound with an unknown last noun: "donut holes", "bird feeder"
    if head is not None:
        h0, h1, name = head
        head_word = words[h1 - 1]
        modifiers = words[:h0]
        known = True
        name = KIND_ALIASES.get(name, name)
    else:
        if not quants and not (len(words) > 1 and find_head(words[:-1]) is not None):
            if any(w.isalpha() and len(w) > 2 for w in words):
                notes.append(f"unrecognized words without a determiner: {' '.join(words)!r}")
            return None
        head_word = last
        if not _noun_like(head_word):
            notes.append(f"no noun found in {' '.join(words)!r}")
            return None
        name = head_word if head_word in INVARIANT_NOUNS else singularize(head_word)
        modifiers = words[:-1]
        known = False
        notes.append(f"unknown object kind {name!r} (not in the vocabulary); kept as written")
    plural = is_plural(head_word) or any(q.count is not None and q.count > 1 for q in quants)
    return NounPhrase(start, end, name, plural, modifiers, quants, head_word, known)
