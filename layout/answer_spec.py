"""What a model planner's own answer says the prompt asks for: a :class:`~scenewright.layout.spec.PromptSpec` read
from the layout an LLM or local model wrote, so that its plan is judged against its own reading of the text.

The answer names every object instance (``name``, ``phrase``, ``box``), a background and a negative prompt, but no
relations. So the answer gives the objects (one :class:`ObjectSpec` per kind and attributes, counted over its
instances; attributes and size words read from each phrase, as the text parser reads them), its background and its
negative kinds; the relations come from the text's parse, moved onto the answer's objects by kind (and, where two
groups share a kind, by attributes). A relation whose subject or reference the model did not draw cannot be judged
on its layout: it is dropped, and the plan's notes say so, as they say where the model's counts differ from the
text parser's reading.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from scenewright.layout.chunker import tokenize
from scenewright.layout.schema import Layout
from scenewright.layout.spec import ObjectSpec, PromptSpec, RelationSpec
from scenewright.layout.vocabulary import COLORS, KINDS, MATERIALS, SIZE_WORDS, singularize


def phrase_attributes(phrase: str) -> tuple[tuple[str, ...], str | None]:
    """A phrase's color and material words, and its size word (the last one, as the text parser reads it)."""
    words = tokenize(phrase)
    attributes = tuple(w for w in words if w in COLORS or w in MATERIALS)
    size = next((SIZE_WORDS[w] for w in reversed(words) if w in SIZE_WORDS), None)
    return attributes, size


def answer_objects(layout: Layout) -> tuple[ObjectSpec, ...]:
    """The answer's objects as specs: one per (kind, attributes), in first-drawn order, counted over its instances."""
    groups: dict[tuple[str, tuple[str, ...]], ObjectSpec] = {}
    for obj in layout.objects:
        attributes, size = phrase_attributes(obj.phrase)
        key = (obj.name, attributes)
        if key in groups:
            found = groups[key]
            groups[key] = replace(found, count=found.count + 1, size=found.size or size)  # type: ignore[arg-type]
        else:
            groups[key] = ObjectSpec(name=obj.name, count=1, phrase=obj.phrase, attributes=attributes, size=size)  # type: ignore[arg-type]
    return tuple(groups.values())


def _counterpart(text_object: ObjectSpec, objects: tuple[ObjectSpec, ...]) -> int | None:
    """The answer's object standing for the text's: same kind and attributes, else the only one of that kind."""
    same_kind = [i for i, o in enumerate(objects) if o.name == text_object.name]
    exact = [i for i in same_kind if objects[i].attributes == text_object.attributes]
    if exact:
        return exact[0]
    return same_kind[0] if len(same_kind) == 1 else None


def _negative_kinds(negative: str) -> list[str]:
    """The object kinds in a negative prompt ("people, red cars" -> "person", "car"); style words
    ("blurry, low quality") name nothing an image can be checked for, so they are left out."""
    kinds = []
    for term in negative.split(","):
        words = tokenize(term)
        if words:
            kind = " ".join([*words[:-1], singularize(words[-1])])
            kinds += [k for k in (kind, words[-1], singularize(words[-1])) if k in KINDS][:1]
    return kinds


def spec_from_answer(layout: Layout, text_spec: PromptSpec) -> PromptSpec:
    """``layout`` (a model planner's answer) read as a spec; relations and notes from ``text_spec`` (the text's parse).

    An answer with no objects gives no reading of its own: ``text_spec`` is returned as it is.
    """
    if not layout.objects:
        return text_spec
    objects = answer_objects(layout)
    index = {k: _counterpart(o, objects) for k, o in enumerate(text_spec.objects)}
    notes = list(text_spec.notes)
    relations: list[RelationSpec] = []
    for relation in text_spec.relations:
        members = (relation.subject, *relation.references)
        if any(index[m] is None for m in members):
            missing = ", ".join(repr(text_spec.objects[m].phrase) for m in members if index[m] is None)
            notes.append(f"relation {relation.kind} dropped: the planner drew no object for {missing}")
            continue
        moved = replace(relation, subject=index[relation.subject], references=tuple(index[m] for m in relation.references))
        if moved.subject not in moved.references:  # two text groups the answer merged cannot relate to themselves
            relations.append(moved)
    drawn = Counter({k: 0 for k in range(len(objects))})
    for k, i in index.items():
        if i is None:
            notes.append(f"the text asks for {text_spec.objects[k].count} x {text_spec.objects[k].phrase!r}; the planner drew none")
        else:
            drawn[i] += text_spec.objects[k].count
    for i, o in enumerate(objects):
        if drawn[i] and drawn[i] != o.count:
            notes.append(f"the planner drew {o.count} x {o.phrase!r} where the text parser reads {drawn[i]}")
    drawn_kinds = {o.name for o in objects}
    negative = tuple(n for n in dict.fromkeys((*text_spec.negative, *_negative_kinds(layout.negative))) if n not in drawn_kinds)
    return PromptSpec(
        prompt=text_spec.prompt,
        objects=objects,
        relations=tuple(dict.fromkeys(relations)),
        background=layout.background or text_spec.background,
        negative=negative,
        notes=tuple(notes),
    )


__all__ = ["answer_objects", "phrase_attributes", "spec_from_answer"]
