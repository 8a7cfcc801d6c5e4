"""Benchmark suites for `scenewright bench`: prompts, categories, the fields each benchmark's scorer reads, shipped layouts.

Every suite is a list of :class:`BenchItem` read from package data (``eval/data/<folder>``, each
folder with its SOURCE.md) or, for ``shapes``, generated from the shapes world's grammar with a
fixed seed. Where the field released GPT-4 layouts for a suite's prompts (Attention Refocusing:
HRS spatial, HRS counting, DrawBench; LMD's own cache: LMD) they ride along as ``item.layout``;
the runner plans the others.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from scenewright.errors import InputError
from scenewright.eval.layouts import load_lmd
from scenewright.layout.peer_formats import parse_attention_refocusing_record, parse_lmd_answer
from scenewright.layout.schema import Layout, LayoutError
from scenewright.synth.shapes.world import sample_scene

SUITE_NAMES = ("shapes", "hrs-spatial", "hrs-counting", "drawbench", "geneval", "lmd", "t2i-spatial", "t2i-numeracy", "ae")
#: The ``shapes`` suite: this many scenes drawn from ``np.random.default_rng(SHAPES_SEED)``.
SHAPES_SEED = 2026
SHAPES_PROMPTS = 200
_HRS_LEVELS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class BenchItem:
    """One benchmark prompt: where it comes from, its category, what its scorer reads, a shipped layout if any."""

    suite: str
    index: int  # position in the suite's file (stable across runs: it names the item's files)
    prompt: str
    category: str
    info: dict = field(default_factory=dict, compare=False)  # benchmark fields for the suite's scorer
    layout: Layout | None = field(default=None, compare=False)  # a shipped layout (GPT-4 / ground truth)
    layout_source: str = ""  # where ``layout`` came from, for the report

    @property
    def key(self) -> str:
        """File-name stem of the item's image / record files."""
        return f"{self.suite}-{self.index:05d}"


def _data(*parts: str):
    node = resources.files("scenewright.eval").joinpath("data")
    for part in parts:
        node = node.joinpath(part)
    return node


def _csv_rows(*parts: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(_data(*parts).read_text(encoding="utf-8"))))


def _lines(*parts: str) -> list[str]:
    return [line.strip() for line in _data(*parts).read_text(encoding="utf-8").splitlines() if line.strip()]


@cache
def _ar_records(name: str) -> dict:
    """Attention Refocusing's GPT-4 layouts for one suite: ``{prompt: {"phrases", "boxes_xyxy_512"}}``."""
    node = _data("attention_refocusing_layouts", name)
    if name.endswith(".gz"):
        return json.loads(gzip.decompress(node.read_bytes()).decode("utf-8"))
    return json.loads(node.read_text(encoding="utf-8"))


def _ar_layout(records_file: str, prompt: str) -> Layout | None:
    record = _ar_records(records_file).get(prompt)
    if record is None:
        return None
    try:
        layout, _changes = parse_attention_refocusing_record(prompt, record)
    except LayoutError:  # an answer with no usable box (e.g. 2-number "boxes"): the runner plans it instead
        return None
    return layout


