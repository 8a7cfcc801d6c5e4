"""LLM answers written in the text formats of the field's peers -> :class:`~scenewright.layout.schema.Layout`.

Two formats, both on a 512x512 pixel canvas (:data:`~scenewright.layout.schema.PEER_CANVAS`):

- LMD (Lian et al. 2023)::

      [('a cat', [x, y, w, h]), ('a dog', [x, y, w, h])]
      Background prompt: A realistic scene
      Negative prompt: backpacks

  optionally with an ``Objects:`` prefix on the list line. Boxes are ``[x, y, w, h]``.
- Attention Refocusing (Phung et al. 2023), one object a line, prose lines ignored::

      cat: (x0, y0, x1, y1)
      dog: (x0, y0, x1, y1)

  or a Python list ``[('cat', (x0, y0, x1, y1)), ...]`` (tuples: corners, unlike LMD's lists),
  or the released record ``{"phrases": [...], "boxes_xyxy_512": [[x0, y0, x1, y1], ...]}``.

Parsing never evaluates code (``ast.literal_eval`` and regular expressions only) and is robust to
junk around the answer. Real GPT-4 answers contain boxes that a layout cannot hold as written; each
repair below is REPORTED in the returned changes, never silent:

- a "box" without exactly 4 numbers, or with zero width or height, is dropped (an answer whose
  every box is dropped raises :class:`LayoutError`);
- a box whose corners are given in the wrong order (``y1 < y0``) gets its corners sorted;
- when clipping to the canvas would cut away more than half of some box (the model drew on a larger
  canvas, e.g. ``(820, 80, 970, 140)``), the whole layout is scaled uniformly to fit the canvas,
  which keeps every relation and relative size; smaller overshoots are clipped by the geometry
  checker's :func:`~scenewright.layout.geometry.clip_to_canvas`.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence

from scenewright.layout.geometry import clip_to_canvas
from scenewright.layout.parse import name_of_phrase
from scenewright.layout.schema import PEER_CANVAS, Layout, LayoutError

#: A box keeping less than this fraction of its area after clipping triggers a fit-to-canvas rescale.
MIN_KEPT_FRACTION = 0.5

_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
# ('a cat', [1, 2, 3, 4]) or ("a cat", (1, 2, 3, 4)) anywhere in the text: the fallback when the list
# as a whole is not a Python literal (a truncated answer, a stray quote).
# The phrase stops at its closing quote and the numbers at the first character no number list holds, so a
# failed match gives up after its own span: a looping model's "('a', [('a', [..." is read in linear time.
_TUPLE_RE = re.compile(
    r"""\(\s*(?:'(?P<single>[^'\n]+)'|"(?P<double>[^"\n]+)")\s*,\s*(?P<open>[\[(])(?P<numbers>[-+0-9.eE,\s]*)[\])]\s*\)"""
)
# cat: (1, 2, 3, 4) -- an Attention Refocusing line; list markers ("1.", "-") before the name are skipped.
_AR_LINE_RE = re.compile(r"^\s*(?:[-*\u2022]\s*|\d+[.)]\s*)?(?P<name>[^:()\[\]{}]+?)\s*:\s*\((?P<numbers>[^)]*)\)?")
_BACKGROUND_RE = re.compile(r"^\s*background(?:\s+prompt)?\s*:\s*(?P<text>.*)$", re.IGNORECASE | re.MULTILINE)
_NEGATIVE_RE = re.compile(r"^\s*negative(?:\s+prompt)?\s*:\s*(?P<text>.*)$", re.IGNORECASE | re.MULTILINE)


# ------------------------------------------------------------------ detection
def looks_like_lmd(text: str) -> bool:
    """True when ``text`` holds LMD-style ``(phrase, [numbers])`` tuples, or an empty list ``[]`` with a ``Background prompt:`` line."""
    empty_list = re.search(r"^\s*(objects\s*:\s*)?\[\s*\]", text, re.I | re.M)
    return bool(_TUPLE_RE.search(text)) or (bool(empty_list) and bool(_BACKGROUND_RE.search(text)))


def looks_like_attention_refocusing(text: str) -> bool:
    """True when some line of ``text`` reads ``name: (numbers)``."""
    return any(_AR_LINE_RE.match(line) and _NUMBER_RE.search(line.split(":", 1)[1]) for line in text.splitlines() if ":" in line)


