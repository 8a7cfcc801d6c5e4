"""What the speed benchmarks share: each configuration in its own subprocess, timed after a warm-up, with its
peak memory above model load, and the figures printed as MiB and ratios.

Memory on CPU is the process's peak resident set (``ru_maxrss``) less the resident set right after the model was
loaded: the warm-up run is the same configuration, so the peak is the configuration's own (a resident set
sampled during the timed run alone reads ~0 once the allocator keeps what the warm-up freed). On CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the timed run. glibc keeps freed blocks below its
(adaptive) mmap threshold in the heap, so the CPU figure also counts memory freed but not returned; run with
``MALLOC_MMAP_THRESHOLD_=65536`` to read live memory more closely (SDXL at 512 px: unguided 230 MiB instead of 360).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class PeakRSS:
    """Samples this process's resident set every ``interval`` s in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def loaded_bytes(pipe) -> int:
    """This process's resident set once ``pipe``'s weights are in memory: every weight is read first, because
    ``from_pretrained`` maps safetensors files and their pages only become resident when first touched."""
    import torch

    with torch.no_grad():
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                for tensor in component.state_dict().values():
                    tensor.sum()
    return PeakRSS().current()


def measure(run: Callable[[], Any], device, repeats: int, loaded_bytes: int) -> dict:
    """Time ``repeats`` calls of ``run`` (already warmed up) on ``device``: the fastest wall and CPU seconds, the peak
    memory above model load (``loaded_bytes``: :func:`loaded_bytes` of the pipeline), and the last call's output."""
    import torch

    cuda = torch.device(device).type == "cuda"
    times, cpu_times, peaks = [], [], []
    output = None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start, cpu_start = time.perf_counter(), time.process_time()
        with PeakRSS() as rss:
            output = run()
            if cuda:
                torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        peaks.append(torch.cuda.max_memory_allocated() - base if cuda else rss.peak - rss.start)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "seconds": min(times),
        "cpu_seconds": min(cpu_times),
        "peak_bytes": min(peaks) if cuda else maxrss - loaded_bytes,
        "maxrss_bytes": maxrss,
        "output": output,
    }


def run_config(script: str, config: str, args, keys: Sequence[str], workdir: Path, extra: Sequence[str] = ()) -> dict:
    """Run ``script --worker config`` with ``--KEY value`` for each of ``keys`` (``args``' attributes) in a fresh
    process, so that its peak memory is its own; its JSON result, or ``{"error": ...}`` with stderr's tail."""
    result = workdir / f"{config}.json"
    cmd = [sys.executable, script, "--worker", config, "--result", str(result), *extra]
    for key in keys:
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    # the caller's PYTHONPATH first: it may point `scenewright` at a checkout other than the installed one
    path = [p for p in (os.environ.get("PYTHONPATH"), str(Path(script).resolve().parents[1])) if p]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"config": config, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(result.read_text())


def run_configs(script: str, configs: Sequence[str], args, keys: Sequence[str], width: int) -> dict[str, dict]:
    """Each of ``configs`` in its own process (:func:`run_config`), its time and memory printed; the results of those
    that ran, each with its worker's final latents (``"latents"``)."""
    import numpy as np

    ok: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            res = run_config(script, config, args, keys, Path(tmp))
            if "error" in res:
                print(f"{config:{width}s} FAILED {res['error']}", flush=True)
                continue
            res["latents"] = np.load(Path(tmp) / f"{config}.npy")
            print(f"{config:{width}s} wall {res['seconds']:8.2f} s  peak memory above load {mib(res['peak_bytes'])}  "
                  f"process max RSS {mib(res['maxrss_bytes'])}", flush=True)  # fmt: skip
            ok[config] = res
    return ok


def add_run_arguments(parser, configs: Sequence[str], size_help: str) -> None:
    """The options every architecture benchmark takes: device, dtype, size, steps, guided steps, seed, threads,
    repeats, the configurations to run, and the hidden ``--worker`` / ``--result`` of one config's subprocess."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--size", type=int, default=512, help=size_help)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guided", type=int, default=2, help="guided steps, the first ones (default 2 of 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per config (the minimum is reported)")
    parser.add_argument("--configs", default=",".join(configs), help=f"subset of {','.join(configs)}")
    parser.add_argument("--worker", choices=configs, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


def chosen_configs(parser, args, configs: Sequence[str]) -> list[str]:
    """``--configs`` as a list, each one of ``configs`` (else the parser's error)."""
    chosen = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(configs))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {','.join(configs)}")
    return chosen


def write_result(path: str, config: str, measured: dict, **extra: Any) -> None:
    """A worker's JSON result: ``measured`` without its output, plus ``extra``."""
    Path(path).write_text(json.dumps({"config": config, **{k: v for k, v in measured.items() if k != "output"}, **extra}))


__all__ = ["PeakRSS", "add_run_arguments", "chosen_configs", "loaded_bytes", "measure", "mib", "run_config", "run_configs", "write_result"]