def _level(index: int, total: int) -> str:
    """HRS's thirds: rows [0, n/3) easy, [n/3, 2n/3) medium, the rest hard."""
    return _HRS_LEVELS[min(2, index * 3 // total)]


# ----------------------------------------------------------------------------- suites
def _shapes(limit: int | None) -> list[BenchItem]:
    rng = np.random.default_rng(SHAPES_SEED)
    items = []
    for index in range(limit or SHAPES_PROMPTS):
        scene = sample_scene(rng)
        text = scene.caption.text
        relation = any(w in text for w in ("left of", "right of", "above", "below"))
        region = any(w in text for w in (" in the ", " at the ", " on the "))
        category = "relation" if relation else "region" if region else "count"
        layout = scene.to_layout()
        items.append(BenchItem("shapes", index, text, category, {"objects": len(scene.objects)}, layout, "world"))
    return items


def _hrs_spatial(limit: int | None) -> list[BenchItem]:
    rows = _csv_rows("hrs", "spatial_compositions_prompts.csv")
    items = []
    for index, row in enumerate(rows[:limit]):
        prompt = row["meta_prompt"].strip()
        info = {
            "objects": [row[f"obj{k}"].strip() for k in range(1, 5) if row[f"obj{k}"].strip()],
            "relations": [row[f"rel{k}"].strip() for k in (1, 2) if row[f"rel{k}"].strip()],
        }
        layout = _ar_layout("hrs_spatial.json", prompt)
        items.append(BenchItem("hrs-spatial", index, prompt, _level(index, len(rows)), info, layout, "gpt-4 (AR)" if layout else ""))
    return items


def _hrs_counting(limit: int | None) -> list[BenchItem]:
    rows = _csv_rows("hrs", "counting_prompts.csv")
    items = []
    for index, row in enumerate(rows[:limit]):  # the level comes from the full file's thirds
        prompt = row["synthetic_prompt"].strip()
        expected = {row["obj1"].strip(): int(row["n1"])}
        if row["obj2"].strip() and int(row["n2"] or 0) > 0:
            expected[row["obj2"].strip()] = int(row["n2"])
        layout = _ar_layout("hrs_counting.json.gz", prompt)
        items.append(BenchItem("hrs-counting", index, prompt, _level(index, len(rows)), {"expected": expected}, layout,
                               "gpt-4 (AR)" if layout else ""))  # fmt: skip
    return items


def _drawbench(limit: int | None) -> list[BenchItem]:
    items = []
    for index, row in enumerate(_csv_rows("drawbench", "drawbench.csv")[:limit]):
        prompt = row["Prompts"].strip()
        layout = _ar_layout("drawbench.json", prompt)
        items.append(BenchItem("drawbench", index, prompt, row["Category"].strip(), {}, layout, "gpt-4 (AR)" if layout else ""))
    return items


def _geneval(limit: int | None) -> list[BenchItem]:
    items = []
    for index, line in enumerate(_lines("geneval", "evaluation_metadata.jsonl")):
        metadata = json.loads(line)
        items.append(BenchItem("geneval", index, metadata["prompt"], metadata["tag"], {"metadata": metadata}))
    return items


def _lmd(limit: int | None) -> list[BenchItem]:
    """LMD's 400 prompts with LMD's cached GPT-4 layouts (one answer per occurrence: the k-th repeat takes the k-th)."""
    answers = json.loads(_data("lmd", "cache_lmd_v0.1_gpt-4.json").read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    items = []
    for index, row in enumerate(load_lmd()[:limit]):
        prompt = row["prompt"]
        repeat = seen[prompt] = seen.get(prompt, -1) + 1
        cached = answers.get(prompt)
        layout = parse_lmd_answer(cached[repeat % len(cached)], prompt)[0] if cached else None
        items.append(BenchItem("lmd", index, prompt, row["type"], {}, layout, "gpt-4 (LMD cache)" if layout else ""))
    return items


def _t2i(task: str, limit: int | None) -> list[BenchItem]:
    suite = f"t2i-{task}"
    return [BenchItem(suite, index, prompt, task) for index, prompt in enumerate(_lines("t2i_compbench", f"{task}_val.txt"))]


def _attend_and_excite(limit: int | None) -> list[BenchItem]:
    groups = json.loads(_data("attend_and_excite", "a.e_prompts.json").read_text(encoding="utf-8"))
    prompts = [(category, prompt) for category, group in groups.items() for prompt in group]
    return [BenchItem("ae", index, prompt, category) for index, (category, prompt) in enumerate(prompts)]


_LOADERS = {
    "hrs-spatial": _hrs_spatial,
    "hrs-counting": _hrs_counting,
    "drawbench": _drawbench,
    "geneval": _geneval,
    "lmd": _lmd,
    "t2i-spatial": lambda limit: _t2i("spatial", limit),
    "t2i-numeracy": lambda limit: _t2i("numeracy", limit),
    "ae": _attend_and_excite,
}


def load_suite(name: str, *, limit: int | None = None) -> list[BenchItem]:
    """The items of suite ``name`` (one of :data:`SUITE_NAMES`), the first ``limit`` when given."""
    if name not in SUITE_NAMES:
        raise InputError(f"unknown suite {name!r}; choose one of {', '.join(SUITE_NAMES)}")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    if name == "shapes":
        return _shapes(limit)
    items = _LOADERS[name](limit)  # loaders that parse shipped layouts parse only the first `limit`
    return items[:limit] if limit is not None else items


def load_prompt_file(path: str | Path, *, limit: int | None = None) -> list[BenchItem]:
    """A custom suite: one prompt a line (blank lines and ``#`` comments skipped), suite name ``prompts``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--prompts {path}: cannot read it ({err}); give a UTF-8 text file, one prompt a line") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InputError(f"--prompts {path} holds no prompt; write one prompt a line")
    items = [BenchItem("prompts", index, prompt, "custom") for index, prompt in enumerate(prompts)]
    return items[:limit] if limit is not None else items


__all__ = ["SUITE_NAMES", "BenchItem", "load_prompt_file", "load_suite"]