# ------------------------------------------------------------------ parsers
def parse_lmd_answer(text: str, prompt: str, canvas: int = PEER_CANVAS) -> tuple[Layout, list[str]]:
    """An answer in LMD's text format -> ``(layout, changes)``; tuple boxes in a list are read as AR corners."""
    items, kinds = _python_list_items(text)
    if items is None:  # not a literal: take the tuples one by one
        items, kinds = [], []
        for match in _TUPLE_RE.finditer(text):
            phrase = match["single"] if match["single"] is not None else match["double"]
            items.append((phrase, [float(v) for v in _NUMBER_RE.findall(match["numbers"])]))
            kinds.append("xyxy" if match["open"] == "(" else "xywh")
    if not items and not re.search(r"\[\s*\]", text):
        raise LayoutError(
            "no LMD object list found; write the objects as [('a cat', [x, y, w, h]), ...] on a 512x512 canvas"
        )
    boxes = [_to_xyxy(box, kind) for (_, box), kind in zip(items, kinds)]
    return layout_from_pixel_boxes(
        prompt, [phrase for phrase, _ in items], boxes, _line(_BACKGROUND_RE, text), _line(_NEGATIVE_RE, text), canvas
    )


def parse_attention_refocusing_answer(text: str, prompt: str, canvas: int = PEER_CANVAS) -> tuple[Layout, list[str]]:
    """An answer in Attention Refocusing's ``name: (x0, y0, x1, y1)`` lines -> ``(layout, changes)``."""
    phrases, boxes = [], []
    for line in text.splitlines():
        if ":" not in line or "(" not in line:
            continue  # prose ("Here are the corrected coordinates:") and blank lines
        match = _AR_LINE_RE.match(line)
        if match is None:
            continue
        name = match["name"].strip().strip("'\"`*").strip()
        if not name or name.lower() in {"background", "background prompt", "negative", "negative prompt"}:
            continue
        numbers = _NUMBER_RE.findall(match["numbers"])
        if not numbers:
            continue  # prose with a parenthesis ("Note: the cat (on the left) ...")
        phrases.append(name)
        boxes.append([float(v) for v in numbers])
    if not phrases:
        raise LayoutError("no Attention Refocusing lines found; write one object a line as 'cat: (x0, y0, x1, y1)' in 512 pixels")
    return layout_from_pixel_boxes(
        prompt, phrases, boxes, _line(_BACKGROUND_RE, text), _line(_NEGATIVE_RE, text), canvas
    )


def parse_attention_refocusing_record(prompt: str, record: dict, canvas: int = PEER_CANVAS) -> tuple[Layout, list[str]]:
    """A released Attention Refocusing layout ``{"phrases": [...], "boxes_xyxy_512": [[x0, y0, x1, y1], ...]}``."""
    if not isinstance(record, dict) or "phrases" not in record or "boxes_xyxy_512" not in record:
        raise LayoutError('an Attention Refocusing record needs "phrases" and "boxes_xyxy_512" lists')
    phrases, boxes = record["phrases"], record["boxes_xyxy_512"]
    if not isinstance(phrases, list) or not isinstance(boxes, list) or len(phrases) != len(boxes):
        raise LayoutError('"phrases" and "boxes_xyxy_512" must be lists of the same length')
    return layout_from_pixel_boxes(prompt, [str(p) for p in phrases], boxes, canvas=canvas)


def parse_peer_answer(text: str, prompt: str, canvas: int = PEER_CANVAS) -> tuple[Layout, list[str]]:
    """An answer in either peer text format (LMD first, then Attention Refocusing) -> ``(layout, changes)``."""
    if looks_like_lmd(text):
        return parse_lmd_answer(text, prompt, canvas)
    if looks_like_attention_refocusing(text):
        return parse_attention_refocusing_answer(text, prompt, canvas)
    raise LayoutError(
        "the answer is in no layout format scenewright reads; answer with the JSON object "
        '{"objects": [{"name", "phrase", "box": [x0, y0, x1, y1]}], "background", "negative"} (normalized boxes)'
    )


