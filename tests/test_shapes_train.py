"""The shapes-world training script end to end at toy size: VAE, UNet, export, load, warm start.

Minutes of real training live in the background run (synth/shapes/MODEL_CARD.md); this proves the
commands it documents work and that a later session can continue from the exported folder alone.
"""

from __future__ import annotations

import json

import pytest
import torch

from synth.shapes import train

TOY = ["--batch", "2", "--log-every", "1", "--save-every", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train.main(["--stage", "vae", "--run-dir", str(run), "--steps", "2", "--eval-count", "4", *TOY])
    out = run / "export"
    train.main(["--stage", "unet", "--run-dir", str(run), "--steps", "3", "--bank-size", "4", "--eval-every", "0",
                "--export", str(out), *TOY])  # fmt: skip
    return run, out


def test_export_is_a_loadable_sd_folder_with_its_step(exported):
    from diffusers import StableDiffusionPipeline

    run, out = exported
    assert json.loads((out / train.TRAINING_INFO).read_text())["step"] == 3
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    image = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    logged = [json.loads(line) for line in (run / train.LOG).read_text().splitlines()]
    assert [r["step"] for r in logged if r["stage"] == "unet" and "loss" in r] == [1, 2, 3]
    # The export declares the shapes model's guidance defaults, as the shipped folder does.
    from synth.loading import EMBEDDED_MODELS, ModelDefaults, model_defaults

    assert model_defaults(out) == ModelDefaults(attention_downscale=1, guidance_scale=2.0)
    assert model_defaults(out) == model_defaults(EMBEDDED_MODELS["shapes"])


def test_warm_start_continues_from_the_exported_weights_and_step(exported, tmp_path):
    _, out = exported
    # Warm start at the exported step and export again at once: the same weights come back out.
    again = tmp_path / "again"
    train.main(["--stage", "unet", "--run-dir", str(tmp_path / "run2"), "--init-from", str(out), "--steps", "3",
                "--export", str(again), *TOY])  # fmt: skip
    from safetensors.torch import load_file

    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        first, second = load_file(out / part), load_file(again / part)
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # The VAE came along (the UNet learnt on its latents), and training goes on counting from step 3.
    run3 = tmp_path / "run3"
    train.main(["--stage", "unet", "--run-dir", str(run3), "--init-from", str(out), "--steps", "4", "--bank-size", "4",
                "--eval-every", "0", *TOY])  # fmt: skip
    assert (run3 / train.VAE_DIR / "config.json").is_file()
    steps = [json.loads(line)["step"] for line in (run3 / train.LOG).read_text().splitlines()]
    assert steps == [4]


def test_init_from_a_folder_that_is_not_an_export_says_so(tmp_path):
    with pytest.raises(SystemExit, match="not an exported SD folder"):
        train.main(["--stage", "unet", "--run-dir", str(tmp_path), "--init-from", str(tmp_path / "nothing"), *TOY])


def test_learning_rate_warms_up_holds_then_cools_down_linearly():
    base, cooldown = 5e-4, (1000, 1500)
    lrs = [train.unet_lr(base, step, 0, 200, cooldown) for step in range(1600)]
    assert lrs[0] == pytest.approx(base / 200) and lrs[199] == pytest.approx(base)
    assert lrs[999] == lrs[500] == pytest.approx(base)  # stable until the cooldown starts
    assert lrs[1250] == pytest.approx(base * (1 - 0.98 * 0.5))
    assert lrs[1500] == lrs[1599] == pytest.approx(0.02 * base)
    assert all(a >= b for a, b in zip(lrs[1000:], lrs[1001:]))
    assert train.unet_lr(base, 1400, 0, 200, None) == pytest.approx(base)  # no cooldown: constant


@pytest.mark.parametrize("text", ["1500:1000", "12000", "a:b", "-1:5"])
def test_bad_cooldown_is_rejected_with_the_form_to_write(text):
    with pytest.raises(SystemExit, match="--cooldown"):
        train.parse_cooldown(text)
