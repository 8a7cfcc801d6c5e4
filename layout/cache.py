"""Disk cache of LLM layout answers, so a re-run of a benchmark costs no requests.

One JSON file per key, named by the sha256 of the key fields (model, template hash, prompt,
temperature, sample index). A file holds those fields and the raw answer text -- never the API
key, the base URL's credentials or any request header. Writes are durable and atomic
(:func:`scenewright.durable.write_text_atomic`: a temporary file in the same folder, fsync, then
:func:`os.replace`), so parallel runs and interrupted runs never leave a torn file; a damaged file
(from a disk that lost it, or an edit) is a miss, reported by name, and re-made by the next answer.
Temporary files an interrupted write left are removed when a cache is opened, once an hour old.

Location: ``cache_dir`` when given, else ``$SCENEWRIGHT_CACHE_DIR/llm``, else ``~/.cache/scenewright/llm``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from scenewright.durable import read_json_object, remove_stale_temp_files, write_text_atomic

logger = logging.getLogger(__name__)

#: Bumped when the file layout changes, so old files are ignored rather than misread.
CACHE_VERSION = 1
#: A temporary file older than this (seconds) is an interrupted write's: a write itself takes milliseconds,
#: and several processes share one cache, so a younger one may be another process's write in flight.
STALE_TEMP_SECONDS = 3600.0


def default_cache_dir() -> Path:
    """``$SCENEWRIGHT_CACHE_DIR/llm`` when set, else ``~/.cache/scenewright/llm``."""
    root = os.environ.get("SCENEWRIGHT_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "scenewright"
    return base / "llm"


def cache_key(model: str, template_hash: str, prompt: str, temperature: float, sample: int, feedback: str = "") -> dict:
    """The fields that identify one answer (and nothing secret); ``feedback`` only when given, so older keys hold."""
    key = {
        "version": CACHE_VERSION,
        "model": model,
        "template_hash": template_hash,
        "prompt": prompt,
        "temperature": float(temperature),
        "sample": int(sample),
    }
    if feedback:
        key["feedback"] = feedback
    return key


class AnswerCache:
    """Raw LLM answers on disk, one atomic JSON file per :func:`cache_key`."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        if self.directory.is_dir():
            remove_stale_temp_files(self.directory, older_than=time.time() - STALE_TEMP_SECONDS)

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
        return self.directory / f"{digest}.json"

    def get(self, key: dict) -> str | None:
        """The cached answer for ``key``, or None (a missing, unreadable or foreign file is a miss)."""
        path = self.path(key)
        record = read_json_object(path, damaged="ignored; the next answer re-makes it")
        if record is None:
            return None
        if record.get("key") != key or not isinstance(record.get("answer"), str):
            logger.warning("ignoring cache file %s: it does not hold this key's answer; the next answer re-makes it", path)
            return None
        return record["answer"]

    def put(self, key: dict, answer: str) -> Path:
        """Store ``answer`` under ``key`` durably and atomically; returns the file written."""
        if not isinstance(answer, str):
            raise TypeError(f"`answer` must be the raw answer text, got {type(answer).__name__}")
        return write_text_atomic(self.path(key), json.dumps({"key": key, "answer": answer}, ensure_ascii=False, indent=1))
