"""Time the geometry checker on typical and crowded layouts (target: < 5 ms for 10 objects).

Run: ``python benchmarks/bench_geometry.py``. Prints the median and worst time per call.
"""

from __future__ import annotations

import random
import statistics
import time

from scenewright.layout import Layout, ObjectSpec, PromptSpec, RelationSpec
from scenewright.layout.geometry import check_layout


def _grid_layout(n: int) -> Layout:
    """``n`` non-overlapping boxes on a 4-column grid: the checker has nothing to change."""
    objects = []
    for i in range(n):
        col, row = i % 4, i // 4
        objects.append({"name": f"thing{i}", "phrase": f"a thing{i}", "box": [col / 4 + 0.02, row / 4 + 0.02, col / 4 + 0.22, row / 4 + 0.22]})
    return Layout.parse({"prompt": "grid", "objects": objects})


def _random_layout(n: int, size: float, rng: random.Random) -> dict:
    objects = []
    for i in range(n):
        x, y = rng.uniform(0, 1 - size), rng.uniform(0, 1 - size)
        objects.append({"name": ["cat", "dog", "bird"][i % 3], "phrase": "a thing", "box": [x, y, x + size, y + size]})
    return {"prompt": "random", "objects": objects}


GRID_SPEC = PromptSpec(
    prompt="ten things on a grid",
    objects=tuple(ObjectSpec(f"thing{i}", 1, f"a thing{i}") for i in range(10)),
    relations=(RelationSpec("left_of", 0, (1,)), RelationSpec("above", 0, (4,)), RelationSpec("next_to", 5, (6,))),
)
SPEC = PromptSpec(
    prompt="cats left of dogs, birds above dogs",
    objects=(ObjectSpec("cat", 4, "a cat"), ObjectSpec("dog", 3, "a dog"), ObjectSpec("bird", 3, "a bird")),
    relations=(RelationSpec("left_of", 0, (1,)), RelationSpec("above", 2, (1,))),
)


def _time(label: str, cases: list, spec: PromptSpec | None = None) -> None:
    times = []
    for case in cases:
        start = time.perf_counter()
        check_layout(case, spec)
        times.append((time.perf_counter() - start) * 1e3)
    print(f"{label:<48} median {statistics.median(times):7.2f} ms   max {max(times):7.2f} ms   ({len(times)} runs)")


def main() -> None:
    rng = random.Random(0)
    _time("10 objects, valid (unchanged)", [_grid_layout(10)] * 200)
    _time("10 objects, valid (unchanged), with spec", [_grid_layout(10)] * 200, GRID_SPEC)
    _time("10 objects, random 0.2 boxes (overlaps)", [_random_layout(10, 0.2, rng) for _ in range(100)])
    _time("10 objects, random 0.2 boxes, with spec", [_random_layout(10, 0.2, rng) for _ in range(100)], SPEC)
    _time("30 objects, random 0.45 boxes (crowded)", [_random_layout(30, 0.45, rng) for _ in range(10)])


if __name__ == "__main__":
    main()
