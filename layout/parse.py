"""Offline prompt parser: free text -> :class:`scenewright.layout.spec.PromptSpec`, with no model.

A rule-based reader in three parts: :mod:`scenewright.layout.vocabulary` (the object kinds: the 80
COCO classes, their common synonyms and everyday objects; scenery, attributes, numbers, plurals),
:mod:`scenewright.layout.chunker` (noun phrases) and :mod:`scenewright.layout.relation_reader` (the
relations between them); :func:`parse_prompt` composes them. It reads what layout benchmarks ask for:
counts, attributes, sizes, pairwise and absolute positions, negation and the scene. It never raises
on text; what it cannot place is reported in ``PromptSpec.notes``.

Conventions (documented choices, not benchmark lookups):

- Vague quantities get fixed counts: "a few"/"several"/"some"/"multiple" + plural -> 3,
  "a group/herd/row of" -> 4, "many"/"lots of"/"numerous" -> 6, a bare plural ("apples") -> 2.
  A count comparison ("the number of X is more than that of Y") resolves a vague count so
  that the comparison holds (NSR-1K, Feng et al. 2023, phrases its comparison prompts so).
- Following LMD (Lian et al. 2023), style prefixes ("A realistic photo of") and places
  ("on a beach", "in a kitchen") are the background, never objects; furniture ("a sofa",
  "a table") is an object; "without X" / "no X" puts X in ``negative`` and not in ``objects``.
- "X on Y" (Y an object) is read as X above Y; where Y is a supporting surface
  (:data:`~scenewright.layout.vocabulary.SUPPORT_KINDS`: a sofa, a table, a bed, ...) the offline planner rests X on Y
  (X's bottom edge inside Y's upper part). "in front of"/"behind" have no 2-D meaning
  and are noted, not guessed.
- A trailing support phrase supports everything before it: when the sentence ends with
  "on/in/upon a Y" (Y in :data:`~scenewright.layout.vocabulary.SUPPORT_KINDS`) after two or more object groups, every earlier
  group of the sentence is "above" Y, not only the last one ("two cats to the left of a dog on
  a sofa": the cats and the dog are all on the sofa). Attaching Y to the last object alone would
  put the cats beside a sofa the dog sits on; making Y the background (the issue's own reading)
  would drop an object that NSR-1K's ground truth boxes ("a cat lays down next to a laptop on a
  bed" boxes the bed), so Y stays an object that supports the whole row. A place noun ("on a
  beach", "in a kitchen") stays the background as before.
- "in the sky" / "in the air" is a region, not a background: the subject is "at" the top
  (:data:`~scenewright.layout.vocabulary.REGION_SCENES`), and a relation after it still belongs to the subject ("five balloons
  in the sky above a house").
- "X between two Ys" (one plural reference) is ``between`` with ``references=(Y, Y)``: X lies
  between the instances of Y (see :func:`scenewright.layout.relations.relation_holds`).
"""

from __future__ import annotations

import re
from dataclasses import replace

from scenewright.layout.chunker import NounPhrase, Quantifier, chunk_tokens, find_head, phrase_from_chunk, tokenize
from scenewright.layout.relation_reader import read_relations
from scenewright.layout.spec import ObjectSpec, PromptSpec
from scenewright.layout.vocabulary import (
    BARE_PLURAL_COUNT,
    COLORS,
    DETERMINERS,
    LOCATIVES,
    MATERIALS,
    META_NOUNS,
    PLURALE_TANTUM,
    REGION_SCENES,
    ROOMS,
    SCENE_NOUNS,
    SIZE_WORDS,
    VAGUE_COUNTS,
    singularize,
)

