"""The files of a `scenewright bench` run: where each unit's image and record live, and how they are written and read.

Under the run folder ``out``::

    images/<method>/<key>-s<seed>.png       the generated image
    records/<method>/<key>-s<seed>.json      prompt, layout, detections, scores (or the error)

The runner (:mod:`scenewright.eval.bench`) writes them and the report (:mod:`scenewright.eval.report`)
reads them; both import this module, so neither imports the other to reach the files. Every file is
written durably (:func:`scenewright.durable.write_text_atomic`: fsync, rename, folder fsync); a record
that does not parse is reported by name and its unit runs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from scenewright.durable import read_json_object, write_text_atomic
from scenewright.eval.detection import Detection
from scenewright.eval.suites import BenchItem


class NamedMethod(Protocol):
    """What the file layout needs of a method combination (:class:`scenewright.eval.bench.MethodSpec`): its name."""

    name: str


def write_json(path: Path, payload: Any) -> None:
    """Write durably and atomically: a reader (or a resumed run, or one after a crash) never sees half a file."""
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when there is none; a damaged one (torn, not JSON, not an object) is
    reported by name and read as None, so that its unit runs again and the record is re-made."""
    return read_json_object(path, damaged="its unit counts as not finished; the bench runs it again")


def record_path(out: Path, spec: NamedMethod, item: BenchItem, seed: int) -> Path:
    """``out/records/<method>/<key>-s<seed>.json``: one unit's record."""
    return out / "records" / spec.name / f"{item.key}-s{seed}.json"


def image_path(out: Path, spec: NamedMethod, item: BenchItem, seed: int) -> Path:
    """``out/images/<method>/<key>-s<seed>.png``: one unit's image."""
    return out / "images" / spec.name / f"{item.key}-s{seed}.png"


def is_finished(path: Path) -> bool:
    """A record that exists, parses and says ok: its unit is done."""
    record = read_record(path)
    return record is not None and record.get("status") == "ok"


def load_records(out: Path) -> list[dict]:
    """Every record under ``out/records`` (damaged ones skipped with a warning naming them), in a stable order."""
    records = (read_record(path) for path in sorted((Path(out) / "records").glob("*/*.json")))
    return [r for r in records if r is not None]


def detection_dict(d: Detection) -> dict:
    """A detection as a record stores it: name, box and score rounded to 5 digits, color (no mask)."""
    return {"name": d.name, "box": [round(float(v), 5) for v in d.box], "score": round(float(d.score), 5), "color": d.color}
