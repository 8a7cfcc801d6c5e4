"""The one layout schema every stage of scenewright reads and writes.

A layout is a prompt plus one box per object instance. Boxes are normalized
``[x0, y0, x1, y1]`` with the origin at the top-left corner and y growing down,
so the same layout drives a 64x64 shapes-world image and a 512x512 SD image.

Converters to and from the formats the field's peers use live here too, so that
there is exactly one place that knows what a box means:

- LMD (Lian et al. 2023): ``(name, [x, y, w, h])`` in pixels of a 512x512 canvas.
- Attention Refocusing (Phung et al. 2023): ``name: (x0, y0, x1, y1)`` in 512 pixels.
- GLIGEN (Li et al. 2023): phrases plus normalized ``[x0, y0, x1, y1]`` boxes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scenewright.layout.parse import name_of_phrase

#: Largest number of grounded objects GLIGEN's position net accepts.
GLIGEN_MAX_OBJECTS = 30
#: The canvas the LMD and Attention Refocusing formats are written on.
PEER_CANVAS = 512


class LayoutError(ValueError):
    """A layout that cannot be used; the message names the field and the fix."""


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "layout"
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def _check_text(value: str, field: str) -> str:
    """``value`` unless it holds a lone surrogate, which no UTF-8 file or JSON reader can carry back."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = value[err.start : err.end].encode("unicode_escape").decode()
        raise ValueError(f"`{field}` holds {bad} at {err.start}, half of a UTF-16 pair, not text; remove it") from None
    return value


