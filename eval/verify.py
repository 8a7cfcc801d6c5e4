"""One verifier: does the image's detections show what the :class:`~scenewright.layout.plan.Plan` asks?

:func:`verify` returns a :class:`Verdict`: a list of :class:`Requirement` (each with a key, whether it passed, its
figure and a sentence). The agent's pass rule (:attr:`Verdict.passed`), its feedback to an LLM planner
(:attr:`Verdict.failures`), the bench's per-image scores and the web editor's list all read that one list, so a
requirement judged here is worded, scored and passed the same way everywhere.

Requirement keys:

- ``count:<name>`` -- as many detections of the kind as planned; ``color:<name>:<color>`` -- as many of a fitting
  color (:func:`scenewright.eval.scores.color_fits`; detectors without colors always fit); ``unasked:<j>`` --
  detection j has a color no phrase of its kind allows; ``absent:<name>`` -- a kind the prompt negates is not there.
  All of them make up ``count_acc``.
- ``relation:<r>`` -- relation r of the spec holds on the fitting detections' boxes
  (:func:`scenewright.layout.relations.relation_holds`); their fraction is ``spatial_acc``.
- ``box:<i>`` -- planned object i is drawn at IoU >= ``iou_threshold`` (one-to-one greedy matching,
  :func:`scenewright.eval.scores.planned_matches`); their fraction is ``box_iou50``, their mean IoU ``mean_iou``.
  A single box is feedback, not a pass condition: the pass rule reads their mean, as ``mean_iou:``.
- ``mean_iou`` -- the planned boxes' mean IoU is at least ``min_mean_iou``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from scenewright.eval.detection import Detection
from scenewright.eval.scores import color_fits, detections_layout, fitting_detections, named_color, planned_matches
from scenewright.layout.plan import Plan
from scenewright.layout.relations import describe_relation, relation_holds

#: The summary figures every verdict reports (the bench's per-image columns, the agent's ranking).
SCORE_KEYS = ("count_acc", "spatial_acc", "box_iou50", "mean_iou")
#: Key prefixes of the requirements that make up ``count_acc``.
COUNT_KINDS = ("count", "color", "unasked", "absent")


@dataclass(frozen=True)
class Requirement:
    """One thing the image must show, and whether it does."""

    key: str  # "count:circle", "relation:0", "box:2", ... (see the module docstring)
    passed: bool
    figure: float | None  # what was measured: a count, an IoU, 1/0 for a relation
    sentence: str  # the requirement in words, worded as a failure when it failed

    @property
    def kind(self) -> str:
        """The key's prefix: "count", "color", "unasked", "absent", "relation", "box" or "mean_iou"."""
        return self.key.split(":", 1)[0]


@dataclass(frozen=True)
class Verdict:
    """Every :class:`Requirement` of one image, its summary ``scores`` (:data:`SCORE_KEYS`) and the pass rule."""

    requirements: tuple[Requirement, ...]
    scores: dict[str, float | None]  # count_acc, spatial_acc, box_iou50, mean_iou (None: nothing to judge)
    passed: bool  # every requirement but the single boxes holds

    @property
    def failures(self) -> list[str]:
        """What the image gets wrong, in words: for report.json and the planner's re-plan feedback."""
        return [r.sentence for r in self.requirements if not r.passed]


