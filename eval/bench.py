"""The benchmark runner behind `scenewright bench`: suite x methods x seeds -> images, records, summary, report.

A work unit is one (prompt, method combination, seed). For each unit the runner writes, under ``out``::

    images/<method>/<key>-s<seed>.png       the generated image
    layouts/<key>.json                       the layout it was guided with (planned once per prompt)
    records/<method>/<key>-s<seed>.json      prompt, layout, detections, scores (or the error)

A unit whose record says ``"status": "ok"`` is finished and skipped on a re-run, so a killed run
resumes where it stopped; a unit that raised gets an error record (retried on the next run) and
the run goes on. Records and layouts are written durably (:mod:`scenewright.durable`: temp file,
fsync, rename, folder fsync) after the image, so a record on disk always points at a complete image,
even after a crash. A damaged record or layout file (torn, not JSON, not the right shape) is re-made,
with a warning naming it; temporary files that a killed run left behind are removed when a run starts.
Under ``accelerate launch`` (or ``torchrun``) the units are split between processes with
:meth:`accelerate.PartialState.split_between_processes`, each record naming the process that made it;
the main process writes ``summary.json`` and ``report.html`` once every process is done.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scenewright.durable import read_json_object, remove_stale_temp_files
from scenewright.eval.attempt import attempt
from scenewright.eval.benchmarks import BENCHMARK_SCORERS
from scenewright.eval.detect import Detector
from scenewright.eval.detection import Detection
from scenewright.eval.records import detection_dict, image_path, is_finished, load_records, record_path, write_json
from scenewright.eval.report import write_report
from scenewright.eval.suites import BenchItem
from scenewright.eval.verify import Verdict, verify
from scenewright.layout.plan import Plan, plan, plan_for_layout
from scenewright.layout.planners import get_planner
from scenewright.layout.schema import Layout, LayoutError
from scenewright.synth.recipe import Recipe, split_options
from scenewright.synth.shapes.detector import ShapesDetector, background_clean

#: The per-image metrics summary.json reports for every method (null where nothing could judge them).
SUMMARY_METRICS = ("count_acc", "spatial_acc", "box_iou50", "background_clean")

logger = logging.getLogger(__name__)


def score_image(
    item: BenchItem, image, planned: Plan, detector: Detector | None
) -> tuple[list[Detection], dict, Verdict | None]:
    """Detections, scores and verdict of one image: the verdict's figures (:func:`scenewright.eval.verify.verify`,
    the one judge of a plan, as the agent and the web editor read it), background_clean, the benchmark's own."""
    scores: dict[str, Any] = {"count_acc": None, "spatial_acc": None, "box_iou50": None, "mean_iou": None,
                              "background_clean": None}  # fmt: skip
    if detector is None:
        return [], scores, None
    names = sorted({*planned.layout.names, *item.info.get("expected", {})})
    detections = detector(image, names)
    verdict = verify(planned, detections)
    scores.update(verdict.scores)
    if isinstance(detector, ShapesDetector):  # only the exact shapes detector can tell color floods from objects
        scores["background_clean"] = background_clean(image)
    scorer = BENCHMARK_SCORERS.get(item.suite)
    if scorer is not None:
        try:
            scores.update(scorer(item, image, detections))
        except (ValueError, KeyError) as err:  # a prompt the benchmark's rules cannot read: that score only is null
            scores["benchmark_error"] = f"{type(err).__name__}: {err}"
    return detections, scores, verdict


# ----------------------------------------------------------------------------- layouts
def read_saved_layout(path: Path) -> tuple[str, Layout] | None:
    """A ``layouts/<key>.json`` file's (source, layout); None when there is none, or when it is damaged
    (torn, not JSON, not a valid layout): then a warning names it, and the caller plans and writes it again."""
    remade = "the layout is planned and written again"
    saved = read_json_object(path, damaged=remade)
    if saved is None:
        return None
    if not isinstance(saved.get("source"), str):
        logger.warning("damaged file %s (no 'source' string): %s", path, remade)
        return None
    try:
        return saved["source"], Layout.parse(saved.get("layout"))
    except LayoutError as err:
        logger.warning("damaged file %s (%s): %s", path, err, remade)
        return None