# ------------------------------------------------------------------ shared conversion
def layout_from_pixel_boxes(
    prompt: str,
    phrases: Sequence[str],
    boxes: Sequence[Sequence[float]],
    background: str = "",
    negative: str = "",
    canvas: int = PEER_CANVAS,
) -> tuple[Layout, list[str]]:
    """Pixel ``[x0, y0, x1, y1]`` boxes on a ``canvas`` square -> ``(layout, changes)``, with the repairs in the module docstring."""
    if len(phrases) != len(boxes):
        raise LayoutError(f"got {len(phrases)} phrases but {len(boxes)} boxes; give one box per phrase")
    changes: list[str] = []
    kept: list[tuple[str, list[float]]] = []
    for i, (phrase, raw) in enumerate(zip(phrases, boxes)):
        label = f"objects[{i}] {str(phrase).strip()!r}"
        box = _numbers(raw)
        if box is None or len(box) != 4:
            changes.append(f"{label}: dropped, its box {list(raw) if isinstance(raw, (list, tuple)) else raw!r} is not 4 numbers")
            continue
        ordered = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        if ordered != box:
            changes.append(f"{label}: corners {_fmt(box)} were out of order, sorted to {_fmt(ordered)}")
        if ordered[2] - ordered[0] <= 0 or ordered[3] - ordered[1] <= 0:
            changes.append(f"{label}: dropped, its box {_fmt(box)} has zero width or height")
            continue
        if not str(phrase).strip():
            changes.append(f"{label}: dropped, it has no phrase")
            continue
        kept.append((str(phrase), ordered))
    if boxes and not kept:
        raise LayoutError("no usable box in the answer: " + "; ".join(changes))

    scale_note = _fit_to_canvas(kept, canvas)
    if scale_note:
        changes.append(scale_note)
    data = {
        "prompt": prompt,
        "background": background,
        "negative": negative,
        "objects": [
            {"name": name_of_phrase(phrase), "phrase": phrase, "box": [v / canvas for v in box]} for phrase, box in kept
        ],
    }
    data, clip_changes = clip_to_canvas(data)
    return Layout.parse(data), changes + clip_changes


def _fit_to_canvas(kept: list[tuple[str, list[float]]], canvas: int) -> str | None:
    """Scale ``kept`` boxes in place to fit the canvas when clipping would cut some box by more than half."""
    worst = min((_kept_fraction(box, canvas) for _, box in kept), default=1.0)
    if worst >= MIN_KEPT_FRACTION:
        return None
    x_lo = min(0.0, *(b[0] for _, b in kept))
    y_lo = min(0.0, *(b[1] for _, b in kept))
    x_hi = max(float(canvas), *(b[2] for _, b in kept))
    y_hi = max(float(canvas), *(b[3] for _, b in kept))
    scale = canvas / max(x_hi - x_lo, y_hi - y_lo)  # one factor for both axes keeps aspect ratios
    for _, box in kept:
        box[:] = [(box[0] - x_lo) * scale, (box[1] - y_lo) * scale, (box[2] - x_lo) * scale, (box[3] - y_lo) * scale]
    return (
        f"the boxes span [{x_lo:g}, {y_lo:g}, {x_hi:g}, {y_hi:g}], beyond the {canvas}x{canvas} canvas, and clipping "
        f"would keep only {worst:.0%} of some box; scaled the whole layout by {scale:.3f} to fit"
    )


def _kept_fraction(box: Sequence[float], canvas: int) -> float:
    x0, y0, x1, y1 = box
    inside = max(0.0, min(x1, canvas) - max(x0, 0.0)) * max(0.0, min(y1, canvas) - max(y0, 0.0))
    return inside / ((x1 - x0) * (y1 - y0))


# ------------------------------------------------------------------ helpers
def _numbers(raw: object) -> list[float] | None:
    """``raw`` as a list of finite floats, or None."""
    if not isinstance(raw, (list, tuple)):
        return None
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(float(v))
    return out


def _to_xyxy(box: Sequence[float], kind: str) -> Sequence[float]:
    values = _numbers(box)
    if kind != "xywh" or values is None or len(values) != 4:
        return box  # wrong arity is reported by layout_from_pixel_boxes
    x, y, w, h = values
    return [x, y, x + w, y + h]


def _python_list_items(text: str) -> tuple[list[tuple[str, object]] | None, list[str]]:
    """The ``[(phrase, box), ...]`` literal in ``text`` and each box's kind ('xywh' for lists, 'xyxy' for tuples)."""
    start = text.find("[")
    while start != -1:
        end = _matching_bracket(text, start)
        if end is not None:
            try:
                value = ast.literal_eval(text[start : end + 1])
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                value = None
            if isinstance(value, list) and all(
                isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], (list, tuple))
                for item in value
            ):
                kinds = ["xyxy" if isinstance(box, tuple) else "xywh" for _, box in value]
                return list(value), kinds
        start = text.find("[", start + 1)
    return None, []


def _matching_bracket(text: str, start: int) -> int | None:
    """Index of the ``]`` closing the ``[`` at ``start`` (quotes respected), or None."""
    depth, quote = 0, None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth == 0:
                return i if ch == "]" else None
    return None


def _line(pattern: re.Pattern, text: str) -> str:
    match = pattern.search(text)
    return match["text"].strip().strip("'\"") if match else ""


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"