def verify(plan: Plan, detections: Sequence[Detection], *, iou_threshold: float = 0.5, min_mean_iou: float = 0.3) -> Verdict:
    """Judge ``detections`` (normalized xyxy boxes of one image) against ``plan``: counts, relations, boxes."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"`iou_threshold` must lie in (0, 1], got {iou_threshold}")
    requirements = [
        *count_requirements(plan, detections),
        *relation_requirements(plan, detections),
        *box_requirements(plan, detections, iou_threshold),
    ]
    boxes = [r.figure for r in requirements if r.kind == "box"]
    if boxes:
        mean = sum(boxes) / len(boxes)
        sentence = f"the planned boxes were drawn with mean IoU {mean:.2f}" + (f" < {min_mean_iou}" if mean < min_mean_iou else "")
        requirements.append(Requirement("mean_iou", mean >= min_mean_iou, mean, sentence))
    return Verdict(requirements=tuple(requirements), scores=summary_scores(requirements),
                   passed=all(r.passed for r in requirements if r.kind != "box"))  # fmt: skip


def summary_scores(requirements: Sequence[Requirement]) -> dict[str, float | None]:
    """:data:`SCORE_KEYS` from the requirements: all counts right (1/0), fraction of relations and of boxes, mean box IoU."""
    relations = [r.passed for r in requirements if r.kind == "relation"]
    boxes = [r for r in requirements if r.kind == "box"]
    return {
        "count_acc": 1.0 if all(r.passed for r in requirements if r.kind in COUNT_KINDS) else 0.0,
        "spatial_acc": sum(relations) / len(relations) if relations else None,
        "box_iou50": sum(r.passed for r in boxes) / len(boxes) if boxes else None,
        "mean_iou": sum(r.figure for r in boxes) / len(boxes) if boxes else None,
    }


def count_requirements(plan: Plan, detections: Sequence[Detection]) -> list[Requirement]:
    """Each planned kind's count, each colored group's count, detections of an unasked color, negated kinds absent."""
    layout = plan.layout
    detected = Counter(d.name for d in detections)
    planned = layout.counts()
    out = []
    for name, n in planned.items():
        phrases = {o.phrase for o in layout.objects if o.name == name}
        wanted = f"'{next(iter(phrases))}' ({name})" if len(phrases) == 1 else name
        out.append(Requirement(f"count:{name}", detected[name] == n, float(detected[name]),
                               f"expected {n} x {wanted}, the image has {detected[name]}"))  # fmt: skip
    groups = Counter((o.name, named_color(o.phrase)) for o in layout.objects)
    for (name, color), n in groups.items():
        if color is None:
            continue
        found = sum(d.name == name and color_fits(d.color, f"a {color} {name}") for d in detections)
        out.append(Requirement(f"color:{name}:{color}", found == n, float(found),
                               f"expected {n} x 'a {color} {name}' of that color, the image has {found}"))  # fmt: skip
    fitting = {id(d) for d in fitting_detections(detections, layout)}
    for j, d in enumerate(detections):
        if id(d) not in fitting:
            out.append(Requirement(f"unasked:{j}", False, None, f"the image shows {d.phrase}, a color the prompt does not ask for"))
    for name in plan.spec.negative:
        if name not in planned:
            out.append(Requirement(f"absent:{name}", detected[name] == 0, float(detected[name]),
                                   f"the prompt says there must be no {name}, the image has {detected[name]}"))  # fmt: skip
    return out


def relation_requirements(plan: Plan, detections: Sequence[Detection]) -> list[Requirement]:
    """Each relation of the spec, judged on the boxes of the detections that can stand for planned objects."""
    spec = plan.spec
    if not spec.relations:
        return []
    detected = detections_layout(fitting_detections(detections, plan.layout), plan.layout.prompt)
    out = []
    for r, relation in enumerate(spec.relations):
        held = relation_holds(relation, spec, detected)
        said = "holds" if held else "does not hold in the image"
        out.append(Requirement(f"relation:{r}", held, float(held), f"relation {relation.kind}: {describe_relation(relation, spec)} {said}"))
    return out


def box_requirements(plan: Plan, detections: Sequence[Detection], iou_threshold: float) -> list[Requirement]:
    """Each planned box, matched one-to-one to a detection of its kind and a fitting color, drawn at IoU >= ``iou_threshold``."""
    matched = {i: iou for i, _, iou in planned_matches(detections, plan.layout)}
    out = []
    for i, obj in enumerate(plan.layout.objects):
        iou = matched.get(i, 0.0)
        box = [round(v, 2) for v in obj.box]
        if iou >= iou_threshold:
            sentence = f"'{obj.phrase}' planned at {box} was drawn there (IoU {iou:.2f})"
        else:
            found = f"no {obj.name} of a fitting color was found" if i not in matched else f"the closest overlaps it by IoU {iou:.2f}"
            sentence = f"'{obj.phrase}' planned at {box} was not drawn there ({found})"
        out.append(Requirement(f"box:{i}", iou >= iou_threshold, iou, sentence))
    return out


__all__ = ["COUNT_KINDS", "SCORE_KEYS", "Requirement", "Verdict", "box_requirements", "count_requirements",
           "relation_requirements", "summary_scores", "verify"]  # fmt: skip
