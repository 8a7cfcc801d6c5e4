"""What a prompt asks for: objects with counts, attributes and sizes, and relations.

The offline parser (`scenewright.layout.parse`) turns text into a :class:`PromptSpec`; the offline
planner places boxes that satisfy it; the geometry checker re-verifies it after every
repair; the evaluators score layouts and images against it. One representation for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RelationKind = Literal[
    "left_of",  # subject's centre is left of every reference's centre
    "right_of",
    "above",  # subject's centre is above (smaller y) every reference's centre
    "below",
    "next_to",  # side by side, horizontally close
    "between",  # subject's centre lies between the two references' centres (horizontally)
    "in_row",  # the subject's instances share a horizontal line, ordered left to right
    "at",  # subject placed in an absolute region named by `where`
    "bigger_than",  # subject's box area larger than each reference's
    "smaller_than",
]

#: Absolute regions understood by the "at" relation.
Region = Literal["left", "right", "top", "bottom", "center", "top left", "top right", "bottom left", "bottom right"]

SizeWord = Literal["large", "small", "tiny", "huge", "tall"]


@dataclass(frozen=True)
class ObjectSpec:
    """One kind of object the prompt asks for, with how many instances."""

    name: str  # singular kind: "cat", "teddy bear"
    count: int  # requested instances, >= 1
    phrase: str  # grounding phrase for ONE instance, with attributes: "a red apple"
    attributes: tuple[str, ...] = ()  # colors/materials in the text: ("red",)
    size: SizeWord | None = None  # an explicit size word applied to this object


@dataclass(frozen=True)
class RelationSpec:
    """A relation between object groups (indices into :attr:`PromptSpec.objects`)."""

    kind: RelationKind
    subject: int
    references: tuple[int, ...] = ()  # one for binary relations, two for "between", none for "in_row"/"at"
    where: Region | None = None  # only for kind == "at"


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    objects: tuple[ObjectSpec, ...] = ()
    relations: tuple[RelationSpec, ...] = ()
    background: str = ""
    negative: tuple[str, ...] = ()  # object kinds that must not appear ("without X")
    notes: tuple[str, ...] = field(default=())  # what the parser could not place, for diagnostics
