"""Stage-1 (layout) accuracy on LMD and NSR-1K, each benchmark judged by its OWN rules.

- LMD (Lian et al. 2023; TonyLianLong/LLM-groundedDiffusion ``scripts/eval_stage_one.py``,
  ``utils/eval/lmd.py``, ``utils/eval/utils.py``): the eval fields are re-derived from each prompt
  with LMD's regexes, and the layout's ``(phrase, [x, y, w, h])`` boxes on a 512 canvas are scored
  by substring matches on the phrases: negation = zero boxes name the object, numeracy = exactly
  N boxes do, attribution = at least one box names each "a <color> <object>", spatial = the first
  box of each object compared by centre x (left/right) or centre y (top/bottom).
- NSR-1K (Feng et al. 2023, LayoutGPT; weixi-feng/LayoutGPT ``eval_counting_layout.py``,
  ``eval_spatial_layout.py``, ``utils.py``): counting accuracy = every ground-truth category has
  exactly its count (comparison prompts: the first count exact and the order of the two counts
  right); spatial accuracy = some pair of boxes of the two objects (found by ``difflib``) has the
  ground-truth relation by the angle between their centres ("next to" also accepts left/right).

The planner is resolved by name through :func:`scenewright.layout.planners.get_planner`; its raw layouts are
scored (no geometry repair), as LMD's and LayoutGPT's stage-1 evaluations score the LLM's answer.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from scenewright.layout.schema import Layout
from scenewright.layout.vocabulary import singularize

SUITES = ("lmd", "nsr1k-counting", "nsr1k-spatial")

#: What the offline planner must reach (GPT-4's LMD stage-1 score is 100% on every task).
TARGETS: dict[tuple[str, str], float] = {
    ("lmd", "negation"): 1.0,
    ("lmd", "numeracy"): 1.0,
    ("lmd", "attribution"): 1.0,
    ("lmd", "spatial"): 1.0,
    ("nsr1k-counting", "counting"): 0.90,
    ("nsr1k-spatial", "spatial"): 0.85,
}
TARGET_PROMPTS_PER_SECOND = 1000.0


# ----------------------------------------------------------------------------- data
def _read_json(*parts: str):
    """A JSON file shipped under ``eval/data`` (package data, read via importlib.resources)."""
    node = resources.files("scenewright.eval").joinpath("data")
    for part in parts:
        node = node.joinpath(part)
    return json.loads(node.read_text(encoding="utf-8"))


def load_lmd() -> list[dict]:
    """The 400 LMD benchmark rows: ``{"index", "prompt", "type", ...}``."""
    return _read_json("lmd", "lmd_benchmark_prompts_400.json")


def load_nsr1k(task: str) -> list[dict]:
    """NSR-1K validation rows for ``task`` ('counting' or 'spatial')."""
    if task not in ("counting", "spatial"):
        raise ValueError(f"`task` must be 'counting' or 'spatial', got {task!r}")
    return _read_json("layoutgpt_nsr1k", f"{task}.val.json")


# ------------------------------------------------------------------------------ LMD
#: LMD's word -> number table (``inflect`` number_to_words for 1..20).
_LMD_NUMBERS = {
    w: i
    for i, w in enumerate(
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split(),
        start=1,
    )
}


def lmd_eval_info(prompt: str) -> dict:
    """LMD's ``get_eval_info_from_prompt_lmd``: the task type and query names read from the prompt."""
    prompt = prompt.strip().rstrip(".")  # as eval_stage_one.py does
    if "without" in prompt:
        name = singularize(re.search(r"without (.+)", prompt).group(1))
        return {"type": "negation", "names": (name,), "number": 0}
    if any(f"on the {w}" in prompt for w in ("left", "right", "top", "bottom")):
        m = re.search(r"with (.+) on the (.+) and (.+) on the (.+)", prompt)
        return {
            "type": "spatial",
            "names1": (m.group(1),),
            "names2": (m.group(3),),
            "location1": m.group(2),
            "location2": m.group(4),
        }
    if "and" in prompt:
        if any(w in prompt for w in ("one", "two", "three", "four", "five")):
            m = re.search(r"with (.+) (.+) and (.+) (.+)", prompt)
            # LMD reads both objects from groups 1-2 (their code); kept for fidelity.
            number, name = m.group(1), singularize(m.group(2))
            number = _LMD_NUMBERS[number] if number in _LMD_NUMBERS else int(number)
            return {"type": "numeracy_2obj", "names1": (name,), "number1": number, "names2": (name,), "number2": number}
        m = re.search(r"with (.+) and (.+)", prompt)
        return {"type": "attribution", "names1": (m.group(1),), "names2": (m.group(2),)}
    if "with" in prompt:
        m = re.search(r"with (.+) (.+)", prompt)
        number, name = m.group(1), singularize(m.group(2))
        number = _LMD_NUMBERS[number] if number in _LMD_NUMBERS else int(number)
        return {"type": "numeracy", "names": (name,), "number": number}
    raise ValueError(f"not an LMD benchmark prompt (no 'without'/'with'/'and'/'on the ...'): {prompt!r}")


