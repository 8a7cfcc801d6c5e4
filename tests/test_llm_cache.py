"""The LLM answer cache on disk: damaged files are misses named in a warning and re-made; stale temp files go."""

from __future__ import annotations

import json
import os
import time

import pytest

from scenewright.layout.cache import STALE_TEMP_SECONDS, AnswerCache, cache_key

KEY = cache_key("test-model", "0" * 16, "a cat left of a dog", 0.0, 0)


@pytest.mark.parametrize(
    "damage",
    ['{"key": {"version": 1, "mod', "[]", '{"key": {}, "answer": "{}"}', '{"answer": 3}', b"\xff\xfe not utf-8"],
    ids=["truncated", "not an object", "another key", "answer not text", "not utf-8"],
)
def test_damaged_cache_file_is_a_miss_named_in_a_warning_and_remade(tmp_path, caplog, damage):
    cache = AnswerCache(tmp_path)
    path = cache.put(KEY, '{"objects": []}')
    path.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    with caplog.at_level("WARNING"):
        assert cache.get(KEY) is None
    assert str(path) in caplog.text and "re-makes it" in caplog.text
    cache.put(KEY, '{"objects": []}')  # the planner asks again and stores the new answer over it
    assert cache.get(KEY) == '{"objects": []}' and json.loads(path.read_text())["key"] == KEY
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left by the writes


def test_opening_a_cache_removes_an_interrupted_writes_temp_file_but_not_a_young_one(tmp_path, caplog):
    stale, young = tmp_path / ".abc.json.k1ll3d.tmp", tmp_path / ".def.json.wr1t1ng.tmp"
    for path in (stale, young):
        path.write_text('{"key": ')
    os.utime(stale, (time.time() - STALE_TEMP_SECONDS - 60,) * 2)
    with caplog.at_level("WARNING"):
        AnswerCache(tmp_path)
    assert not stale.exists() and young.exists()  # the young one may be another process's write in flight
    assert "1 stale temporary file" in caplog.text and str(tmp_path) in caplog.text
    AnswerCache(tmp_path / "not-made-yet")  # opening a cache creates nothing
    assert not (tmp_path / "not-made-yet").exists()
