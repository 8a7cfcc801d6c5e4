"""Each benchmark's own image rules, one module per benchmark, and the suite -> scorer table of ``scenewright bench``.

- :mod:`.hrs`: HRS-Bench (Bakr et al. 2023).
- :mod:`.geneval`: GenEval (Ghosh et al. 2023).
- :mod:`.lmd`: LMD (Lian et al. 2023), image level.
- :mod:`.t2i_compbench`: T2I-CompBench (Huang et al. 2023).

scenewright's own per-image score against a planned layout is :mod:`scenewright.eval.scores`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scenewright.eval.benchmarks.geneval import geneval_scores
from scenewright.eval.benchmarks.hrs import hrs_counting_scores, hrs_spatial_scores
from scenewright.eval.benchmarks.lmd import lmd_scores
from scenewright.eval.benchmarks.t2i_compbench import t2i_numeracy_scores, t2i_spatial_scores
from scenewright.eval.detection import Detection
from scenewright.eval.suites import BenchItem

#: Suite -> its benchmark's own per-image scorer, recorded next to score_layout_image's fields.
BENCHMARK_SCORERS: dict[str, Callable[[BenchItem, Any, list[Detection]], dict]] = {
    "hrs-spatial": hrs_spatial_scores,
    "hrs-counting": hrs_counting_scores,
    "geneval": geneval_scores,
    "lmd": lmd_scores,
    "t2i-spatial": t2i_spatial_scores,
    "t2i-numeracy": t2i_numeracy_scores,
}
