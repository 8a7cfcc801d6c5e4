"""`scenewright bench` sharded over 2 CPU processes (torchrun, as `accelerate launch` starts them) on a tiny saved model.

What sharding must keep true: each unit runs exactly once, the records and images equal a one-process
run's at the same thread count, summary.json is written once, and a process killed with SIGKILL
mid-run leaves nothing that a resumed run cannot finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

PROMPTS = ["a red circle", "a blue square to the left of a green star", "two yellow triangles",
           "a purple circle above a red square", "a green square", "three blue stars"]  # fmt: skip
# Fields that say how and where a unit ran, not what it made.
RUN_FIELDS = ("seconds", "process")
TIMEOUT_S = 300  # a bound for a hung process group; the runs take ~10-40 s on 2 busy cores


def bench_argv(model_dir: Path, prompts: Path, out: Path) -> list[str]:
    return ["bench", "--prompts", str(prompts), "--model", str(model_dir), "--detector", "shapes",
            "--methods", "none", "--steps", "2", "--out", str(out), "--quiet"]  # fmt: skip


def launch(argv: list[str], processes: int) -> subprocess.Popen:
    """Start the CLI in ``processes`` CPU processes (torchrun, one machine, a free port) or in one plain process."""
    # One thread per process: the images of a sharded run equal a one-process run's only at equal thread counts.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    if processes == 1:
        command = [sys.executable, "-m", "scenewright.agent.cli", *argv]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "scenewright.agent.cli", *argv]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    """Wait for the launch (killing it past TIMEOUT_S) and return its output."""
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the bench did not finish in {TIMEOUT_S} s:\n{output[-3000:]}")
    return output


def run_cli(argv: list[str], processes: int) -> str:
    process = launch(argv, processes)
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    return output


def counts_lines(output: str) -> list[str]:
    """The per-process result lines of `scenewright bench` ("N generated, M already done, K failed[; paths]")."""
    return [line for line in output.splitlines() if " generated, " in line and " already done, " in line]


def generated(output: str) -> list[int]:
    return sorted(int(line.split(" generated, ")[0]) for line in counts_lines(output))


def records(out: Path) -> dict[str, dict]:
    """Every record by file name (each must parse: a damaged one fails the test)."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "records" / "none").glob("*.json"))}


def without_run_fields(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in RUN_FIELDS}


def pixels(out: Path, record: dict) -> np.ndarray:
    with Image.open(out / record["image"]) as image:
        return np.asarray(image.convert("RGB"))


def assert_equal_to_reference(out: Path, reference: Path) -> None:
    """Same units, same records (but for how they ran), same pixels, as the one-process run."""
    got, want = records(out), records(reference)
    assert sorted(got) == sorted(want)
    for name, record in got.items():
        assert record["status"] == "ok", record
        assert without_run_fields(record) == without_run_fields(want[name]), name
        assert np.array_equal(pixels(out, record), pixels(reference, want[name])), name
    assert json.loads((out / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny model saved to a folder, the prompt file, and a one-process reference run of it."""
    from scenewright.synth.testing import get_dummy_pipe

    folder = tmp_path_factory.mktemp("sharding")
    model_dir = folder / "tiny-sd"
    get_dummy_pipe(seed=0).save_pretrained(model_dir)
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    reference = folder / "one-process"
    output = run_cli(bench_argv(model_dir, prompts, reference), processes=1)
    assert generated(output) == [len(PROMPTS)]
    assert {r["process"] for r in records(reference).values()} == {0}
    return {"model_dir": model_dir, "prompts": prompts, "reference": reference}


def test_two_processes_run_each_unit_once_equal_one_process_and_write_one_summary(setup, tmp_path):
    out = tmp_path / "sharded"
    output = run_cli(bench_argv(setup["model_dir"], setup["prompts"], out), processes=2)
    # Each unit exactly once: the processes generated 3 + 3 = 6 units between them, and all 6 have a record.
    assert generated(output) == [3, 3], output[-3000:]
    made = records(out)
    assert len(made) == len(PROMPTS)
    by_process = sorted(r["process"] for r in made.values())
    assert by_process == [0, 0, 0, 1, 1, 1]
    # summary.json (and report.html): written by the main process alone, after both shards finished.
    assert sum("summary.json" in line for line in counts_lines(output)) == 1, output[-3000:]
    assert json.loads((out / "summary.json").read_text())["none"]["n"] == len(PROMPTS)
    assert_equal_to_reference(out, setup["reference"])
    assert not list(out.rglob("*.tmp"))


def _worker_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of torchrun's worker process of ``rank`` (its RANK environment variable)."""
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise LookupError(f"no worker of rank {rank} under pid {launcher.pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the workers' environment through /proc")
def test_a_process_killed_mid_run_is_resumed_by_the_same_command(setup, tmp_path):
    out = tmp_path / "killed"
    argv = bench_argv(setup["model_dir"], setup["prompts"], out)
    launcher = launch(argv, processes=2)
    # Kill rank 1 with SIGKILL as soon as its first record is on disk: it still has 2 units to go.
    deadline = time.monotonic() + TIMEOUT_S
    while not any(r["process"] == 1 for r in records(out).values()):
        assert launcher.poll() is None, f"the run ended before rank 1 wrote a record:\n{finish(launcher)[-3000:]}"
        assert time.monotonic() < deadline, "rank 1 wrote no record in time"
        time.sleep(0.01)
    os.kill(_worker_pid(launcher, rank=1), signal.SIGKILL)
    output = finish(launcher)
    assert launcher.returncode != 0, output[-3000:]  # torchrun reports the lost worker and stops the other one
    before = records(out)  # every record left parses (records() fails the test on a damaged one)
    assert 1 <= len(before) < len(PROMPTS) and all(r["status"] == "ok" for r in before.values())
    assert not (out / "summary.json").exists()  # the main process never got past the barrier
    mtimes = {name: (out / "records" / "none" / name).stat().st_mtime_ns for name in before}

    resumed = run_cli(argv, processes=2)
    # The finished units are skipped, the rest run once: every unit finished exactly once over the two runs.
    assert sum(generated(resumed)) == len(PROMPTS) - len(before), resumed[-3000:]
    assert {name: (out / "records" / "none" / name).stat().st_mtime_ns for name in before} == mtimes
    assert sum("summary.json" in line for line in counts_lines(resumed)) == 1
    assert_equal_to_reference(out, setup["reference"])
    assert not list(out.rglob("*.tmp"))  # a temp file the kill left was removed when the resumed run started
