"""The web editor's bounds and errors (issue 21 section 2): bounded numbers, at most 30 boxes, hostile states as
messages, nothing sent to an outside host, and no temporary files left behind on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenewright.agent.web import RUN_NUMBER_BOUNDS, EditorError, run_numbers, state_to_layout
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS

REPO_PARENT = Path(__file__).resolve().parents[2]  # `scenewright` resolves here (PYTHONPATH) for the subprocesses


def _boxes(count: int) -> str:
    side = 1 / 32
    return json.dumps({"boxes": [{"phrase": "a cat", "x": (k % 6) * 0.16, "y": (k // 6) * 0.16, "w": side, "h": side}
                                 for k in range(count)]})  # fmt: skip


def test_a_layout_holds_at_most_as_many_boxes_as_the_planner_places():
    assert len(state_to_layout(_boxes(GLIGEN_MAX_OBJECTS), "cats").objects) == GLIGEN_MAX_OBJECTS
    with pytest.raises(EditorError, match=f"the canvas has 100 boxes, more than a layout holds \\({GLIGEN_MAX_OBJECTS}"):
        state_to_layout(_boxes(100), "cats")


@pytest.mark.parametrize(
    "state, needle",
    [
        ('{"boxes": [{"phrase": "a cat", "x": 1' + "0" * 400 + ', "y": 0, "w": 0.1, "h": 0.1}]}', "`x` is inf"),
        ('{"boxes": [{"phrase": "a cat", "x": 0, "y": -1' + "0" * 400 + ', "w": 0.1, "h": 0.1}]}', "`y` is -inf"),
        ("[" * 100_000, "nested too deeply"),
        ('{"boxes": [' + "[" * 5000 + "]" * 5000 + "]}", "nested too deeply"),
        ("x" * 200_000, "longer than any layout"),
    ],
)
def test_big_integers_and_deep_nesting_are_messages_not_crashes(state, needle):
    with pytest.raises(EditorError, match=needle):
        state_to_layout(state, "a cat")


@pytest.mark.parametrize(
    "numbers, needle",
    [
        ((0, 10**6, 1), "steps must be a whole number from 1 to 1000, got 1000000"),
        ((0, 0, 1), "steps must be a whole number from 1 to 1000"),
        ((-1, 25, 1), "seed must be a whole number from 0 to 4294967295"),
        ((2**40, 25, 1), "seed must be a whole number"),
        ((float("nan"), 25, 1), "seed must be a whole number"),
        ((0, float("inf"), 1), "steps must be a whole number"),
        ((0, 2.5, 1), "steps must be a whole number"),
        ((0, 25, 51), "attempts must be a whole number from 1 to 50"),
        ((0, 25, None), "attempts must be a whole number"),
        ((True, 25, 1), "seed must be a whole number"),
    ],
)
def test_seed_steps_and_attempts_are_bounded_as_scenewright_run_bounds_them(numbers, needle):
    with pytest.raises(EditorError, match=needle):
        run_numbers(*numbers)


def test_numbers_within_bounds_come_back_as_ints():
    assert run_numbers(3.0, 25.0, 2) == (3, 25, 2)
    assert RUN_NUMBER_BOUNDS == {"seed": (0, 2**32 - 1), "steps": (1, 1000), "attempts": (1, 50)}


def _subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}  # the app must set it itself
    env.update(PYTHONPATH=os.environ.get("PYTHONPATH", str(REPO_PARENT)), TMPDIR=str(tmp_path), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost")  # fmt: skip
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Records every name looked up and every address connected to while the app starts, plans and generates.
_NETWORK_PROBE = """
import json, socket, sys
seen = []
_getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect
def getaddrinfo(host, *args, **kwargs):
    seen.append(str(host))
    return _getaddrinfo(host, *args, **kwargs)
def connect(self, address):
    seen.append(str(address[0]) if isinstance(address, tuple) else "unix")
    return _connect(self, address)
socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect

from gradio_client import Client
from scenewright.agent.web import build_app
from scenewright.synth import Synthesizer
from scenewright.synth.testing import get_dummy_pipe

options = dict(car_res=[16, 16], sar_res=[16, 16], max_refinement_steps=1)
app = build_app(synthesizer=Synthesizer.from_pipe(get_dummy_pipe(seed=0)), method_options=options)
app.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), prevent_thread_lock=True, quiet=True)
client = Client(f"http://127.0.0.1:{sys.argv[1]}/", verbose=False)
state, message, _ = client.predict("a cat to the left of a dog", api_name="/on_plan")
result = client.predict("a cat to the left of a dog", state, ["car", "sar"], 0, 1, 1, api_name="/on_generate")
app.close()
print(json.dumps({"plan": message, "generate": result[-1], "hosts": sorted(set(seen))}))
"""


def test_starting_planning_and_generating_reach_no_host_but_this_machine(tmp_path):
    probe = subprocess.run([sys.executable, "-c", _NETWORK_PROBE, str(_free_port())], env=_subprocess_env(tmp_path),
                           capture_output=True, text=True, timeout=240)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["plan"].startswith("Planned 2 box(es)") and report["generate"].startswith("Generated with car, sar")
    assert report["hosts"] and set(report["hosts"]) <= {"127.0.0.1", "localhost", "::1", "unix"}, report["hosts"]


def test_sigterm_removes_the_layout_downloads_folder(tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "scenewright.agent.cli", "serve", "--port", str(port)],
                              env=_subprocess_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        from gradio_client import Client

        deadline = time.monotonic() + 120
        while True:  # until the server answers
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # noqa: BLE001 -- not listening yet
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.poll() else "timeout"
                time.sleep(0.5)
        client.predict("a cat to the left of a dog", api_name="/on_plan")  # writes layout.json for download
        assert list(tmp_path.glob("scenewright-layouts-*"))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not list(tmp_path.glob("scenewright-layouts-*"))


def test_a_planner_that_cannot_be_set_up_is_a_message_in_the_page():
    from scenewright.agent.web import build_app

    app = build_app(planner="local")  # no planner model: the page says so instead of a generic error
    on_plan = next(fn.fn for fn in app.fns.values() if fn.name == "on_plan")
    _, message, _ = on_plan("a cat")
    assert message.startswith("**Error:** the local planner cannot be set up: the local planner needs `model`")
