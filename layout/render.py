"""Draw a layout's boxes with their phrases to a PNG, to eyeball a plan before synthesis."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from scenewright.layout.schema import Layout


def _color(index: int) -> tuple[int, int, int]:
    """A distinct saturated colour per object kind (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_layout(layout: Layout, size: int = 512) -> Image.Image:
    """A ``size`` x ``size`` RGB image: each box outlined in its kind's colour and labelled with its phrase."""
    if not isinstance(layout, Layout):
        raise TypeError(f"`layout` must be a Layout, got {type(layout).__name__}; use Layout.parse(...) first")
    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 4096:
        raise ValueError(f"`size` must be an int in [32, 4096] pixels, got {size!r}")
    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=max(10, size // 40))
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    kinds = {name: i for i, name in enumerate(dict.fromkeys(layout.names))}
    width = max(2, size // 170)
    for obj in layout.objects:
        color = _color(kinds[obj.name])
        x0, y0, x1, y1 = (round(v * (size - 1)) for v in obj.box)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        label = obj.phrase
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tx, ty = x0 + width, max(0, y0 - (bottom - top) - 4) if y0 > (bottom - top) + 4 else y0 + width
        draw.rectangle([tx - 1, ty - 1, tx + right - left + 2, ty + bottom - top + 2], fill=color)
        draw.text((tx, ty - top), label, fill=(255, 255, 255), font=font)
    caption = layout.background or layout.prompt
    draw.text((4, size - 14), caption[: size // 6], fill=(90, 90, 90), font=font)
    return image


def save_layout_png(layout: Layout, path: str | os.PathLike, size: int = 512) -> Path:
    """Draw ``layout`` (see :func:`draw_layout`) and save it as PNG at ``path``, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_layout(layout, size).save(path, format="PNG")
    return path
