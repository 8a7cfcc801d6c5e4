"""Shared fixtures: the offline CLIP tokenizer, tiny seeded Stable Diffusion components and a saved tiny SD folder
(never the hub), and a clean environment for the commands' tests."""

from __future__ import annotations

import os

# Set before diffusers/transformers are imported anywhere: a test must never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import fuzzing  # noqa: E402  (registers and, under SCENEWRIGHT_FUZZ=1, loads the hypothesis fuzz profile)
import pytest  # noqa: E402
import torch  # noqa: E402

# The suite shares a small machine; more threads than cores only adds contention for tiny models.
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"fuzz: a hypothesis test of outside input; `{fuzzing.FUZZ_ENV}=1 pytest -m fuzz` runs each with "
        f"{fuzzing.FUZZ_EXAMPLES:,} examples",
    )


@pytest.fixture(scope="session")
def clip_tokenizer():
    """SD1.x's CLIP tokenizer, built offline from open_clip's BPE file."""
    from scenewright.synth.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer()


@pytest.fixture(scope="session")
def dummy_components():
    """Tiny seeded SD components (shared: tests must not mutate them; build a pipe from them instead)."""
    from scenewright.synth.testing import get_dummy_components

    return get_dummy_components(seed=0)


@pytest.fixture(scope="session")
def dummy_pipe(dummy_components):
    """A tiny ``StableDiffusionPipeline`` over ``dummy_components``, progress bar off."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**dummy_components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny SD pipeline saved as a diffusers folder, for ``--model``: read only, shared by the CLI tests."""
    from scenewright.synth.testing import get_dummy_pipe

    folder = tmp_path_factory.mktemp("tiny-sd")
    get_dummy_pipe(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def no_ambient_config(monkeypatch):
    """No SCENEWRIGHT_* or OPENAI_* settings from the machine running the tests (they would change the defaults)."""
    for var in [v for v in os.environ if v.startswith(("SCENEWRIGHT_", "OPENAI_"))]:
        monkeypatch.delenv(var)
