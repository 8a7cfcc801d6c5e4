"""`scenewright generate | run | bench | serve --model <an SDXL, FLUX.1 or SD3 folder>`, bf16 and the native canvas."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scenewright.agent.cli import main
from scenewright.synth.pipeline import Synthesizer
from scenewright.synth.testing import get_dummy_flux_pipe, get_dummy_sd3_pipe, get_dummy_sdxl_pipe

PROMPT = "a cat to the left of a dog"
#: The tiny SDXL UNet cross-attends at 16x16 only; SDXL's default map size (latent / 4) is 8x8 there (the real
#: model's 32x32 at 1024 px), so its guided commands name the size. FLUX and SD3 read their image-token grid.
OPTIONS = {"sdxl": ["--option", "car_res=[16,16]", "--option", "sar_res=[16,16]"], "flux": [], "sd3": []}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    folders = {name: tmp_path_factory.mktemp(f"tiny-{name}") for name in ("sdxl", "flux", "sd3")}
    get_dummy_sdxl_pipe(seed=0).save_pretrained(folders["sdxl"])
    get_dummy_flux_pipe(seed=0, guidance_embeds=True).save_pretrained(folders["flux"])
    get_dummy_sd3_pipe(seed=0, with_t5=True).save_pretrained(folders["sd3"])
    return folders


@pytest.mark.parametrize("model", ["sdxl", "flux", "sd3"])
def test_generate_guides_a_planned_layout_in_bf16_on_the_native_canvas(folders, model, tmp_path, capsys):
    out = tmp_path / "x.png"
    argv = ["generate", PROMPT, "--model", str(folders[model]), "--dtype", "bfloat16", "--method", "car,sar",
            "--steps", "2", "--out", str(out), "--quiet", *OPTIONS[model]]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    native = Synthesizer.from_pretrained(str(folders[model])).backbone.native_size
    image = np.asarray(Image.open(out))
    assert image.shape == (*native, 3)
    assert "planned layout: a cat" in capsys.readouterr().err


def test_generate_unguided_on_sd3_is_the_diffusers_image(folders, tmp_path):
    out = tmp_path / "x.png"
    assert main(["generate", PROMPT, "--model", str(folders["sd3"]), "--method", "none", "--steps", "2",
                 "--seed", "3", "--height", "32", "--width", "32", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    pipe = get_dummy_sd3_pipe(seed=0, with_t5=True)
    expected = pipe(PROMPT, num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(3),
                    guidance_scale=7.0, output_type="np").images[0]  # fmt: skip
    drawn = np.asarray(Image.open(out)).astype(np.float32) / 255
    assert np.abs(drawn - expected).max() <= 1 / 255 + 1e-6  # the PNG's 8-bit rounding


def test_a_size_flux_cannot_draw_is_refused_before_drawing(folders, tmp_path, capsys):
    argv = ["generate", PROMPT, "--model", str(folders["flux"]), "--height", "30", "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    assert "--height 30: this model draws multiples of 4 px" in capsys.readouterr().err


@pytest.mark.parametrize(("run_model", "bench_model"), [("flux", "sd3"), ("sdxl", "sdxl")])
def test_run_and_bench_take_a_model_folder(folders, run_model, bench_model, tmp_path, capsys):
    run_out = tmp_path / "run"
    argv = ["run", PROMPT, "--model", str(folders[run_model]), "--detector", "shapes", "--attempts", "1", "--steps", "1",
            "--dtype", "bfloat16", "--out", str(run_out), "--quiet", *OPTIONS[run_model]]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((run_out / "report.json").read_text())
    assert len(report["attempts"]) == 1 and report["attempts"][0].get("error") is None
    bench_out = tmp_path / "bench"
    argv = ["bench", "--suite", "shapes", "--limit", "1", "--model", str(folders[bench_model]), "--methods",
            "none,car+sar", "--detector", "shapes", "--steps", "1", "--out", str(bench_out), "--quiet",
            *OPTIONS[bench_model]]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "2 generated, 0 already done, 0 failed" in capsys.readouterr().out


def test_serve_generates_on_a_flux_folder(folders):
    from scenewright.agent import web

    app = web.build_app(str(folders["flux"]), detector=lambda image, names: [])
    on_generate = next(f.fn for f in app.fns.values() if f.fn.__name__ == "on_generate")
    state = json.dumps({"boxes": [{"phrase": "a cat", "x": 0.05, "y": 0.2, "w": 0.4, "h": 0.6},
                                  {"phrase": "a dog", "x": 0.55, "y": 0.2, "w": 0.4, "h": 0.6}]})  # fmt: skip
    image, overlay, verdict, _, message = on_generate(PROMPT, state, ["car", "sar"], 0, 1, 1)
    assert image is not None and overlay is not None, message
    assert "1 attempt(s), not passed" in message and "expected 1 x 'a cat' (cat), the image has 0" in verdict