class LayoutObject(BaseModel):
    """One object instance: its kind, the text that grounds it, and where it goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The object's kind as a singular noun ('cat', 'teddy bear').")
    phrase: str = Field(description="The text that grounds this instance, with attributes ('a red apple').")
    box: tuple[float, float, float, float] = Field(
        description="Normalized [x0, y0, x1, y1], origin top-left, y down, each in [0, 1]."
    )

    @field_validator("name", "phrase")
    @classmethod
    def _non_empty(cls, value: str, info) -> str:
        value = " ".join(_check_text(value, info.field_name).split())
        if not value:
            raise ValueError(f"`{info.field_name}` is empty; give the object's kind (e.g. 'cat') and its phrase (e.g. 'a black cat')")
        return value

    @field_validator("box", mode="before")
    @classmethod
    def _box_shape(cls, value):
        if isinstance(value, dict):
            raise ValueError("box must be a list [x0, y0, x1, y1], not an object")
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ValueError(f"box must be a list of 4 numbers [x0, y0, x1, y1], got {value!r}")
        value = list(value)
        if len(value) != 4:
            raise ValueError(f"box must have 4 numbers [x0, y0, x1, y1], got {len(value)}")
        return value

    @field_validator("box")
    @classmethod
    def _box_values(cls, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"box {list(box)} has a non-finite number; use numbers in [0, 1]")
        x0, y0, x1, y1 = box
        hint = " (these look like pixels: divide x by the image width and y by its height)" if max(box) > 2 else ""
        if min(box) < -1e-6 or max(box) > 1.0 + 1e-6:
            raise ValueError(f"box {list(box)} leaves the canvas: every value must lie in [0, 1]{hint}")
        if x1 <= x0:
            raise ValueError(f"box {list(box)} has x1 <= x0; boxes are [x0, y0, x1, y1] with x1 > x0")
        if y1 <= y0:
            raise ValueError(f"box {list(box)} has y1 <= y0; boxes are [x0, y0, x1, y1] with y1 > y0 (y grows down)")
        # Snap float noise at the edges so that 1.0000001 stays on the canvas.
        return tuple(min(1.0, max(0.0, float(v))) for v in box)  # type: ignore[return-value]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


class Layout(BaseModel):
    """A prompt, its scene and one box per object instance (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(description="The user's text.")
    background: str = Field(default="", description="The scene without the objects ('a beach').")
    negative: str = Field(default="", description="What must not appear ('backpacks').")
    objects: tuple[LayoutObject, ...] = Field(default=(), description="One entry per object instance.")

    @field_validator("prompt")
    @classmethod
    def _prompt_non_empty(cls, value: str) -> str:
        if not _check_text(value, "prompt").strip():
            raise ValueError("`prompt` is empty; give the text the image should show")
        return value.strip()

    @field_validator("background", "negative")
    @classmethod
    def _strip(cls, value: str, info) -> str:
        return " ".join(_check_text(value, info.field_name).split())

    # ----------------------------------------------------------------- i/o
    @classmethod
    def parse(cls, data: dict | str | bytes) -> Layout:
        """Validate a dict or JSON text; raises :class:`LayoutError` naming each bad field."""
        try:
            if isinstance(data, (str, bytes)):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as err:
            raise LayoutError(f"invalid layout: {_format_validation_error(err)}") from None

    @classmethod
    def load(cls, path: str | Path) -> Layout:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise LayoutError(f"cannot read layout file {path}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise LayoutError(
                f"layout file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                "give a JSON layout file as `scenewright plan ... --output layout.json` writes it"
            ) from None
        try:
            return cls.parse(text)
        except LayoutError as err:
            raise LayoutError(f"{path}: {err}") from None

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "background": self.background,
            "negative": self.negative,
            "objects": [{"name": o.name, "phrase": o.phrase, "box": list(o.box)} for o in self.objects],
        }

    # ------------------------------------------------------------- queries
    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    @property
    def phrases(self) -> list[str]:
        return [o.phrase for o in self.objects]

    @property
    def boxes(self) -> list[tuple[float, float, float, float]]:
        return [o.box for o in self.objects]

    def counts(self) -> dict[str, int]:
        """Number of instances per object kind."""
        out: dict[str, int] = {}
        for o in self.objects:
            out[o.name] = out.get(o.name, 0) + 1
        return out

    def with_objects(self, objects: Sequence[LayoutObject]) -> Layout:
        return Layout(prompt=self.prompt, background=self.background, negative=self.negative, objects=tuple(objects))

    # ----------------------------------------------------------- converters
    def to_lmd(self, canvas: int = PEER_CANVAS) -> list[tuple[str, list[int]]]:
        """LMD's ``[(phrase, [x, y, w, h]), ...]`` in pixels of a ``canvas``-sized square."""
        out = []
        for o in self.objects:
            x0, y0, x1, y1 = (round(v * canvas) for v in o.box)
            out.append((o.phrase, [x0, y0, x1 - x0, y1 - y0]))
        return out

    @classmethod
    def from_lmd(
        cls,
        prompt: str,
        boxes: Iterable[tuple[str, Sequence[float]]],
        background: str = "",
        negative: str = "",
        canvas: int = PEER_CANVAS,
        names: Sequence[str] | None = None,
    ) -> Layout:
        """From LMD's ``(phrase, [x, y, w, h])`` pixel boxes; ``names`` default to the phrase's head noun."""
        objects = []
        for i, (phrase, xywh) in enumerate(boxes):
            if len(xywh) != 4:
                raise LayoutError(f"objects[{i}]: LMD boxes are [x, y, w, h], got {list(xywh)!r}")
            x, y, w, h = (float(v) for v in xywh)
            box = [x / canvas, y / canvas, (x + w) / canvas, (y + h) / canvas]
            name = names[i] if names is not None else name_of_phrase(phrase)
            objects.append({"name": name, "phrase": phrase, "box": box})
        return cls.parse({"prompt": prompt, "background": background, "negative": negative, "objects": objects})

    def to_attention_refocusing(self, canvas: int = PEER_CANVAS) -> list[tuple[str, tuple[int, int, int, int]]]:
        """Attention Refocusing's ``[(name, (x0, y0, x1, y1)), ...]`` in pixels of a ``canvas`` square."""
        return [(o.phrase, tuple(round(v * canvas) for v in o.box)) for o in self.objects]  # type: ignore[misc]

    @classmethod
    def from_attention_refocusing(
        cls,
        prompt: str,
        boxes: Iterable[tuple[str, Sequence[float]]],
        background: str = "",
        negative: str = "",
        canvas: int = PEER_CANVAS,
    ) -> Layout:
        """From Attention Refocusing's ``(phrase, (x0, y0, x1, y1))`` pixel boxes."""
        objects = []
        for i, (phrase, xyxy) in enumerate(boxes):
            if len(xyxy) != 4:
                raise LayoutError(f"objects[{i}]: Attention Refocusing boxes are (x0, y0, x1, y1), got {list(xyxy)!r}")
            objects.append(
                {"name": name_of_phrase(phrase), "phrase": phrase, "box": [float(v) / canvas for v in xyxy]}
            )
        return cls.parse({"prompt": prompt, "background": background, "negative": negative, "objects": objects})

    def to_gligen(self) -> tuple[list[str], list[list[float]]]:
        """GLIGEN's ``(gligen_phrases, gligen_boxes)``: phrases and normalized xyxy boxes."""
        return [o.phrase for o in self.objects], [list(o.box) for o in self.objects]

    @classmethod
    def from_gligen(
        cls, prompt: str, phrases: Sequence[str], boxes: Sequence[Sequence[float]], background: str = "", negative: str = ""
    ) -> Layout:
        if len(phrases) != len(boxes):
            raise LayoutError(
                f"`gligen_phrases` and `gligen_boxes` must have the same length, got {len(phrases)} and {len(boxes)}"
            )
        objects = [{"name": name_of_phrase(p), "phrase": p, "box": list(b)} for p, b in zip(phrases, boxes)]
        return cls.parse({"prompt": prompt, "background": background, "negative": negative, "objects": objects})
