"""report.html for a `scenewright bench` run: tables per suite and category, image grids with boxes, plots.

Everything the page shows lives next to it in the run folder and is linked relatively (images,
box overlays under ``annotated/``, plots under ``plots/``), so the folder can be moved or served
as a whole. Box overlays: planned boxes in green, detected ones in red (:mod:`scenewright.eval.overlay`); plots are
matplotlib on the Agg backend (no display needed).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from scenewright.durable import write_text_atomic
from scenewright.eval.benchmarks.hrs import hrs_counting_prf
from scenewright.eval.detection import Detection
from scenewright.eval.overlay import DETECTED_RGB, PLANNED_RGB, draw_overlay
from scenewright.eval.records import load_records
from scenewright.layout.schema import Layout

#: Columns of the tables: (record score key, header). HRS counting P/R/F1 are pooled, not averaged.
_METRICS = (
    ("count_acc", "count acc"),
    ("spatial_acc", "spatial acc"),
    ("box_iou50", "box IoU≥0.5"),
    ("mean_iou", "mean IoU"),
    ("background_clean", "background clean"),
    ("hrs_spatial", "HRS spatial"),
    ("geneval", "GenEval"),
    ("lmd", "LMD"),
    ("t2i_spatial", "T2I spatial"),
    ("t2i_numeracy", "T2I numeracy"),
)
#: Overlays (:func:`scenewright.eval.overlay.draw_overlay`) are drawn this many pixels wide (64 px shapes images are tiny).
OVERLAY_SIDE = 256
MAX_GRID_ITEMS = 24


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _row(records: Sequence[dict]) -> dict:
    """n, errors and every metric some record judged (mean), HRS counting pooled P/R/F1."""
    ok = [r for r in records if r.get("status") == "ok"]
    row = {"n": len(ok), "errors": len(records) - len(ok), "metrics": {}}
    for key, _header in _METRICS:
        values = [r["scores"][key] for r in ok if r["scores"].get(key) is not None]
        row["metrics"][key] = sum(values) / len(values) if values else None
    if any("hrs_tp" in r["scores"] for r in ok):
        prf = hrs_counting_prf((r["scores"]["hrs_tp"], r["scores"]["hrs_fp"], r["scores"]["hrs_fn"]) for r in ok if "hrs_tp" in r["scores"])
        row["metrics"].update({f"hrs_{k}": v for k, v in prf.items()})
    return row


def _columns(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """The metric columns any row judged (a suite without GenEval shows no GenEval column)."""
    columns = [(k, h) for k, h in _METRICS if any(r["metrics"].get(k) is not None for r in rows)]
    if any("hrs_f1" in r["metrics"] for r in rows):
        columns += [("hrs_precision", "HRS count P"), ("hrs_recall", "HRS count R"), ("hrs_f1", "HRS count F1")]
    return columns


def _table(title: str, groups: dict[tuple[str, ...], list[dict]], heads: Sequence[str]) -> dict:
    rows = []
    for labels, records in groups.items():
        rows.append({"labels": list(labels), **_row(records)})
    columns = _columns(rows)
    for row in rows:
        row["cells"] = [_cell(row["metrics"].get(k)) for k, _ in columns]
    return {"title": title, "heads": list(heads), "columns": [h for _, h in columns], "rows": rows}


# ----------------------------------------------------------------------------- drawing
def _overlay(out: Path, record: dict) -> str:
    """Write (once) the record's box overlay under ``annotated/``; returns its path relative to ``out``."""
    from PIL import Image

    relative = Path("annotated") / Path(record["image"]).relative_to("images")
    target = out / relative
    source = out / record["image"]
    if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
        layout = Layout.model_validate(record["layout"])
        detected = [Detection(name=d["name"], box=tuple(d["box"]), score=float(d.get("score", 1.0)), color=d.get("color"))
                    for d in record["detections"]]  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            draw_overlay(image, layout, detected, size=OVERLAY_SIDE).save(target)
    return relative.as_posix()


def _bar_chart(path: Path, labels: Sequence[str], series: dict[str, list[float]], ylabel: str) -> None:
    """Grouped bars: one group per label, one bar per series (method); values in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI or a GPU node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(labels), 3.2))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(labels))], values, width, label=name)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))], labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plots(out: Path, category_groups: dict, methods: Sequence[str]) -> list[str]:
    """Bar charts: each summary metric per method, count accuracy per category and method."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    plots = []
    by_method = {m: _row([r for rs in category_groups.values() for r in rs if r["method"] == m]) for m in methods}
    keys = [k for k in ("count_acc", "spatial_acc", "box_iou50", "mean_iou", "background_clean")
            if any(by_method[m]["metrics"].get(k) is not None for m in methods)]  # fmt: skip
    if keys:
        series = {m: [by_method[m]["metrics"].get(k) or 0.0 for k in keys] for m in methods}
        _bar_chart(folder / "metrics.png", keys, series, "mean over images")
        plots.append("plots/metrics.png")
    rows = {labels: _row(records) for labels, records in category_groups.items()}
    categories = sorted({labels[:2] for labels in category_groups})
    if categories and any(r["metrics"]["count_acc"] is not None for r in rows.values()):
        series = {m: [(rows.get((*c, m)) or {"metrics": {}})["metrics"].get("count_acc") or 0.0 for c in categories] for m in methods}
        _bar_chart(folder / "count_by_category.png", [f"{s}\n{c}" for s, c in categories], series, "count accuracy")
        plots.append("plots/count_by_category.png")
    return plots


