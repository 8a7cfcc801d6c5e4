"""The files of a `scenewright bench` run: where each unit's image and record live, and how they are written and read.

Under the run folder ``out``::

    images/<method>/<key>-s<seed>.png       the generated image
    records/<method>/<key>-s<seed>.json      prompt, layout, detections, scores (or the error)

The runner (:mod:`scenewright.eval.bench`) writes them and the report (:mod:`scenewright.eval.report`)
reads them; both import this module, so neither imports the other to reach the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from scenewright.eval.detection import Detection
from scenewright.eval.suites import BenchItem


class NamedMethod(Protocol):
    """What the file layout needs of a method combination (:class:`scenewright.eval.bench.MethodSpec`): its name."""

    name: str


def write_json(path: Path, payload: Any) -> None:
    """Write atomically: a reader (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def record_path(out: Path, spec: NamedMethod, item: BenchItem, seed: int) -> Path:
    """``out/records/<method>/<key>-s<seed>.json``: one unit's record."""
    return out / "records" / spec.name / f"{item.key}-s{seed}.json"


def image_path(out: Path, spec: NamedMethod, item: BenchItem, seed: int) -> Path:
    """``out/images/<method>/<key>-s<seed>.png``: one unit's image."""
    return out / "images" / spec.name / f"{item.key}-s{seed}.png"


def is_finished(path: Path) -> bool:
    """A record that exists, parses and says ok: its unit is done."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("status") == "ok"
    except (OSError, ValueError):
        return False


def load_records(out: Path) -> list[dict]:
    """Every record under ``out/records`` (unreadable ones skipped), in a stable order."""
    records = []
    for path in sorted((Path(out) / "records").glob("*/*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return records


def detection_dict(d: Detection) -> dict:
    """A detection as a record stores it: name, box and score rounded to 5 digits, color (no mask)."""
    return {"name": d.name, "box": [round(float(v), 5) for v in d.box], "score": round(float(d.score), 5), "color": d.color}
