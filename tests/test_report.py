"""report.html from hand-made records: boxes drawn where they belong, table values, escaping, pooled HRS counting."""

from __future__ import annotations

import html
import json

import numpy as np
from PIL import Image

from scenewright.eval.detection import Detection
from scenewright.eval.overlay import DETECTED_RGB, PLANNED_RGB, draw_overlay
from scenewright.eval.report import OVERLAY_SIDE, write_report
from scenewright.layout.schema import Layout, LayoutObject


def _record(out, key, method, scores, *, prompt="a red circle", suite="hrs-counting", category="easy", status="ok"):
    image = out / "images" / method / f"{key}-s0.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), "white").save(image)
    record = {"status": status, "suite": suite, "index": 0, "key": key, "category": category, "prompt": prompt,
              "method": method, "methods": method.split("+"), "seed": 0, "image": f"images/{method}/{key}-s0.png",
              "layout": {"prompt": prompt, "objects": [{"name": "circle", "phrase": "a red circle", "box": [0.1, 0.1, 0.5, 0.5]}]},
              "layout_source": "planner:offline", "detections": [{"name": "circle", "box": [0.5, 0.5, 0.9, 0.9], "score": 1.0}],
              "scores": scores}  # fmt: skip
    if status != "ok":
        record = {k: record[k] for k in ("status", "suite", "index", "key", "category", "prompt", "method", "seed")}
        record["error"] = "RuntimeError: out of memory"
    path = out / "records" / method / f"{key}-s0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def test_planned_boxes_are_green_and_detected_red_at_their_places():
    layout = Layout(prompt="a cat and a dog", objects=(LayoutObject(name="cat", phrase="a cat", box=(0.0, 0.25, 0.5, 0.75)),))
    canvas = draw_overlay(Image.new("RGB", (64, 64), "white"), layout, [Detection("dog", (0.5, 0.25, 1.0, 0.75), 0.9)],
                          size=OVERLAY_SIDE)  # fmt: skip
    pixels = np.asarray(canvas)
    assert canvas.size == (OVERLAY_SIDE, OVERLAY_SIDE)  # 64 px upscaled 4x (nearest)
    side = OVERLAY_SIDE
    assert tuple(pixels[side // 2, 0]) == PLANNED_RGB  # left edge of the planned box
    assert tuple(pixels[side // 2, side - 1]) == DETECTED_RGB  # right edge of the detected box
    assert tuple(pixels[side // 2, side // 4]) == (255, 255, 255)  # inside the planned box: untouched


def test_tables_pool_hrs_counting_escape_prompts_and_list_failures(tmp_path):
    scores = {"count_acc": 1.0, "spatial_acc": None, "box_iou50": 0.0, "mean_iou": 0.2, "background_clean": None}
    _record(tmp_path, "hrs-counting-00000", "none", {**scores, "hrs_tp": 2, "hrs_fp": 2, "hrs_fn": 0}, prompt="<b>two</b> cups")
    _record(tmp_path, "hrs-counting-00001", "none", {**scores, "count_acc": 0.0, "hrs_tp": 1, "hrs_fp": 0, "hrs_fn": 1})
    _record(tmp_path, "hrs-counting-00000", "car+sar", {}, status="error")
    page = write_report(tmp_path, methods=["none", "car+sar"]).read_text(encoding="utf-8")
    assert "<b>two</b>" not in page and html.escape("<b>two</b> cups") in page
    # precision 3/5, recall 3/4, F1 2PR/(P+R) -- pooled over images as HRS does, not averaged
    assert "HRS count F1" in page and "0.667" in page and "0.600" in page and "0.750" in page
    assert "GenEval" not in page and "background clean" not in page  # no image judged them: no column
    assert "RuntimeError: out of memory" in page
    overlay = tmp_path / "annotated" / "none" / "hrs-counting-00000-s0.png"
    assert overlay.is_file() and 'src="annotated/none/hrs-counting-00000-s0.png"' in page
    assert (tmp_path / "plots" / "metrics.png").is_file() and 'src="plots/metrics.png"' in page
