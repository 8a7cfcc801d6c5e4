"""The overlay: an image with the boxes it was planned with (green) and the boxes found in it (red).

One drawing for every place a person checks an image: the agent's overlay.png, the web editor, report.html.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from scenewright.eval.detection import Detection
from scenewright.layout.schema import Layout

PLANNED_RGB = (20, 170, 60)
DETECTED_RGB = (230, 30, 30)


def draw_overlay(image: Image.Image, layout: Layout, detections: Sequence[Detection], size: int = 512) -> Image.Image:
    """``image`` scaled to ``size`` px wide, planned boxes in green and detections in red, each labelled."""
    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 4096:
        raise ValueError(f"`size` must be an int in [32, 4096] pixels, got {size!r}")
    base = image.convert("RGB")
    height = max(1, round(size * base.height / base.width))
    # Nearest neighbour: a 64 px shapes-world image stays crisp, so the boxes can be judged against its pixels.
    canvas = base.resize((size, height), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=max(10, size // 40))
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    width = max(2, size // 170)
    boxes = [(o.box, o.phrase, PLANNED_RGB, False) for o in layout.objects]
    boxes += [(d.box, f"{d.phrase} {d.score:.2f}", DETECTED_RGB, True) for d in detections]
    for box, label, color, below in boxes:
        x0, y0, x1, y1 = box[0] * (size - 1), box[1] * (height - 1), box[2] * (size - 1), box[3] * (height - 1)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        ty = min(y1 + 2, height - (bottom - top) - 2) if below else max(0, y0 - (bottom - top) - 4)
        draw.rectangle([x0, ty, x0 + right - left + 3, ty + bottom - top + 3], fill=color)
        draw.text((x0 + 1, ty - top + 1), label, fill=(255, 255, 255), font=font)
    y = 2
    for label, color in (("planned", PLANNED_RGB), ("detected", DETECTED_RGB)):  # the legend, on solid swatches
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.rectangle([2, y, 6 + right - left, y + bottom - top + 4], fill=color)
        draw.text((4, y + 2 - top), label, fill=(255, 255, 255), font=font)
        y += bottom - top + 6
    return canvas


__all__ = ["DETECTED_RGB", "PLANNED_RGB", "draw_overlay"]