# ----------------------------------------------------------------------------- page
_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>scenewright bench: {{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child,td.label{text-align:left}
.grid td{vertical-align:top;text-align:center}
.grid img{width:192px;image-rendering:pixelated}
.prompt{max-width:16em;text-align:left;font-size:.9em}
.legend span{padding:0 .4em;font-weight:bold}
.err{color:#b00}
</style></head><body>
<h1>scenewright bench: {{ title }}</h1>
<p>{{ n_records }} records, {{ n_errors }} failed; methods {{ methods|join(", ") }}.
Metrics are means over the images a metric could judge ("–": none could).</p>
{% for table in tables %}
<h2>{{ table.title }}</h2>
<table class="scores" id="{{ table.title|lower|replace(' ', '-') }}">
<tr>{% for h in table.heads %}<th>{{ h }}</th>{% endfor %}<th>n</th><th>failed</th>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in table.rows %}<tr>{% for l in row.labels %}<td class="label">{{ l }}</td>{% endfor %}<td>{{ row.n }}</td><td>{{ row.errors }}</td>{% for c in row.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% if plots %}<h2>Plots</h2>{% for p in plots %}<img class="plot" src="{{ p }}" alt="{{ p }}">{% endfor %}{% endif %}
<h2>Images</h2>
<p class="legend">boxes: <span style="color:rgb{{ planned_rgb }}">planned</span><span style="color:rgb{{ detected_rgb }}">detected</span>
{% if grid_truncated %}(first {{ grid|length }} prompts shown){% endif %}</p>
<table class="grid">
<tr><th>prompt</th>{% for m in methods %}<th>{{ m }}</th>{% endfor %}</tr>
{% for row in grid %}<tr><td class="prompt">{{ row.prompt }}<br><small>{{ row.key }} · {{ row.category }} · layout: {{ row.layout_source }}</small></td>
{% for cell in row.cells %}<td>{% if cell.image %}<a href="{{ cell.original }}"><img src="{{ cell.image }}" alt="{{ cell.alt }}"></a><br><small>count {{ cell.count }} · IoU≥.5 {{ cell.iou }}</small>{% elif cell.error %}<span class="err">{{ cell.error }}</span>{% else %}–{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if errors %}<h2>Failures</h2><ul>{% for e in errors %}<li class="err">{{ e.method }} {{ e.key }} seed {{ e.seed }}: {{ e.error }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""


def write_report(out: str | os.PathLike, records: Sequence[dict] | None = None, *, methods: Sequence[str] | None = None) -> Path:
    """Write ``out/report.html`` (plus its overlays and plots) from the run's records; returns its path."""
    import jinja2

    out = Path(out)
    records = list(records) if records is not None else load_records(out)
    methods = list(methods) if methods is not None else sorted({r["method"] for r in records})
    by_suite: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    by_category: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r["suite"], methods.index(r["method"]) if r["method"] in methods else 0)):
        by_suite[(r["suite"], r["method"])].append(r)
    for r in sorted(records, key=lambda r: (r["suite"], r["category"], methods.index(r["method"]) if r["method"] in methods else 0)):
        by_category[(r["suite"], r["category"], r["method"])].append(r)
    tables = [_table("Per suite", by_suite, ["suite", "method"]), _table("Per category", by_category, ["suite", "category", "method"])]
    plots = _plots(out, by_category, methods)

    first_seed = min((r["seed"] for r in records), default=0)
    keys = list(dict.fromkeys(r["key"] for r in records))
    cells = {(r["key"], r["method"]): r for r in records if r["seed"] == first_seed}
    grid = []
    for key in keys[:MAX_GRID_ITEMS]:
        row_records = [cells.get((key, m)) for m in methods]
        some = next(r for r in (*row_records, *(r for r in records if r["key"] == key)) if r is not None)
        row = {"key": key, "prompt": some["prompt"], "category": some["category"], "layout_source": "", "cells": []}
        for record in row_records:
            if record is None:
                row["cells"].append({})
            elif record.get("status") != "ok":
                row["cells"].append({"error": record.get("error", "failed")})
            else:
                row["layout_source"] = record.get("layout_source", "")
                scores = record["scores"]
                row["cells"].append({"image": _overlay(out, record), "original": record["image"], "alt": f"{record['method']}: {record['prompt']}",
                                     "count": _cell(scores.get("count_acc")), "iou": _cell(scores.get("box_iou50"))})  # fmt: skip
        grid.append(row)
    errors = [r for r in records if r.get("status") != "ok"]
    html = jinja2.Environment(autoescape=True).from_string(_TEMPLATE).render(
        title=out.name, methods=methods, tables=tables, plots=plots, grid=grid, errors=errors,
        grid_truncated=len(keys) > MAX_GRID_ITEMS, n_records=len(records), n_errors=len(errors),
        planned_rgb=PLANNED_RGB, detected_rgb=DETECTED_RGB,
    )  # fmt: skip
    path = out / "report.html"
    return write_text_atomic(path, html)


__all__ = ["write_report"]
