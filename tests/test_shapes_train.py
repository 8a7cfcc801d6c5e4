"""The shapes-world training script end to end at toy size: VAE, UNet, export, load, warm start.

Minutes of real training live in the background run (synth/shapes/MODEL_CARD.md); this proves the
commands it documents work and that a later session can continue from the exported folder alone.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from scenewright.synth.shapes import train

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
    from scenewright.synth.loading import EMBEDDED_MODELS, model_defaults

    assert model_defaults(out) == train.SHAPES_MODEL_DEFAULTS
    assert model_defaults(out).object_sides == (12 / 64, 28 / 64)  # the world's smallest and largest objects
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


def test_alignment_loss_per_layer_catches_a_layer_that_attends_outside_the_object():
    # One object in the left half of a 16x16 grid; token 1 names it. Layer A puts all of token 1's
    # attention inside the object, layer B spreads it over the right half: the averaged map still has half
    # its mass inside, the per-layer loss sees layer B's whole miss.
    mask = torch.zeros(1, train.MAX_OBJECTS, 256)
    grid = torch.zeros(16, 16)
    grid[:, :8] = 1.0
    mask[0, 0] = grid.reshape(-1)
    token_objects = torch.zeros(1, 77, train.MAX_OBJECTS, dtype=torch.bool)
    token_objects[0, 1, 0] = True
    inside = torch.full((1, 1, 256, 77), 1.0 / 77)
    inside[0, 0, :, 1] = grid.reshape(-1) / 128
    outside = inside.clone()
    outside[0, 0, :, 1] = (1 - grid.reshape(-1)) / 128
    mean = train.attention_alignment_loss([inside, outside], token_objects, mask)
    each = train.attention_alignment_loss([inside, outside], token_objects, mask, per_layer=True)
    assert mean.item() == pytest.approx(0.25)  # half the averaged mass inside: (1 - 0.5)^2
    assert each.item() == pytest.approx(0.5)  # (0^2 + 1^2) / 2
    assert train.attention_alignment_loss([inside, inside], token_objects, mask, per_layer=True).item() == pytest.approx(0.0)


def test_box_target_wants_attention_in_the_whole_box_the_mask_target_only_on_the_object():
    # A star leaves much of its box empty. Attention spread over the box's cells off the star satisfies the
    # box target (what guidance and the attention benchmark read) and misses the mask target entirely.
    import numpy as np

    from scenewright.eval.shapes.world import sample_scene
    from scenewright.synth.maps import GuidanceTargets

    rng = np.random.default_rng(0)
    scene = next(s for s in (sample_scene(rng, curriculum_level=0) for _ in range(200)) if s.objects[0].shape == "star")
    masks = torch.from_numpy(train.object_masks_latent(scene))[None]
    boxes = torch.from_numpy(train.object_boxes_latent(scene))[None]
    expected = GuidanceTargets([[1]], torch.tensor([scene.objects[0].box]), 0).box_masks(16, 16).reshape(-1)
    assert torch.equal(boxes[0, 0], expected) and boxes[0, 1:].sum() == 0
    off_star = (boxes[0, 0] > 0) & (masks[0, 0] == 0)
    assert off_star.sum() >= 3
    token_objects = torch.zeros(1, 77, train.MAX_OBJECTS, dtype=torch.bool)
    token_objects[0, 1, 0] = True
    probs = torch.full((1, 1, 256, 77), 1.0 / 77)
    probs[0, 0, :, 1] = off_star.float() / off_star.sum()
    assert train.attention_alignment_loss([probs], token_objects, boxes).item() == pytest.approx(0.0)
    assert train.attention_alignment_loss([probs], token_objects, masks).item() == pytest.approx(1.0)


def test_a_bank_built_before_boxes_existed_gets_them_from_its_seeded_scenes(exported):
    run, _ = exported
    path = run / "bank_seed0_level2_n4.pt"
    built = torch.load(path, weights_only=True)
    old = {k: v for k, v in built.items() if k != "object_boxes"}
    torch.save(old, path)
    bank = train.load_or_build_bank(run, None, None, 0, 4, 2)  # no VAE needed: nothing is encoded again
    assert torch.equal(bank.object_boxes, built["object_boxes"]) and bank.object_boxes.sum() > 0
    assert "object_boxes" in torch.load(path, weights_only=True)  # upgraded once, on disk


def test_aux_target_chooses_what_the_training_loss_aims_at(exported, tmp_path, monkeypatch):
    # The same toy step twice from the export: the loss must get the batch's box cells, or its masks.
    _, out = exported
    seen = {}
    original = train.attention_alignment_loss

    def recording(probs, token_objects, object_regions, **kwargs):
        seen[target] = object_regions
        return original(probs, token_objects, object_regions, **kwargs)

    monkeypatch.setattr(train, "attention_alignment_loss", recording)
    for target in ("box", "mask"):
        run = tmp_path / target
        train.main(["--stage", "unet", "--run-dir", str(run), "--init-from", str(out), "--steps", "4", "--bank-size", "4",
                    "--eval-every", "0", "--aux-target", target, *TOY])  # fmt: skip
        banks = [torch.load(f, weights_only=True) for f in sorted(run.glob("bank_*.pt"))]
        field = "object_boxes" if target == "box" else "object_masks"
        rows = torch.cat([b[field] for b in banks])
        assert all(any(torch.equal(r, row) for row in rows) for r in seen[target])
    assert not torch.equal(seen["box"], seen["mask"])


@pytest.mark.parametrize("text", ["1500:1000", "12000", "a:b", "-1:5"])
def test_bad_cooldown_is_rejected_with_the_form_to_write(text):
    with pytest.raises(SystemExit, match="--cooldown"):
        train.parse_cooldown(text)


def test_gligen_stage_adds_grounding_layers_and_keeps_the_base_model_bit_for_bit(exported, tmp_path):
    from safetensors.torch import load_file

    run, out = exported
    grounded = tmp_path / "gligen"
    train.main(["--stage", "gligen", "--run-dir", str(tmp_path / "run"), "--init-from", str(out), "--steps", "2",
                "--bank-size", "4", "--eval-every", "2", "--eval-count", "2", "--eval-steps", "2",
                "--export", str(grounded), "--lr", "1e-2", "--warmup", "0", *TOY])  # fmt: skip
    base = load_file(out / "unet/diffusion_pytorch_model.safetensors")
    gated = load_file(grounded / "unet/diffusion_pytorch_model.safetensors")
    added = set(gated) - set(base)
    assert added and all(train.is_grounding_parameter(k) for k in added) and not set(base) - set(gated)
    assert all(torch.equal(base[k], gated[k]) for k in base)  # frozen: without boxes it is the base model
    # The gates start at 0; Adam moves each by ~lr (1e-2) a step, so trained gates sit far above float noise (~1e-2).
    assert max(float(gated[k].abs().max()) for k in added if k.endswith("alpha_attn")) > 1e-3
    te = "text_encoder/model.safetensors"
    assert all(torch.equal(a, b) for a, b in zip(load_file(out / te).values(), load_file(grounded / te).values()))
    assert json.loads((grounded / train.TRAINING_INFO).read_text()) | {"trained_with": ""} == {
        "step": 3, "gligen_step": 2, "trained_with": ""}  # fmt: skip
    logged = [json.loads(line) for line in (tmp_path / "run" / train.LOG).read_text().splitlines()]
    evals = [r["eval"] for r in logged if r["stage"] == "gligen" and "eval" in r]
    assert evals and set(evals[0]) == {"count_acc", "box_iou50", "background_clean"}
    # Both front doors load it as GLIGEN: the grounded model runs boxes through its position net.
    from scenewright.synth import Synthesizer
    from scenewright.synth.gligen import is_gligen_unet

    syn = Synthesizer.from_pretrained(str(grounded), gligen=True)
    assert is_gligen_unet(syn.unet)
    layout = train.bank_scenes(0, 1, 2)[0].to_layout()
    image = syn.generate(layout, num_inference_steps=2, seed=0, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
    # Trained again from the grounded export, the run goes on from its layers (not fresh zero gates).
    again = tmp_path / "again"
    train.main(["--stage", "gligen", "--run-dir", str(tmp_path / "run2"), "--init-from", str(grounded), "--steps", "0",
                "--export", str(again), *TOY])  # fmt: skip
    regated = load_file(again / "unet/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(gated[k], regated[k]) for k in gated)


def test_grounding_batch_puts_each_objects_box_and_phrase_in_its_slot(tmp_path):
    import numpy as np

    banks = {2: train.load_or_build_grounding_bank(tmp_path, 0, 6, 2)}
    scenes = train.bank_scenes(0, 6, 2)
    vocabulary = train.phrase_vocabulary()
    table = torch.randn(len(vocabulary), 8)
    rows = {2: np.array([0, 3, 5])}
    dropped = torch.tensor([False, True, False])
    batch = train.grounding_batch(banks, rows, table, np.random.default_rng(0), dropped)
    assert batch["boxes"].shape == (3, 30, 4) and batch["positive_embeddings"].shape == (3, 30, 8)
    for b, row in enumerate(rows[2]):
        objects = scenes[row].objects
        n = len(objects)
        assert batch["masks"][b].tolist() == ([0.0] * n if dropped[b] else [1.0] * n) + [0.0] * (30 - n)
        torch.testing.assert_close(batch["boxes"][b, :n], torch.tensor([o.box for o in objects], dtype=torch.float32))
        for k, obj in enumerate(objects):  # the phrase with or without its size word, as planners write either
            options = [table[vocabulary.index(obj.phrase(False))], table[vocabulary.index(obj.phrase(True))]]
            assert any(torch.equal(batch["positive_embeddings"][b, k], e) for e in options)


def test_phrase_vocabulary_holds_every_phrase_a_shapes_layout_can_have():
    vocabulary = set(train.phrase_vocabulary())
    for level in (0, 1, 2):
        for scene in train.bank_scenes(1, 40, level):
            assert {o.phrase for o in scene.to_layout().objects} <= vocabulary


def test_checkpoints_resume_through_weights_only_loading(exported, tmp_path, capsys):
    # torch.load(weights_only=True) refuses pickled code: every checkpoint the trainer writes (weights, optimizer,
    # step, the three RNG states) must be plain tensors and containers, or resuming fails here.
    run = shutil.copytree(exported[0], tmp_path / "run")  # a copy: the module's run stays as other tests read it
    capsys.readouterr()
    train.main(["--stage", "unet", "--run-dir", str(run), "--steps", "4", "--bank-size", "4", "--eval-every", "0", *TOY])
    assert "resumed" in capsys.readouterr().out
    logged = [json.loads(line) for line in (run / train.LOG).read_text().splitlines()]
    assert [r["step"] for r in logged if r["stage"] == "unet" and "loss" in r][-2:] == [3, 4]
