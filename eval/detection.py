"""The one type every detector returns and every scorer reads: :class:`Detection`.

It sits below every other eval module (and the shapes world's detector), so that detectors and scorers
import it downward and never each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object: kind (singular noun), normalized xyxy box, confidence, optional mask and color."""

    name: str
    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # (H, W) bool
    color: str | None = None

    @property
    def phrase(self) -> str:
        return f"a {self.color} {self.name}" if self.color else f"a {self.name}"
