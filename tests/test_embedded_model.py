"""The embedded shapes-world model ships inside the package and loads through both front doors."""

from __future__ import annotations

import json

import numpy as np
import torch

from scenewright.synth.loading import EMBEDDED_MODELS, resolve_model


def test_the_package_carries_the_embedded_model_folder():
    folder = EMBEDDED_MODELS["shapes"]
    assert (folder / "model_index.json").is_file(), f"{folder} missing: is synth/shapes/model/** package data?"
    assert resolve_model("shapes") == str(folder)
    assert json.loads((folder / "training_state.json").read_text())["step"] > 0
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 25 * 2**20  # small enough to commit and install


def test_synthesizer_and_diffusers_load_it_and_draw_the_same_64px_image():
    from diffusers import StableDiffusionPipeline

    from scenewright.synth import Synthesizer

    syn = Synthesizer.from_pretrained("shapes")
    ours = syn.generate("a red circle", methods=["none"], num_inference_steps=3, guidance_scale=5.0, seed=0, output_type="np")
    pipe = StableDiffusionPipeline.from_pretrained(str(EMBEDDED_MODELS["shapes"]), safety_checker=None,
                                                   requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("a red circle", num_inference_steps=3, guidance_scale=5.0, output_type="np",
                  generator=torch.Generator("cpu").manual_seed(0)).images  # fmt: skip
    assert ours.images.shape == (1, 64, 64, 3)
    assert np.abs(ours.images - theirs).max() <= 1e-4
    # Its cross-attention was trained at the latent's own 16x16: guidance reads that, not SD's latent / 4;
    # CFG above ~2 shifts its colors, so it declares 2.0.
    assert syn.defaults.attention_downscale == 1 and syn.defaults.guidance_scale == 2.0
