"""The install is one namespace: every package folder is listed in pyproject, and nothing of ours is top-level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("agent", "layout", "synth", "prompts", "eval")


def test_every_package_folder_installs_under_scenewright():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert config["package-dir"] == {"scenewright": "."}
    on_disk = {"scenewright"} | {
        "scenewright." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in FOLDERS
        for init in (ROOT / top).rglob("__init__.py")
    }
    # A folder missing from this list would be left out of a non-editable install without a word.
    assert set(config["packages"]) == on_disk


def test_the_distribution_installs_nothing_of_ours_at_the_top_level(tmp_path):
    # Read the installed record from an empty folder: from the source tree, its egg-info would answer.
    code = "from importlib import metadata; print(*sorted({f.parts[0] for f in metadata.distribution('scenewright').files}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    top = set(out.stdout.split())
    # An `agent` or `eval` folder in site-packages would overwrite (or be overwritten by) any other
    # distribution of that name; `eval` would also shadow a builtin's name in tracebacks.
    assert top and not top & set(FOLDERS), sorted(top)


def test_the_old_top_level_imports_fail_outside_the_source_tree(tmp_path):
    # Run from an empty folder: neither the source tree nor tests/ is on sys.path, only the install.
    code = "import scenewright.layout\ntry:\n    import layout\nexcept ImportError:\n    print('gone')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "gone", out.stderr


def test_the_public_api_is_one_import():
    from scenewright import Layout, Synthesizer, plan, run
    from scenewright.agent.loop import run as agent_run
    from scenewright.layout.schema import Layout as SchemaLayout

    assert Layout is SchemaLayout and run is agent_run and callable(plan) and Synthesizer.__name__ == "Synthesizer"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import scenewright

        scenewright.nothing  # noqa: B018
