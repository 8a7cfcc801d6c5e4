"""Durable file writes shared by the bench's records and layouts, its report, the LLM answer cache and the shapes
model's training checkpoints.

A write goes to a temporary file in the destination's folder (``.<name>.<random>.tmp``), is flushed
and ``fsync``ed, renamed over the destination with :func:`os.replace`, and then the folder itself is
``fsync``ed where the OS allows it (POSIX). A reader, a resumed run or a machine that loses power
therefore sees either the old file or the new one, never a torn one. A process killed between the
write and the rename leaves its temporary file behind; :func:`remove_stale_temp_files` clears those.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

#: The glob of the temporary files :func:`write_text_atomic` makes (hidden, ``.tmp`` last).
TEMP_GLOB = ".*.tmp"


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Have ``write(handle)`` fill ``path`` durably: a temp file (binary), fsync, :func:`os.replace`, folder fsync.

    ``write`` is e.g. ``lambda f: torch.save(state, f)``; a kill at any point leaves the old file or the new one.
    Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name in the same folder: unique across processes and machines sharing the folder, same filesystem.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` durably (:func:`write_atomic`); returns the path."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def read_json_object(path: str | os.PathLike, damaged: str) -> dict | None:
    """The JSON object in ``path``, or None when there is no file or it is damaged (unreadable, torn, not JSON,
    not an object); a damaged file gets a warning naming it and ``damaged``, what its reader does next."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # ValueError: torn or not JSON (JSONDecodeError), not UTF-8
        logger.warning("damaged file %s (%s): %s", path, err, damaged)
        return None
    if not isinstance(value, dict):
        logger.warning("damaged file %s (a JSON %s, not an object): %s", path, type(value).__name__, damaged)
        return None
    return value


def remove_stale_temp_files(folder: str | os.PathLike, older_than: float) -> list[Path]:
    """Delete the temp files under ``folder`` (recursively) last modified before ``older_than`` (epoch seconds).

    Returns what was deleted. A file another process removes meanwhile is skipped, not an error.
    """
    removed = []
    for tmp in sorted(Path(folder).rglob(TEMP_GLOB)):
        try:
            if not tmp.is_file() or tmp.stat().st_mtime >= older_than:
                continue
            tmp.unlink()
        except FileNotFoundError:  # renamed or removed by its writer between the glob and here
            continue
        removed.append(tmp)
    if removed:
        logger.warning("removed %d stale temporary file(s) under %s, left by an interrupted write", len(removed), folder)
    return removed


__all__ = ["TEMP_GLOB", "fsync_folder", "read_json_object", "remove_stale_temp_files", "write_text_atomic"]