class LayoutSource:
    """The layout each prompt is guided and scored with: the suite's shipped one, else planned; cached on disk.

    Planned layouts are fitted to ``object_sides`` / ``object_gap`` / ``size_sides`` when the model declares them
    (:class:`scenewright.synth.loading.ModelDefaults`); a suite's shipped layouts are used as they are.
    """

    def __init__(self, out: Path, planner=None, *, use_shipped: bool = True,
                 object_sides: tuple[float, float] | None = None, object_gap: float = 0.0,
                 size_sides: dict[str, tuple[float, float]] | None = None):  # fmt: skip
        self.folder = Path(out) / "layouts"
        self.planner = planner
        self.use_shipped = use_shipped
        self.fit = {"object_sides": object_sides, "object_gap": object_gap, "size_sides": size_sides} if object_sides else {}

    def __call__(self, item: BenchItem) -> tuple[Layout, str]:
        """The item's layout and where it came from (:meth:`plan_for` without the spec)."""
        planned, source = self.plan_for(item)
        return planned.layout, source

    def plan_for(self, item: BenchItem) -> tuple[Plan, str]:
        """The item's :class:`~scenewright.layout.plan.Plan` (its prompt parsed once) and where its layout came from."""
        shipped = self.use_shipped and item.layout is not None
        if not shipped and self.planner is None:
            self.planner = get_planner("offline")
        planner = self.planner
        source = item.layout_source if shipped else f"planner:{planner.name}"
        if not shipped and self.fit:
            low, high = self.fit["object_sides"]
            source += f", fitted to object sides {low:g}-{high:g}, gap {self.fit['object_gap']:g}"
            for word, (a, b) in sorted((self.fit["size_sides"] or {}).items()):
                source += f", {word} {a:g}-{b:g}"
        path = self.folder / f"{item.key}.json"
        saved = read_saved_layout(path)
        if saved is not None:
            saved_source, layout = saved
            if saved_source != source:  # resuming with another --planner would mix layouts in one table
                raise ValueError(f"{path} was made by {saved_source}, this run asks for {source}; "
                                 "use a new --out (or the first run's --planner)")  # fmt: skip
            return plan_for_layout(layout), source
        planned = plan_for_layout(item.layout) if shipped else plan(item.prompt, planner, seed=0, **self.fit)
        write_json(path, {"prompt": item.prompt, "source": source, "layout": planned.layout.to_dict()})
        return planned, source