def _lmd_count(boxes: Sequence[tuple[str, list]], names: Sequence[str]) -> int:
    """LMD ``count``: boxes whose name contains any query name as a substring."""
    return sum(any(q in name for q in names) for name, _ in boxes)


def _lmd_get_box(boxes: Sequence[tuple[str, list]], names: Sequence[str]) -> list | None:
    """LMD ``get_box``: the first box whose name contains 'query ' or ends with the query."""
    for name, box in boxes:
        if any((q + " ") in name or name.endswith(q) for q in names):
            return box
    return None


#: LMD's ``locations_xywh``: compare centres of [x, y, w, h] boxes.
_LMD_LOCATIONS: dict[tuple[str, str], Callable[[list, list], bool]] = {
    ("left", "right"): lambda a, b: a[0] + a[2] / 2 < b[0] + b[2] / 2,
    ("right", "left"): lambda a, b: a[0] + a[2] / 2 > b[0] + b[2] / 2,
    ("top", "bottom"): lambda a, b: a[1] + a[3] / 2 < b[1] + b[3] / 2,
    ("bottom", "top"): lambda a, b: a[1] + a[3] / 2 > b[1] + b[3] / 2,
}


def lmd_layout_correct(prompt: str, layout: Layout) -> tuple[str, bool]:
    """(task type, success) for one LMD prompt, by LMD's stage-1 predicates on the layout's boxes."""
    info = lmd_eval_info(prompt)
    boxes = layout.to_lmd()  # [(phrase, [x, y, w, h]) in 512 px], what LMD's LLM answers look like
    kind = info["type"]
    if kind in ("negation", "numeracy"):
        return kind, _lmd_count(boxes, info["names"]) == info["number"]
    if kind == "numeracy_2obj":
        ok = _lmd_count(boxes, info["names1"]) == info["number1"] and _lmd_count(boxes, info["names2"]) == info["number2"]
        return kind, ok
    if kind == "attribution":
        return kind, _lmd_count(boxes, info["names1"]) >= 1 and _lmd_count(boxes, info["names2"]) >= 1
    box1, box2 = _lmd_get_box(boxes, info["names1"]), _lmd_get_box(boxes, info["names2"])
    if box1 is None or box2 is None:
        return kind, False
    return kind, _LMD_LOCATIONS[(info["location1"], info["location2"])](box1, box2)


# --------------------------------------------------------------------------- NSR-1K
def _layoutgpt_strip(category: str) -> str:
    """LayoutGPT's ``category.lstrip("a ").lstrip("an ").lstrip("the ")`` (character-set strips, kept as is)."""
    return category.lstrip("a ").lstrip("an ").lstrip("the ")


def nsr_counting_correct(example: dict, layout: Layout) -> bool:
    """LayoutGPT ``eval_counting_layout.py`` accuracy for one example, predicted categories = object names."""
    counts: dict[str, int] = defaultdict(int)
    for category in layout.names:
        stripped = _layoutgpt_strip(category)
        for gt_name, _ in example["num_object"]:
            if stripped in gt_name or gt_name in stripped:
                category = gt_name
        counts[category] += 1
    if example["sub-type"] == "comparison":
        (obj1, gt1), (obj2, gt2) = example["num_object"]
        pred1, pred2 = counts[obj1], counts[obj2]
        if gt1 == gt2 == pred1 == pred2:
            return True
        return gt1 == pred1 and (gt1 - gt2) * (pred1 - pred2) > 0
    return all(counts[name] == gt for name, gt in example["num_object"])


def nsr_spatial_relation(box1: Sequence[float], box2: Sequence[float]) -> str:
    """LayoutGPT ``eval_spatial_relation``: box1 relative to box2 by the angle between centres (xyxy, y down)."""
    if list(box1) == list(box2):
        return "diagonal"
    xa, ya = (box1[0] + box1[2]) / 2, (box1[1] + box1[3]) / 2
    xb, yb = (box2[0] + box2[2]) / 2, (box2[1] + box2[3]) / 2
    dist = math.sqrt((xa - xb) ** 2 + (ya - yb) ** 2)
    if dist == 0:
        return "diagonal"  # numpy gives nan here and every comparison below is False
    cosine, sine = (xa - xb) / dist, (yb - ya) / dist
    theta = math.sqrt(2) / 2
    if cosine > theta:
        return "right"
    if sine > theta:
        return "top"
    if cosine < -theta:
        return "left"
    if sine < -theta:
        return "bottom"
    return "diagonal"


def nsr_spatial_correct(example: dict, layout: Layout) -> bool:
    """LayoutGPT ``eval_spatial_layout.py`` for one example: a missing object counts as wrong."""
    objects = [(o.name, list(o.box)) for o in layout.objects if list(o.box) != [0.0] * 4]
    names = [name for name, _ in objects]
    boxes1 = [box for name, box in objects if name in difflib.get_close_matches(example["obj1"][0], names)[:1]]
    boxes2 = [box for name, box in objects if name in difflib.get_close_matches(example["obj2"][0], names)[:1]]
    if not boxes1 or not boxes2:
        return False
    relations = {nsr_spatial_relation(b1, b2) for b1 in boxes1 for b2 in boxes2}
    if example["relation"] in relations:
        return True
    return example["relation"] == "next to" and bool(relations & {"left", "right"})