#: A leading style prefix ("A realistic photo of"): the background's style, never an object.
_STYLE_RE = re.compile(
    r"^\s*(?:(?:this|it) is |here is |here are |there is |there are )?"
    r"((?:an? |the )?(?:[a-z]+[ -]){0,3}?"
    r"(?:photo|photograph|image|picture|painting|drawing|illustration|rendering|render|view|shot|"
    r"sketch|close[ -]?up|closeup|portrait|snapshot|depiction|cartoon|artwork|pic))"
    r"\s+(?:of|showing|depicting|with|that shows)\s+"
)
_STYLE_MEDIA = frozenset(
    ("a", "an", "the", "photo", "photograph", "image", "picture", "painting", "drawing", "illustration",
     "rendering", "render", "view", "shot", "sketch", "close", "up", "closeup", "close-up", "portrait",
     "snapshot", "depiction", "cartoon", "artwork", "pic")
)  # fmt: skip
#: "the number of X is more than that of Y" (NSR-1K's count comparisons).
_COUNT_CMP_RE = re.compile(
    r"(?:,|;|\band\b|\bwhere\b|\bwhile\b)?\s*the number of ([a-z ]+?) (?:is|are) "
    r"(more|greater|larger|higher|bigger|less|fewer|smaller|lower) than (?:that of |the number of )?(?:the )?([a-z ]+?)"
    r"(?=[,.;!?]|$)"
)


def _strip_style(text: str) -> tuple[str, str]:
    """Remove a leading 'A realistic photo of' and return (style prefix, rest)."""
    match = _STYLE_RE.match(text)
    if not match:
        return "", text
    return match.group(1).strip(), text[match.end() :]


