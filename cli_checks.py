"""Checks of command-line values that every stage's commands share; each raises :class:`CLIError` naming the flag and the fix.

They run before any model work, so a bad flag costs the user one line and exit code 2, never a traceback after a
long model load (``generate --out afile/x.png``, ``bench --out afile``, ``--guidance-scale nan``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scenewright.errors import CLIError


def check_finite(flag: str, value: float | None, low: float | None = None, high: float | None = None) -> None:
    """``value`` (None: not given) is a finite number within ``[low, high]``; NaN and infinities never are."""
    if value is None:
        return
    bounds = f" in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise CLIError(f"{flag} must be a finite number{bounds if low is not None or high is not None else ''}, got {value}")


def check_finite_options(options: Mapping[str, Any], flag: str = "--option") -> None:
    """Every number in ``options`` (JSON values, nested) is finite: ``json.loads`` reads ``NaN`` and ``Infinity``."""

    def numbers(value: Any, where: str):
        if isinstance(value, float):
            yield where, value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield from numbers(item, f"{where}.{key}")
        elif isinstance(value, (list, tuple)):
            for k, item in enumerate(value):
                yield from numbers(item, f"{where}[{k}]")

    for key, value in options.items():
        for where, number in numbers(value, str(key)):
            if not math.isfinite(number):
                raise CLIError(f"{flag + ' ' if flag else ''}{where}={number}: option values must be finite numbers")


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (the current folder at worst)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_parent_folders(flag: str, path: Path) -> None:
    """The folders above ``path`` exist or can be made: the nearest existing one is a writable folder."""
    existing = _nearest_existing(path.parent if path.parent != Path("") else Path("."))
    if not existing.is_dir():
        raise CLIError(f"{flag} {path}: {existing} is a file, not a folder; choose a path under a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: the folder {existing} is not writable; choose a folder you can write to")


def check_output_file(flag: str, path: Path) -> None:
    """``path`` can be written as a file: not a folder, under folders that exist or can be made."""
    if path.is_dir():
        raise CLIError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'out'}")
    _check_parent_folders(flag, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise CLIError(f"{flag} {path} exists and is not writable; choose another file")


def check_output_folder(flag: str, path: Path) -> None:
    """``path`` is a writable folder, or one that can be made."""
    if path.exists() and not path.is_dir():
        raise CLIError(f"{flag} {path} is a file, not a folder; give a folder path, e.g. {path.with_suffix('')}-run")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path} is not writable; choose a folder you can write to")
    _check_parent_folders(flag, path)


__all__ = ["check_finite", "check_finite_options", "check_output_file", "check_output_folder"]