# ----------------------------------------------------------------------------- the run
def process_state():
    """accelerate's view of this process (rank, world size, device); CPU-only hosts shard over gloo.

    ``PartialState()`` alone treats a torchrun / ``accelerate launch --cpu`` process on a machine
    without GPUs as a lone process, so every rank would run every unit; ``cpu=True`` there makes
    it join the process group.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_unit(synthesizer, item: BenchItem, spec: Recipe, seed: int, *, out: Path, layouts: LayoutSource,
             detector: Detector | None, generate_options: dict, method_options: dict | None = None,
             composition=None) -> dict:  # fmt: skip
    """Generate, save, detect and score one unit; returns its (ok) record. Raises on failure.

    ``spec`` is the combination's :class:`~scenewright.synth.recipe.Recipe`, drawn with ``seed``,
    ``method_options`` over its own options and ``generate_options`` (``num_inference_steps``, ``guidance_scale``).
    A guided combination given a layout without objects (LMD's negation prompts: GPT-4 plans no box,
    only a negative prompt) has nothing to steer; as in LMD, the layout is drawn unguided with its
    negative prompt, and the record says so (``"guided": false``). ``composition``: the
    :class:`scenewright.synth.composition.CompositionOptions` of ``compose`` combinations (default ones when None).
    """
    started = time.perf_counter()
    planned, source = layouts.plan_for(item)
    layout = planned.layout
    guided = spec.guided and bool(layout.objects)
    if guided:
        # the run's steps and CFG scale (generate_options) over the recipe's defaults
        recipe = replace(spec, seed=seed).with_options(**(method_options or {}))
        drawn = attempt(synthesizer, planned, recipe, composition=composition, **generate_options)
        image, encoded_prompt = drawn.image, drawn.encoded_prompt
    else:  # plain SD on the prompt; a guided combination without boxes still gets the layout's negative prompt
        target = layout if spec.guided else item.prompt
        output = synthesizer.generate(target, methods=["none"], seed=seed, output_type="pil", **generate_options)
        image, encoded_prompt = output.images[0], output.prompts[0]
    path = image_path(out, spec, item, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    detections, scores, verdict = score_image(item, image, planned, detector)
    return {
        "status": "ok",
        "suite": item.suite, "index": item.index, "key": item.key, "category": item.category, "prompt": item.prompt,
        "method": spec.name, "methods": list(spec.methods), "seed": seed, "guided": guided,
        "image": path.relative_to(out).as_posix(), "layout": layout.to_dict(), "layout_source": source,
        "encoded_prompt": encoded_prompt,
        "detections": [detection_dict(d) for d in detections], "scores": scores,
        "failures": verdict.failures if verdict is not None else [],
        "seconds": round(time.perf_counter() - started, 3),
    }  # fmt: skip


def run_bench(
    items: Sequence[BenchItem],
    synthesizer,
    specs: Sequence[Recipe],
    *,
    out: str | os.PathLike,
    seeds: int = 1,
    detector: Detector | None = None,
    planner=None,
    use_shipped_layouts: bool = True,
    generate_options: dict | None = None,
    method_options: dict | None = None,
    composition=None,
    progress: bool = True,
    report: bool = True,
) -> dict:
    """Run every (item, method, seed) not finished yet; returns counts ``{"done", "skipped", "failed"}``.

    ``generate_options`` go to every :meth:`scenewright.synth.Synthesizer.generate` call (``num_inference_steps``,
    ``guidance_scale``); ``method_options`` to the combinations that take them
    (:func:`scenewright.synth.recipe.split_options`); ``composition`` (:class:`scenewright.synth.composition.CompositionOptions`) to the
    ``compose`` combinations. A unit that raises is recorded with its error and the run
    continues. Shards over ``accelerate`` processes; the main process then writes summary.json and
    (with ``report``) report.html.
    """
    from tqdm.auto import tqdm

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    defaults = getattr(synthesizer, "defaults", None)  # what the model declares (scenewright.json), if anything
    layouts = LayoutSource(out, planner, use_shipped=use_shipped_layouts, **(defaults.layout_fit() if defaults else {}))
    per_spec = split_options(specs, method_options or {})
    units = [(item, spec, seed) for item in items for seed in range(seeds) for spec in specs]
    started = time.time()
    state = process_state()
    if state.is_local_main_process:  # one process per machine; `out` may be local to each or shared
        # Temporary files of a killed run. None of this run's exist yet: no process writes before the barrier.
        remove_stale_temp_files(out, older_than=started)
    state.wait_for_everyone()
    counts = {"done": 0, "skipped": 0, "failed": 0}
    # Split the full list (the same on every process), then skip finished units inside each shard.
    with state.split_between_processes(units) as mine:
        bar = tqdm(mine, desc="bench", unit="image", disable=not progress or not state.is_local_main_process, file=sys.stderr)
        for item, spec, seed in bar:
            path = record_path(out, spec, item, seed)
            if is_finished(path):
                counts["skipped"] += 1
                continue
            try:
                record = run_unit(synthesizer, item, spec, seed, out=out, layouts=layouts, detector=detector,
                                  generate_options=generate_options or {}, method_options=per_spec[spec.name],
                                  composition=composition)  # fmt: skip
                counts["done"] += 1
            except Exception as err:  # noqa: BLE001 -- one bad item must not end a benchmark run
                record = {"status": "error", "suite": item.suite, "index": item.index, "key": item.key,
                          "category": item.category, "prompt": item.prompt, "method": spec.name,
                          "methods": list(spec.methods), "seed": seed, "error": f"{type(err).__name__}: {err}"}  # fmt: skip
                counts["failed"] += 1
                bar.write(f"failed {spec.name} {item.key} seed {seed}: {record['error']}", file=sys.stderr)
            write_json(path, {**record, "process": state.process_index})  # which shard made it: each unit runs once
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        records = load_records(out)
        write_json(out / "summary.json", summarize(records, [s.name for s in specs]))
        if report:
            write_report(out, records, methods=[s.name for s in specs])
    return counts


# ----------------------------------------------------------------------------- summary
def _mean(values: Sequence[float | None]) -> float | None:
    judged = [float(v) for v in values if v is not None]
    return sum(judged) / len(judged) if judged else None


def summarize(records: Sequence[dict], methods: Sequence[str] | None = None) -> dict:
    """``{method: {"n": finished images, metric: mean over the images that metric could judge (None: none)}}``."""
    methods = list(methods) if methods is not None else sorted({r["method"] for r in records})
    summary = {}
    for method in methods:
        ok = [r for r in records if r["method"] == method and r.get("status") == "ok"]
        summary[method] = {"n": len(ok), **{m: _mean([r["scores"].get(m) for r in ok]) for m in SUMMARY_METRICS}}
    return summary


__all__ = [
    "SUMMARY_METRICS", "LayoutSource", "process_state", "read_saved_layout", "run_bench", "score_image", "summarize",
]  # fmt: skip
