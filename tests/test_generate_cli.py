"""`scenewright generate` through `scenewright.agent.cli.main`, on a tiny model saved to disk (the real from_pretrained path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scenewright.agent.cli import main
from scenewright.layout.schema import Layout

# The tiny UNet has cross/self attention only at 16x16 (SD1.5 at 512 px: latent / 4 = 16x16 too);
# one refinement step keeps the test fast.
TINY_OPTIONS = ["--option", "car_res=[16,16]", "--option", "sar_res=[16,16]", "--option", "max_refinement_steps=1"]
LAYOUT = {
    "prompt": "a cat and a dog",
    "objects": [
        {"name": "cat", "phrase": "a cat", "box": [0.05, 0.3, 0.45, 0.7]},
        {"name": "dog", "phrase": "a dog", "box": [0.55, 0.3, 0.95, 0.7]},
    ],
}


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_layout_file_gives_the_image_the_python_api_gives(model_dir, tmp_path, capsys):
    from scenewright.synth import Synthesizer

    layout_file = tmp_path / "layout.json"
    layout_file.write_text(json.dumps(LAYOUT), encoding="utf-8")
    out = tmp_path / "images" / "guided.png"
    argv = ["generate", "--layout", str(layout_file), "--model", str(model_dir), "--method", "car,sar",
            "--steps", "1", "--seed", "3", "--out", str(out), "--quiet", *TINY_OPTIONS]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    syn = Synthesizer.from_pretrained(str(model_dir))
    options = dict(car_res=(16, 16), sar_res=(16, 16), max_refinement_steps=1)
    kwargs = dict(num_inference_steps=1, seed=3, output_type="pil", **options)
    expected = syn.generate(Layout.parse(LAYOUT), methods=["car", "sar"], **kwargs)
    assert [record.step for record in expected.steps] == [0]  # guided (test_equivalence: guidance changes images)
    assert np.array_equal(_pixels(out), np.asarray(expected.images[0], dtype=np.int16))


def test_method_none_equals_stable_diffusion_pipeline(model_dir, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "plain.png"
    argv = ["generate", "a red cube", "--model", str(model_dir), "--method", "none", "--steps", "2",
            "--guidance-scale", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "denoising" in capsys.readouterr().err  # the progress bar ran over the steps
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red cube", num_inference_steps=2, guidance_scale=5, generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(_pixels(out), np.asarray(ref, dtype=np.int16))


def test_a_planned_layout_is_fitted_to_the_object_sizes_the_model_declares(model_dir, tmp_path, capsys):
    import json
    import shutil

    folder = tmp_path / "declares"
    shutil.copytree(model_dir, folder)
    (folder / "scenewright.json").write_text(json.dumps({"attention_downscale": 4, "object_sides": [0.1, 0.25]}))
    saved = tmp_path / "used.json"
    argv = ["generate", "a cat", "--model", str(folder), "--method", "attend_excite", "--steps", "1", "--quiet",
            "--out", str(tmp_path / "cat.png"), "--save-layout", str(saved), "--option", "attn_res=[16,16]",
            "--option", "max_refinement_steps=0"]  # fmt: skip
    assert main(argv) == 0
    assert "layout changed: objects[0] 'cat': scaled to the model's object sizes" in capsys.readouterr().err
    (box,) = Layout.load(saved).boxes
    assert max(box[2] - box[0], box[3] - box[1]) == pytest.approx(0.25)


def test_prompt_is_planned_into_a_layout_when_guidance_needs_one(model_dir, tmp_path, capsys):
    out, saved = tmp_path / "ae.png", tmp_path / "used.json"
    argv = ["generate", "a cat and a dog", "--model", str(model_dir), "--method", "attend_excite", "--steps", "2",
            "--batch-size", "2", "--out", str(out), "--save-layout", str(saved), "--quiet",
            "--option", "attn_res=[16,16]", "--option", "max_refinement_steps=1"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "planned layout: a cat" in captured.err
    assert Layout.load(saved).names == ["cat", "dog"]
    paths = captured.out.split()
    assert paths == [str(out), str(tmp_path / "ae_1.png")]
    first, second = (_pixels(p) for p in paths)
    assert first.shape == (64, 64, 3) and np.abs(first - second).max() > 50  # two different samples (~250 levels apart)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a cat", "--model", ""], "--model is empty"),
        (["a cat", "--model", "/nonexistent/sd"], "does not exist"),
        (["a cat", "--model", "MODEL", "--method", "car,teleport"], "unknown method(s) teleport; choose from none, "),
        (["a cat", "--model", "MODEL", "--method", "none,car"], "cannot be combined"),
        (["--model", "MODEL"], "exactly one of PROMPT or --layout"),
        (["a cat", "--layout", "LAYOUT", "--model", "MODEL"], "exactly one of PROMPT or --layout"),
        (["--layout", "BAD_LAYOUT", "--model", "MODEL"], "objects.0.box"),
        (["--layout", "/nonexistent/layout.json", "--model", "MODEL"], "cannot read layout file"),
        (["a cat", "--model", "MODEL", "--option", "scale_factor"], "is not KEY=VALUE"),
        (["a cat", "--model", "MODEL", "--out", "cat.gif"], "--out cat.gif must end in one of"),
        (["a cat", "--model", "MODEL", "--steps", "0"], "--steps must be >= 1"),
        (["a cat", "--model", "MODEL", "--token-indices", "two"], "comma-separated integers"),
        (["a cat", "--model", "MODEL", "--device", "gpu0"], "is not a torch device"),
        (["a cat", "--model", "MODEL", "--spatial-temporal", "-1"], "--spatial-temporal WEIGHT must be a finite number"),
        (["a cat", "--model", "MODEL", "--spatial-temporal", "nan"], "--spatial-temporal WEIGHT must be a finite number"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(model_dir, tmp_path, capsys, argv, message):
    bad_layout = tmp_path / "bad.json"
    bad_layout.write_text(json.dumps({**LAYOUT, "objects": [{**LAYOUT["objects"][0], "box": [0.5, 0.5, 0.2, 0.9]}]}))
    good_layout = tmp_path / "layout.json"
    good_layout.write_text(json.dumps(LAYOUT))
    places = {"MODEL": str(model_dir), "LAYOUT": str(good_layout), "BAD_LAYOUT": str(bad_layout)}
    assert main(["generate", *[places.get(a, a) for a in argv], "--quiet"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err


def test_spatial_temporal_flag_blends_phrases_into_boxes_as_the_python_api(model_dir, tmp_path, capsys):
    from scenewright.synth import Synthesizer
    from scenewright.synth.spatial_temporal import SpatialTemporalControl

    layout_file = tmp_path / "layout.json"
    layout_file.write_text(json.dumps(LAYOUT), encoding="utf-8")
    # Four steps: the local weight ramps from 0 at the first step, so two steps would blend in one step only.
    common = ["--layout", str(layout_file), "--model", str(model_dir), "--method", "none", "--steps", "4", "--quiet"]
    paths = {name: tmp_path / f"{name}.png" for name in ("plain", "zero", "on")}
    assert main(["generate", *common, "--out", str(paths["plain"])]) == 0
    assert main(["generate", *common, "--spatial-temporal", "0", "--out", str(paths["zero"])]) == 0
    assert main(["generate", *common, "--spatial-temporal", "--out", str(paths["on"])]) == 0  # WEIGHT defaults to 1
    plain, zero, on = (_pixels(paths[name]) for name in ("plain", "zero", "on"))
    assert np.array_equal(zero, plain)  # every w_i(t) = 0 is the plain loop
    syn = Synthesizer.from_pretrained(str(model_dir))
    control = SpatialTemporalControl(local_weight=1.0)
    layout = Layout.parse(LAYOUT)
    expected = syn.generate(layout, num_inference_steps=4, seed=0, spatial_temporal=control).images[0]
    assert np.array_equal(on, np.asarray(expected, dtype=np.int16))  # the flag is the Python API's control
    # The control's effect, in floats (uint8 rounding can hide it): ~3e-3 on the tiny model, noise ~1e-6.
    floats = [syn.generate(layout, num_inference_steps=4, seed=0, output_type="np", spatial_temporal=st).images[0]
              for st in (control, None)]  # fmt: skip
    assert np.abs(floats[0] - floats[1]).max() > 5e-4
    # With a PROMPT and --method none, the flag still plans the layout it needs.
    assert main(["generate", "a cat and a dog", *common[2:], "--spatial-temporal", "--out", str(tmp_path / "p.png")]) == 0
    assert "planned layout: a cat" in capsys.readouterr().err


def test_errors_found_while_generating_exit_2(model_dir, tmp_path, capsys):
    # Loads the model, then the engine rejects a token position past the prompt's end.
    argv = ["generate", "a cat and a frog", "--model", str(model_dir), "--method", "attend_excite",
            "--token-indices", "2,9", "--steps", "1", "--out", str(tmp_path / "x.png"), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "5: 'frog'" in errors[0]
    assert not (tmp_path / "x.png").exists()


def test_a_bug_in_our_code_keeps_its_traceback_and_batches_come_through_the_attempt_runner(model_dir, tmp_path, monkeypatch):
    from scenewright.eval import attempt as attempt_module
    from scenewright.synth.pipeline import Synthesizer

    drawn = []
    real_attempt = attempt_module.attempt
    monkeypatch.setattr(attempt_module, "attempt", lambda *a, **k: drawn.append(k) or real_attempt(*a, **k))
    argv = ["generate", "a red circle", "--model", str(model_dir), "--method", "none", "--steps", "1", "--batch-size", "2",
            "--out", str(tmp_path / "x.png"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert len(drawn) == 1 and drawn[0]["batch_size"] == 2
    assert (tmp_path / "x.png").exists() and (tmp_path / "x_1.png").exists()

    def broken(self, *args, **kwargs):
        raise ValueError("an internal shape mismatch")  # a plain ValueError: ours, not the user's

    monkeypatch.setattr(Synthesizer, "generate", broken)
    with pytest.raises(attempt_module.AttemptError, match="synthesize failed: ValueError: an internal shape mismatch") as caught:
        main([*argv[:-3], "--out", str(tmp_path / "y.png"), "--quiet"])
    assert type(caught.value.__cause__) is ValueError  # the traceback reaches the user, not "error: ..." and exit 2


def test_default_model_is_the_embedded_one_with_a_clear_error_when_absent(monkeypatch, tmp_path, capsys):
    from scenewright.synth import loading

    monkeypatch.setitem(loading.EMBEDDED_MODELS, "shapes", tmp_path / "not-built")
    assert main(["generate", "a red circle", "--out", str(tmp_path / "x.png"), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "embedded 'shapes' model is not in this build" in errors[0]
    assert "--export" in errors[0]  # says how to make it