def _count_comparisons(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Extract 'the number of X is more than that of Y' clauses: (text without them, [(X, '>'|'<', Y)])."""
    found = []
    for m in _COUNT_CMP_RE.finditer(text):
        op = "<" if m.group(2) in ("less", "fewer", "smaller", "lower") else ">"
        found.append((m.group(1).strip(), op, m.group(3).strip()))
    return _COUNT_CMP_RE.sub(" ", text), found


def _phrase_text(modifiers: list[str], name: str) -> str:
    """'a red apple' for one instance; the article follows the first sound-ish letter."""
    words = [*modifiers, name]
    if name in PLURALE_TANTUM:  # scissors, sunglasses: no singular article
        return " ".join(words)
    first = words[0]
    vowel = first[0] in "aeiou" and not first.startswith(("uni", "use", "usu", "one", "eu", "uk")) or first in (
        "hour", "honest", "heir", "8", "11", "18")
    return ("an " if vowel else "a ") + " ".join(words)


def _resolve_count(ph: NounPhrase, previous: NounPhrase | None, notes: list[str]) -> None:
    """The phrase's instance count from its quantifiers; vague ones get (noted) :data:`~.vocabulary.VAGUE_COUNTS`."""
    count: int | None = None
    vague: str | None = None
    for q in ph.quants:
        if q.negated:
            ph.negated = True
        if q.same_as_previous and previous is not None:
            count = previous.count
        if q.count is not None:
            count = q.count
        if q.vague is not None and count is None:
            vague = q.vague
    if ph.negated:
        return
    if count is not None and any(q.pair_of for q in ph.quants) and ph.head_word in PLURALE_TANTUM | {"glasses"}:
        count //= 2  # "a pair of scissors" is one object
    if count is None and vague is not None:
        if vague == "some" and not ph.head_plural:
            count = 1  # "some water", "some bread"
        else:
            count, ph.vague = VAGUE_COUNTS[vague], True
            quant = next(q.text for q in ph.quants if q.vague)
            notes.append(f"'{quant} {ph.head_word}' has no number; read as {count}")
    if count is None:
        if ph.head_plural:
            count, ph.vague = BARE_PLURAL_COUNT, True
            notes.append(f"'{ph.head_word}' has no number; read as {count}")
        else:
            count = 1
    ph.count = max(1, count)


def _apply_comparisons(phrases: list[NounPhrase], comparisons: list[tuple[str, str, str]], notes: list[str]) -> None:
    """Make vague counts satisfy 'the number of X is more/less than that of Y'."""
    for left_text, op, right_text in comparisons:
        left = _find_named(phrases, left_text)
        right = _find_named(phrases, right_text)
        if left is None or right is None:
            notes.append(f"count comparison between {left_text!r} and {right_text!r}: object not found")
            continue
        more = op == ">"
        if right.vague:  # explicit numbers are never changed; a vague side is chosen to agree
            right.count = max(1, left.count - 1) if more else left.count + 1
            if more and left.count <= 1 and left.vague:
                left.count = right.count + 1
            notes.append(f"count of {right.name!r} set to {right.count} so that {left_text!r} {op} {right_text!r}")
        elif left.vague:
            left.count = right.count + 1 if more else max(1, right.count - 1)
            notes.append(f"count of {left.name!r} set to {left.count} so that {left_text!r} {op} {right_text!r}")
        if (left.count > right.count) != more or left.count == right.count:
            notes.append(f"count comparison {left_text!r} {op} {right_text!r} could not be satisfied")


def _find_named(phrases: list[NounPhrase], text: str) -> NounPhrase | None:
    words = text.split()
    head = find_head(words)
    name = head[2] if head else (singularize(words[-1]) if words else "")
    for ph in phrases:
        if ph.name == name and not ph.negated and not ph.scene:
            return ph
    return None


def parse_prompt(text: str) -> PromptSpec:
    """Parse free text into a :class:`PromptSpec` (objects, counts, relations, scene, negation).

    Never raises on any string; what it cannot interpret is listed in ``notes``.
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}; pass the prompt text")
    notes: list[str] = []
    lowered = " ".join(text.lower().replace("’", "'").split())
    style, body = _strip_style(lowered)
    body, comparisons = _count_comparisons(body)
    tokens = tokenize(body)
    phrases = _find_phrases(tokens, notes)
    _mark_negation(phrases, tokens)
    _apply_comparisons(phrases, comparisons, notes)
    objects, phrase_to_object, negative, scenes = _build_objects(phrases, notes)
    relations = read_relations(phrases, tokens, objects, phrase_to_object, notes)
    if not objects and not negative:
        notes.append("no objects found")
    return PromptSpec(
        prompt=text,
        objects=tuple(objects),
        relations=tuple(relations),
        background=_background(style, scenes),
        negative=tuple(negative),
        notes=tuple(notes),
    )


def _find_phrases(tokens: list[str], notes: list[str]) -> list[NounPhrase]:
    """Noun phrases with resolved counts; scene phrases flagged, phrases about the picture dropped."""
    phrases = [ph for chunk in chunk_tokens(tokens) if (ph := phrase_from_chunk(*chunk, notes)) is not None]
    previous: NounPhrase | None = None
    for ph in phrases:
        ph.scene = ph.name in SCENE_NOUNS and not _scene_as_object(ph, tokens)
        ph.meta = ph.name in META_NOUNS
        _resolve_count(ph, previous, notes)
        if not ph.scene and not ph.meta:
            previous = ph
    return [ph for ph in phrases if not ph.meta]


def _mark_negation(phrases: list[NounPhrase], tokens: list[str]) -> None:
    """'without X', 'with no X', and lists continuing it ('without cats or dogs', 'without cats and dogs')."""
    for k, ph in enumerate(phrases):
        before = tokens[phrases[k - 1].end if k else 0 : ph.start]
        if before and before[-1] in ("without", "not", "nor", "excluding", "except"):
            ph.negated = True
        elif k and phrases[k - 1].negated and before in (["or"], [","], [",", "or"], ["nor"]):
            ph.negated = True
        elif k and phrases[k - 1].negated and before == ["and"] and not ph.quants:
            ph.negated = True


def _build_objects(
    phrases: list[NounPhrase], notes: list[str]
) -> tuple[list[ObjectSpec], dict[int, int], list[str], list[NounPhrase]]:
    """One ObjectSpec per kind-and-attributes; returns (objects, phrase -> object, negative kinds, scenes).

    "the X" after an X refers back to it. Groups are told apart only by their attributes
    (:func:`scenewright.layout.relations.group_members`), so a second mention of the same kind with the same
    attributes joins the first: counted again when it is counted ("a dog and another dog"),
    otherwise a reference back to it ("cats ... cats").
    """
    objects: list[ObjectSpec] = []
    phrase_to_object: dict[int, int] = {}
    negative: list[str] = []
    scenes: list[NounPhrase] = []
    for k, ph in enumerate(phrases):
        if ph.negated:
            if ph.name not in negative:
                negative.append(ph.name)
            continue
        if ph.scene:
            scenes.append(ph)
            continue
        attributes = tuple(w for w in ph.modifiers if w in COLORS or w in MATERIALS)
        size = next((SIZE_WORDS[w] for w in reversed(ph.modifiers) if w in SIZE_WORDS), None)
        definite = any(q.determiner in ("the", "this", "that", "these", "those") for q in ph.quants)
        is_reference = definite and not any(q.count is not None or q.vague for q in ph.quants)
        earlier = [i for i, o in enumerate(objects) if o.name == ph.name]
        same = [i for i in earlier if (is_reference and not attributes) or objects[i].attributes == attributes]
        if same:
            target = same[-1]
            phrase_to_object[k] = target
            if size and objects[target].size is None:
                objects[target] = replace(objects[target], size=size)
            if not is_reference and any(q.count is not None for q in ph.quants):
                total = objects[target].count + ph.count
                objects[target] = replace(objects[target], count=total)
                notes.append(f"{ph.name!r} is mentioned twice; counted as {total}")
            continue
        phrase_to_object[k] = len(objects)
        objects.append(
            ObjectSpec(
                name=ph.name,
                count=ph.count,
                phrase=_phrase_text(ph.modifiers, ph.name),
                attributes=attributes,
                size=size,  # type: ignore[arg-type]
            )
        )
    kept = {o.name for o in objects}
    for name in negative:
        if name in kept:  # "a dog ... no dogs": the object asked for wins over its negation
            notes.append(f"{name!r} is both asked for and negated; kept as an object")
    return objects, phrase_to_object, [n for n in negative if n not in kept], scenes


def _scene_as_object(ph: NounPhrase, tokens: list[str]) -> bool:
    """'a yellow sun and a blue sky' draws the sun and the sky; 'on a beach' / 'in a white kitchen' are the scene.

    A place noun is an object only when it carries a color or material and no locative
    preposition introduces it, and it is not a room.
    """
    if ph.name in ROOMS or ph.name == "scene":
        return False
    if not any(w in COLORS or w in MATERIALS for w in ph.modifiers):
        return False
    before = tokens[ph.start - 1] if ph.start > 0 else ""
    return before not in LOCATIVES


def _background(style: str, scenes: list[NounPhrase]) -> str:
    """LMD-style background: 'A realistic scene', or the style plus the place ('A photo of a beach')."""
    places = [s for s in scenes if s.name != "scene" and s.name not in REGION_SCENES]
    style_words = [w for w in style.replace("-", " ").split() if w not in _STYLE_MEDIA]
    if places:
        place = _phrase_text(places[0].modifiers, places[0].name)
        if style:
            head = style if style.split()[0] in ("a", "an", "the") else f"a {style}"
            text = f"{head} of {place}"
        else:
            text = place
    elif style_words:
        text = "a " + " ".join(style_words) + " scene"
    else:
        return ""
    return text[0].upper() + text[1:]


def name_of_phrase(phrase: str) -> str:
    """The singular object kind a phrase names: 'a red apple' -> 'apple', 'two teddy bears' -> 'teddy bear'."""
    tokens = tokenize(phrase)
    notes: list[str] = []
    for start, end, quants, words in chunk_tokens(tokens):
        # A peer's phrase is one object even without a determiner ("red apple"), so supply one.
        ph = phrase_from_chunk(start, end, quants or [Quantifier("a", count=1)], words, notes)
        if ph is not None:
            return ph.name
    words = [w for w in tokens if w.isalnum() and w not in DETERMINERS]
    if words:
        return singularize(words[-1])
    return " ".join(phrase.split()).lower() or phrase
