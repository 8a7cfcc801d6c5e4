"""Relations between the noun phrases of a prompt, read from the words between them.

:func:`read_relations` walks consecutive phrases; the words between a subject and the next phrase name
their relation through a table of cues (:data:`_PAIR_CUES`, earliest match wins). Around that: absolute
regions and rows, places that carry a relation on to their subject, pronouns ("on it") and a sentence-final
support that holds every earlier group (see :mod:`scenewright.layout.parse` for the conventions).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from scenewright.layout.chunker import NounPhrase
from scenewright.layout.spec import ObjectSpec, RelationSpec
from scenewright.layout.vocabulary import IN_SUPPORT_KINDS, REGION_SCENES, SUPPORT_KINDS

_LEFT = r"(?:(?:to|on|at|in) )?(?:the )?left (?:hand )?(?:side )?of"
_RIGHT = r"(?:(?:to|on|at|in) )?(?:the )?right (?:hand )?(?:side )?of"
_PAIR_CUES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("left_of", rf"\b{_LEFT}\b"),
        ("right_of", rf"\b{_RIGHT}\b"),
        ("above", r"\b(?:on top of|on the top of|at the top of|above|over|atop|higher than)\b"),
        ("below", r"\b(?:below|under|beneath|underneath|on the bottom of|at the bottom of|lower than)\b"),
        ("between", r"\bbetween\b"),
        ("bigger_than", r"\b(?:bigger|larger|taller|huger|greater in size) than\b"),
        ("smaller_than", r"\b(?:smaller|tinier|shorter|littler) than\b"),
        ("next_to", r"\b(?:next to|beside|besides|near|nearby|by|alongside|close to|adjacent to|side by side with|"
         r"on (?:the )?side of|at the side of|by the side of)\b"),
    )
)
_ON_CUE = re.compile(r"\b(?:on|onto|upon|sitting on|standing on|lying on|laying on|resting on|perched on)$")
_NO_2D = re.compile(r"\b(?:in front of|behind|in back of|(?:hidden|covered|blocked|obscured|occluded) by)\b")
_REGION_RE = re.compile(
    r"\b(?:on|in|at|to|towards?) (?:the )?(?:very |far )?"
    r"(top|bottom|upper|lower|left|right|middle|center|centre)"
    r"(?: ?(left|right|top|bottom))?(?: (?:hand )?(?:side|corner|part|half|edge|area|portion))?"
    r"(?! of\b)(?! ?(?:side |hand |corner |part |half |edge )?of\b)"
)
_ROW_RE = re.compile(r"\b(?:in a (?:row|line)|side by side|lined up|in a straight line|next to each other|in rows?)\b")
_PRONOUN_CUE = re.compile(r"\b(on top of|on|above|over|under|below|beneath|next to|beside) (?:it|them)\b")
#: The relation a pronoun cue's word names; the others ("on", "over", ...) are "above".
_PRONOUN_RELATIONS = {"under": "below", "below": "below", "beneath": "below", "next to": "next_to", "beside": "next_to"}
_PASSIVE_BY = re.compile(r"\b[a-z]+(?:ed|en) by\b")
_CLAUSE_BREAK = re.compile(r"(?:,|;|\.|\b(?:and|while|which|that|who|where|with|but)\b)")
_EACH_OTHER_RE = re.compile(r"\b(?:each other|one another)\b")
_SIDE_BY_SIDE = re.compile(r"\bside by side\b")
_IN_PLACE = re.compile(r"\b(?:in|on|at|inside|within|into|up in|high in)(?: the| a| an)?$")


def _region(first: str, second: str | None) -> str:
    """The region a match of :data:`_REGION_RE` names: 'top', 'bottom left', 'center', ..."""
    vertical = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
    horizontal = {"left": "left", "right": "right"}
    center = {"middle", "center", "centre"}
    if first in center:
        return "center"
    if second is None:
        return vertical.get(first) or horizontal[first]
    if first in vertical and second in horizontal:
        return f"{vertical[first]} {horizontal[second]}"
    if first in horizontal and second in vertical:
        return f"{vertical[second]} {horizontal[first]}"
    return vertical.get(first) or horizontal.get(first) or "center"


def read_relations(
    phrases: list[NounPhrase],
    tokens: list[str],
    objects: list[ObjectSpec],
    phrase_to_object: dict[int, int],
    notes: list[str],
) -> list[RelationSpec]:
    """Relations read from the words between consecutive phrases (and regions/rows around each).

    The words after each phrase, up to the next one, are read by :data:`_CUE_READERS` (the first that names
    a relation wins); the relation links the phrase's object to the next phrase's object, and a place as the
    next phrase ("in a kitchen") passes the phrase's object on to the relation after the place.
    """
    relations: list[RelationSpec] = []

    def add(rel: RelationSpec) -> None:
        if rel not in relations:
            relations.append(rel)

    live = [k for k, ph in enumerate(phrases) if k in phrase_to_object or ph.scene]

    def words_after(pos: int) -> str:
        """The words after the phrase ``live[pos]``, up to the next live phrase (or the end)."""
        end = phrases[live[pos + 1]].start if pos + 1 < len(live) else len(tokens)
        return " ".join(tokens[phrases[live[pos]].end : end])

    # "a cat on a table under an umbrella", "a cat in the sun under a bench": a relation after a
    # support or a place belongs to the thing on it / in it, unless a clause break intervenes.
    carried: dict[int, int] = {}
    for pos, k in enumerate(live):
        ph = phrases[k]
        nxt = live[pos + 1] if pos + 1 < len(live) else None
        gap = words_after(pos)
        subject = phrase_to_object.get(k)
        if subject is not None:
            before_first = " ".join(tokens[: ph.start]) if pos == 0 else ""
            _regions_and_rows(ph, subject, gap, before_first, nxt, phrase_to_object, objects, add)
        if k in carried and not _CLAUSE_BREAK.search(gap):
            subject = carried[k]
        if subject is None or nxt is None:
            continue
        reference = phrase_to_object.get(nxt)
        gap_after_reference = words_after(pos + 1) if reference is not None else ""
        cue = next((kind for read in _CUE_READERS if (kind := read(gap, gap_after_reference)) is not None), None)
        if cue is None and _NO_2D.search(gap):
            notes.append(f"depth relation ('in front of', 'behind', 'hidden by') for {objects[subject].name!r} has no 2-D position; ignored")
        if cue == "between":
            references = [phrase_to_object[j] for j in live[pos + 1 : pos + 3] if j in phrase_to_object]
            between = _between(subject, references, objects, _joins_next(phrases, live, pos + 1, tokens))
            if between is None:
                notes.append(f"'between' for {objects[subject].name!r} needs two reference objects")
            else:
                add(between)
        elif reference is None:  # a place ("on a beach"): background, not a relation
            place = phrases[nxt]
            if place.scene and _IN_PLACE.search(gap):
                carried[nxt] = subject
                if place.name in REGION_SCENES and not place.modifiers:  # "in the sky": a region
                    add(RelationSpec("at", subject, (), REGION_SCENES[place.name]))  # type: ignore[arg-type]
        elif cue is not None and reference != subject:
            if cue == "above" and (_ON_CUE.search(gap) or "on top of" in gap):
                carried[nxt] = subject  # a relation after the support belongs to what rests on it
            add(RelationSpec(cue, subject, (reference,)))  # type: ignore[arg-type]
    for rel in _pronoun_relations(phrases, tokens, phrase_to_object):
        add(rel)
    for rel in _trailing_support(phrases, tokens, live, objects, phrase_to_object, relations):
        add(rel)
    return relations


def _named_cue(gap: str, gap_after_reference: str) -> str | None:
    """The earliest cue of :data:`_PAIR_CUES` in the gap ('side by side' is a row, 'surrounded by' a passive: no 'by')."""
    return _earliest_cue(_PASSIVE_BY.sub(" ", _ROW_RE.sub(" ", gap)))


def _resting_on_cue(gap: str, gap_after_reference: str) -> str | None:
    """'a cat sitting on a sofa': a gap that ends in 'on' puts the subject above the reference."""
    return "above" if _ON_CUE.search(gap) else None


def _pair_then_cue(gap: str, gap_after_reference: str) -> str | None:
    """'X and Y next to each other': the cue follows the pair that 'and' joins."""
    if gap.strip() not in ("and", ",", "and a", "with"):
        return None
    if not (_EACH_OTHER_RE.search(gap_after_reference) or _SIDE_BY_SIDE.search(gap_after_reference)):
        return None
    return "next_to" if (_earliest_cue(gap_after_reference) or "next_to") in ("next_to", "left_of", "right_of") else None


#: How the words between a subject and the next phrase (and the words after that phrase) name their
#: relation, tried in order; the first reader that names one wins.
_CUE_READERS = (_named_cue, _resting_on_cue, _pair_then_cue)


def _between(subject: int, references: list[int], objects: list[ObjectSpec], reference_joins_next: bool) -> RelationSpec | None:
    """'X between two Ys' (between the instances of one plural group) or 'X between a Y and a Z'; None without two."""
    plural_reference = references and references[0] != subject and objects[references[0]].count > 1
    if plural_reference and not reference_joins_next:
        return RelationSpec("between", subject, (references[0], references[0]))
    if len(references) == 2 and len({subject, *references}) == 3:
        return RelationSpec("between", subject, (references[0], references[1]))
    return None


def _joins_next(phrases: list[NounPhrase], live: list[int], pos: int, tokens: list[str]) -> bool:
    """Whether the phrase at ``live[pos]`` is joined to the next one by 'and' / ',' ('between two cats and a dog')."""
    if pos + 1 >= len(live):
        return False
    gap = tokens[phrases[live[pos]].end : phrases[live[pos + 1]].start]
    return bool(gap) and gap[0] in ("and", ",", "&")


_TRAILING_ON = re.compile(r"\b(?:on|upon|onto|atop|on top of|in)(?: the| a| an| its| their)?$")


def _trailing_support(
    phrases: list[NounPhrase],
    tokens: list[str],
    live: list[int],
    objects: list[ObjectSpec],
    phrase_to_object: dict[int, int],
    relations: list[RelationSpec],
) -> list[RelationSpec]:
    """'two cats to the left of a dog on a sofa': a sentence-final support holds every earlier group (module docstring)."""
    if len(live) < 3 or live[-1] not in phrase_to_object:
        return []
    last = phrases[live[-1]]
    support = phrase_to_object[live[-1]]
    tail = [t for t in tokens[last.end :] if t.isalnum()]
    before = " ".join(tokens[phrases[live[-2]].end : last.start])
    cue = _TRAILING_ON.search(before)
    if objects[support].name not in SUPPORT_KINDS or tail or cue is None:
        return []
    if cue.group(0).split()[0] == "in" and objects[support].name not in IN_SUPPORT_KINDS:
        return []
    start = max((i + 1 for i, t in enumerate(tokens[: last.start]) if t in (".", ";", "!", "?")), default=0)
    earlier = sorted({phrase_to_object[k] for k in live[:-1] if k in phrase_to_object and phrases[k].start >= start})
    related = {r.subject for r in relations if support in r.references} | {
        i for r in relations if r.subject == support for i in r.references
    }
    if len(earlier) < 2:
        return []
    return [RelationSpec("above", g, (support,)) for g in earlier if g != support and g not in related]


def _pronoun_relations(phrases: list[NounPhrase], tokens: list[str], phrase_to_object: dict[int, int]) -> list[RelationSpec]:
    """'a table with two apples on it': 'it' is the object mentioned before."""
    out = []
    for k, ph in enumerate(phrases):
        if k == 0 or k not in phrase_to_object:
            continue
        after = " ".join(tokens[ph.end : phrases[k + 1].start if k + 1 < len(phrases) else len(tokens)])
        m = _PRONOUN_CUE.search(after)
        antecedent = next((phrase_to_object[j] for j in range(k - 1, -1, -1) if j in phrase_to_object), None)
        if m is None or antecedent is None or antecedent == phrase_to_object[k]:
            continue
        kind = _PRONOUN_RELATIONS.get(m.group(1), "above")
        out.append(RelationSpec(kind, phrase_to_object[k], (antecedent,)))  # type: ignore[arg-type]
    return out


def _regions_and_rows(
    ph: NounPhrase,
    subject: int,
    after: str,
    before_first: str,
    nxt: int | None,
    phrase_to_object: dict[int, int],
    objects: list[ObjectSpec],
    add: Callable[[RelationSpec], None],
) -> None:
    """Absolute regions ('on the left', 'in the top right corner') and rows ('in a row') of one phrase.

    A region that comes after a conjunction in the gap belongs to the next phrase
    ("..., and on the right a dog").
    """
    for region_text in (before_first, after):
        for m in _REGION_RE.finditer(region_text):
            owner = subject
            if region_text is after:
                lead = region_text[: m.start()]
                if re.search(r"(?:\band\b|,|;|\.)", lead) and nxt is not None and nxt in phrase_to_object:
                    owner = phrase_to_object[nxt]
            add(RelationSpec("at", owner, (), _region(m.group(1), m.group(2))))  # type: ignore[arg-type]
    if _ROW_RE.search(after) and not _EACH_OTHER_RE.search(after) and objects[subject].count > 1:
        add(RelationSpec("in_row", subject))
    if any(q.row for q in ph.quants) and objects[subject].count > 1:
        add(RelationSpec("in_row", subject))


def _earliest_cue(text: str) -> str | None:
    """The relation of the cue of :data:`_PAIR_CUES` that starts first in ``text``, or None."""
    best: tuple[int, str] | None = None
    for kind, pattern in _PAIR_CUES:
        m = pattern.search(text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), kind)
    return best[1] if best else None