# ---------------------------------------------------------------------------- runner
@dataclass
class TaskScore:
    suite: str
    task: str
    n: int = 0
    correct: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def target(self) -> float | None:
        return TARGETS.get((self.suite, self.task))


@dataclass
class SuiteResult:
    suite: str
    planner: str
    scores: list[TaskScore]
    prompts: int
    seconds: float
    errors: int = 0

    @property
    def prompts_per_second(self) -> float:
        return self.prompts / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "suite": self.suite,
            "planner": self.planner,
            "prompts": self.prompts,
            "errors": self.errors,
            "seconds": self.seconds,
            "prompts_per_second": self.prompts_per_second,
            "tasks": [
                {"task": s.task, "n": s.n, "correct": s.correct, "accuracy": s.accuracy, "target": s.target,
                 "failures": s.failures}  # fmt: skip
                for s in self.scores
            ],
        }


def _cases(suite: str) -> list[tuple[str, str, Callable[[Layout], bool]]]:
    """(task, prompt, judge) for every example of ``suite``."""
    if suite == "lmd":
        out = []
        for row in load_lmd():
            prompt = row["prompt"]
            task = lmd_eval_info(prompt)["type"]
            out.append((task, prompt, lambda layout, p=prompt: lmd_layout_correct(p, layout)[1]))
        return out
    if suite == "nsr1k-counting":
        return [("counting", ex["prompt"].strip(), lambda layout, e=ex: nsr_counting_correct(e, layout)) for ex in load_nsr1k("counting")]
    if suite == "nsr1k-spatial":
        return [("spatial", ex["prompt"].strip(), lambda layout, e=ex: nsr_spatial_correct(e, layout)) for ex in load_nsr1k("spatial")]
    raise ValueError(f"`suite` must be one of {', '.join(SUITES)}, got {suite!r}")


def evaluate_suite(suite: str, planner, *, limit: int | None = None, seed: int = 0) -> SuiteResult:
    """Plan every prompt of ``suite`` with ``planner`` (``.plan(prompt, seed=)``) and score its layouts.

    A prompt whose planning raises counts as wrong (its error is listed in the failures);
    the batch goes on. Planning time alone is measured for prompts/second.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be >= 1 or None, got {limit}")
    cases = _cases(suite)[:limit]
    scores: dict[str, TaskScore] = {}
    elapsed, errors = 0.0, 0
    cache: dict[str, Layout | Exception] = {}  # LMD repeats prompts; plan each once, as LMD's cache does
    for task, prompt, judge in cases:
        score = scores.setdefault(task, TaskScore(suite, task))
        score.n += 1
        if prompt not in cache:
            start = time.perf_counter()
            try:
                cache[prompt] = planner.plan(prompt, seed=seed)
            except Exception as err:  # noqa: BLE001 - one bad prompt must not end the batch
                cache[prompt] = err
            elapsed += time.perf_counter() - start
        layout = cache[prompt]
        if isinstance(layout, Exception):
            errors += 1
            score.failures.append(f"{prompt!r}: planner error: {layout}")
            continue
        if judge(layout):
            score.correct += 1
        else:
            boxes = ", ".join(f"{o.phrase} {[round(v, 2) for v in o.box]}" for o in layout.objects)
            score.failures.append(f"{prompt!r} -> [{boxes}]")
    name = getattr(planner, "name", type(planner).__name__)
    return SuiteResult(suite, name, list(scores.values()), len(cache), elapsed, errors)


def get_planner(name: str, **options):
    """The planner called ``name`` (``offline``, ``llm``, ``local``), via :func:`scenewright.layout.planners.get_planner`."""
    from scenewright.layout.planners import get_planner as registry_get

    return registry_get(name, **options)


def format_table(results: Sequence[SuiteResult]) -> str:
    """A plain-text table: suite, task, n, accuracy, target; then prompts/second per suite."""
    lines = [f"{'suite':<16} {'task':<14} {'n':>5} {'accuracy':>9} {'target':>7}  met"]
    for result in results:
        for s in result.scores:
            target = f"{s.target:.0%}" if s.target is not None else "-"
            met = "" if s.target is None else ("yes" if s.accuracy >= s.target - 1e-12 else "NO")
            lines.append(f"{s.suite:<16} {s.task:<14} {s.n:>5} {s.accuracy:>9.1%} {target:>7}  {met}")
    for result in results:
        met = "yes" if result.prompts_per_second >= TARGET_PROMPTS_PER_SECOND else "NO"
        lines.append(
            f"{result.suite}: planner '{result.planner}' {result.prompts} unique prompts, "
            f"{result.prompts_per_second:,.0f} prompts/s (target >= {TARGET_PROMPTS_PER_SECOND:,.0f} for offline: {met})"
            + (f", {result.errors} planner errors" if result.errors else "")
        )
    return "\n".join(lines)
