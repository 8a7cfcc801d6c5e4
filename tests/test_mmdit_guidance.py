"""Loss guidance on FLUX.1 and SD3: every method reads the joint-attention maps through the one guidance engine."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

from scenewright.layout.schema import Layout, LayoutObject
from scenewright.synth.guidance import update_latents
from scenewright.synth.pipeline import Synthesizer
from scenewright.synth.testing import get_dummy_flux_pipe, get_dummy_pipe, get_dummy_sd3_components

T5_LENGTH = 32  # a short T5 length keeps the tiny models fast
SIZE = 64  # px: a 16x16 image-token grid on both tiny models (their VAEs downsample 2x, then 2x2 patches)
TIMESTEP = 700.0
LAYOUT = Layout(
    prompt="a cat and a dog",
    objects=(
        LayoutObject(name="cat", phrase="a cat", box=(0.0, 0.0, 0.5, 1.0)),
        LayoutObject(name="dog", phrase="a dog", box=(0.5, 0.0, 1.0, 1.0)),
    ),
)
METHODS = ["car", "sar", "attend_excite", "layout_guidance", "boxdiff", "astar"]
#: The share of its loss each method's one step must remove. Measured (seed 0; FLUX / SD3): layout_guidance 17.6% /
#: 17.4%, astar 16.6% / 13.3%, sar 9.7% / 12.5%, attend_excite 14.5% / 5.3%, boxdiff 10.1% / 4.9%, car 4.8% / 5.9%.
#: A&E's, CAR's and BoxDiff's terms are maxima and top-k means whose gradient moves only their arg-max cells (and
#: A&E's only its most neglected object), so one step gains little more however large; float noise is ~1e-6 of the
#: loss, so 3% is still far above it.
REQUIRED_DROP = {"car": 0.03, "boxdiff": 0.03, "attend_excite": 0.03, "sar": 0.06, "layout_guidance": 0.1, "astar": 0.1}


def _sd3_pipe(with_t5: bool) -> StableDiffusion3Pipeline:
    """Tiny SD3 with two joint blocks (so one can be skipped) and sharper attention than random init gives.

    At random init the tiny SD3's query/key projections are so small that every map is near uniform (A&E's loss
    0.99, no peak to move); x3 on the projections the text -> image and image <-> image maps read (x9 on the
    logits) gives them the peaks a trained model's have. FLUX's tiny model has QK RMS norms and needs no help.
    """
    components = get_dummy_sd3_components(seed=0, with_t5=with_t5)
    config = {k: v for k, v in components["transformer"].config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel.from_config({**config, "num_layers": 2})
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if name.endswith(("to_q.weight", "to_k.weight", "add_k_proj.weight")):
                param.mul_(3)
    components["transformer"] = transformer
    pipe = StableDiffusion3Pipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipes():
    return {
        "flux_dev": get_dummy_flux_pipe(seed=0, guidance_embeds=True),
        "flux_schnell": get_dummy_flux_pipe(seed=0, guidance_embeds=False),
        "sd3": _sd3_pipe(with_t5=True),
        "sd3_without_t5": _sd3_pipe(with_t5=False),
    }


def _synthesizer(pipes, variant: str) -> Synthesizer:
    return Synthesizer.from_pipe(pipes[variant], max_sequence_length=T5_LENGTH)


def _latents(syn: Synthesizer) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return syn.backbone.prepare_latents(1, SIZE, SIZE, generator, torch.float32, torch.device("cpu"))


def _measure(syn, latents, methods, **options):
    return syn.measure(LAYOUT, latents, TIMESTEP, methods, height=SIZE, width=SIZE, **options)


def _descend(latents: torch.Tensor, measured) -> torch.Tensor:
    """One update whose first-order decrease is a fifth of the loss (a Polyak step, 0.2 * L / |grad|^2)."""
    step = 0.2 * float(measured.total) / float(measured.grad.pow(2).sum())
    return update_latents(latents, measured.grad, step, torch.ones(1, dtype=torch.bool))


def _blocks(transformer) -> list[torch.nn.Module]:
    return [*transformer.transformer_blocks, *getattr(transformer, "single_transformer_blocks", [])]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ["flux_dev", "sd3"])
def test_one_guided_step_lowers_each_methods_loss(pipes, variant, method):
    """Capture -> loss -> gradient on the latents (FLUX: packed) is a descent direction for every method."""
    syn = _synthesizer(pipes, variant)
    latents = _latents(syn)
    before = _measure(syn, latents, [method])
    assert before.grad.dtype == torch.float32 and before.grad.shape == latents.shape
    assert torch.isfinite(before.total).all() and before.total.item() > 0 and before.grad.abs().sum() > 0
    after = _measure(syn, _descend(latents, before), [method])
    drop = 1 - after.total.item() / before.total.item()
    assert drop > REQUIRED_DROP[method], (variant, method, before.total.item(), after.total.item())


@pytest.mark.parametrize(
    ("variant", "groups"),
    [("flux_dev", [[1], [4]]), ("sd3", [[2, 78], [5, 81]]), ("sd3_without_t5", [[2], [5]])],
)
def test_phrases_map_to_the_text_keys_the_transformer_reads(pipes, variant, groups):
    """FLUX: T5 positions (0 = first piece); SD3: CLIP positions (0 = <|startoftext|>), then T5's at 77 + i."""
    syn = _synthesizer(pipes, variant)
    measured = _measure(syn, _latents(syn), ["car"])
    assert measured.targets[0].token_groups == groups
    keys = measured.maps[0].entries[0].probs.shape[-1]
    assert keys == (T5_LENGTH if variant == "flux_dev" else 77 + T5_LENGTH)


def test_a_phrase_at_the_first_t5_position_is_guided_on_flux(pipes):
    """FLUX's T5 keys have no start token: a prompt's first word (position 0) is a key A&E's maps keep."""
    syn = _synthesizer(pipes, "flux_dev")
    layout = Layout(prompt="cats and dogs", objects=(
        LayoutObject(name="cat", phrase="cats", box=(0.0, 0.0, 0.5, 1.0)),
        LayoutObject(name="dog", phrase="dogs", box=(0.5, 0.0, 1.0, 1.0)),
    ))  # fmt: skip
    measured = syn.measure(layout, _latents(syn), TIMESTEP, ["attend_excite"], height=SIZE, width=SIZE)
    assert measured.targets[0].token_groups[0][0] == 0
    assert torch.isfinite(measured.total).all() and measured.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["flux_dev", "sd3"])
def test_the_guided_forward_stops_after_the_last_block_read(pipes, variant):
    syn = _synthesizer(pipes, variant)
    transformer = syn.backbone.model
    blocks = _blocks(transformer)
    assert len(blocks) == 2 and syn.backbone.guidance_blocks == (0,)  # the first third of two blocks
    calls = [0] * len(blocks)
    # pre-hooks: the block that stops the pass is entered but never returns
    hooks = [block.register_forward_pre_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
             for k, block in enumerate(blocks)]  # fmt: skip
    try:
        _measure(syn, _latents(syn), ["car", "sar"])
        assert calls == [1, 0]  # block 1 ran neither forward nor (so) backward
        calls[:] = [0, 0]
        _measure(syn, _latents(syn), ["car", "sar"], mmdit_blocks=[1])
        assert calls == [1, 1]
        calls[:] = [0, 0]
        syn.generate(LAYOUT, methods=["car"], num_inference_steps=1, height=SIZE, width=SIZE, seed=0, output_type="latent",
                     max_iter_to_alter=1, thresholds={})  # fmt: skip
        # one guided forward (stopped after block 0), then the step's full forward(s)
        assert calls[0] == calls[1] + 1
    finally:
        for hook in hooks:
            hook.remove()
    assert all(type(p).__name__ in ("FluxAttnProcessor", "JointAttnProcessor2_0") for p in transformer.attn_processors.values())


@pytest.mark.parametrize("methods", [["car", "sar"], ["attend_excite"], ["layout_guidance"]])
@pytest.mark.parametrize("variant", ["flux_dev", "sd3"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradient(pipes, variant, methods):
    syn = _synthesizer(pipes, variant)
    latents = _latents(syn)
    plain = _measure(syn, latents, methods, mmdit_blocks=[0, 1])
    checkpointed = _measure(syn, latents, methods, mmdit_blocks=[0, 1], gradient_checkpointing=True)
    torch.testing.assert_close(checkpointed.total, plain.total, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(checkpointed.grad, plain.grad, atol=1e-5, rtol=1e-5)
    assert plain.grad.abs().max() > 1e-4  # the comparison is not of zeros
    assert not any(getattr(m, "gradient_checkpointing", False) for m in syn.backbone.model.modules())  # restored


def test_a_block_the_model_lacks_is_a_clear_error(pipes):
    flux, sd3 = _synthesizer(pipes, "flux_dev"), _synthesizer(pipes, "sd3")
    with pytest.raises(ValueError, match=r"`mmdit_blocks` \[5\] names blocks this FLUX.1 transformer lacks: it has 2 "
                                         r"joint-attention blocks \(indices 0-1"):  # fmt: skip
        _measure(flux, _latents(flux), ["car"], mmdit_blocks=[0, 5])
    with pytest.raises(ValueError, match=r"`mmdit_blocks` \[2\] names blocks this SD3 transformer lacks: it has 2"):
        sd3.generate(LAYOUT, methods=["attend_excite"], mmdit_blocks=[2], num_inference_steps=1, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match=r"`mmdit_blocks` must be a non-empty list"):
        _measure(flux, _latents(flux), ["car"], mmdit_blocks=[])
    with pytest.raises(ValueError, match=r"image-token grid \(16, 16\).*leave the methods' `\*_res` options"):
        _measure(flux, _latents(flux), ["car"], car_res=(4, 4))
    with pytest.raises(ValueError, match=r"`mmdit_blocks` picks FLUX.1/SD3 transformer blocks; on a UNet"):
        Synthesizer.from_pipe(get_dummy_pipe()).measure(LAYOUT, torch.randn(1, 4, 32, 32), 500, ["car"], mmdit_blocks=[0])
    with pytest.raises(ValueError, match=r"pass `height` and `width`"):
        flux.measure(LAYOUT, _latents(flux), TIMESTEP, ["car"])
    with pytest.raises(ValueError, match=r"`token_indices` \[40\] .*on T5 tokens valid positions are 0..4"):
        flux.generate(LAYOUT, methods=["attend_excite"], token_indices=[1, 40], num_inference_steps=1, height=SIZE,
                      width=SIZE)  # fmt: skip


def test_a_bf16_flux_guided_step_keeps_the_math_in_fp32(pipes):
    pipe = get_dummy_flux_pipe(seed=0, guidance_embeds=True).to(torch.bfloat16)
    syn = Synthesizer.from_pipe(pipe, max_sequence_length=T5_LENGTH)
    generator = torch.Generator().manual_seed(0)
    latents = syn.backbone.prepare_latents(1, SIZE, SIZE, generator, torch.bfloat16, torch.device("cpu"))
    before = _measure(syn, latents, ["layout_guidance"])
    assert before.total.dtype == before.grad.dtype == torch.float32
    assert math.isfinite(before.total.item()) and torch.isfinite(before.grad).all()
    moved = _descend(latents, before)
    assert moved.dtype == torch.bfloat16  # the update is done in fp32 and cast back to the model's dtype
    after = _measure(syn, moved, ["layout_guidance"])
    # 0.403 -> 0.332 (17.6% down, as in fp32)
    assert after.total.item() < 0.9 * before.total.item(), (before.total.item(), after.total.item())


@pytest.mark.parametrize("variant", ["flux_dev", "flux_schnell", "sd3", "sd3_without_t5"])
def test_generate_with_car_and_sar_runs_end_to_end(pipes, variant):
    syn = _synthesizer(pipes, variant)
    out = syn.generate(LAYOUT, methods=["car", "sar"], num_inference_steps=3, height=SIZE, width=SIZE, seed=0,
                       output_type="np", max_iter_to_alter=2)  # fmt: skip
    plain = syn.generate(LAYOUT, num_inference_steps=3, height=SIZE, width=SIZE, seed=0, output_type="np")
    assert [record.step for record in out.steps] == [0, 1]
    for record in out.steps:
        assert set(record.losses) == {"car", "sar"} and all(math.isfinite(v) for v in record.total_loss)
        assert not any(record.skipped)
    assert out.images.shape == plain.images.shape == (1, SIZE, SIZE, 3)
    assert abs(out.images - plain.images).max() > 1e-3  # the guidance changed the image


def test_guidance_composes_with_flux_regional_attention(pipes):
    syn = _synthesizer(pipes, "flux_dev")
    out = syn.generate(LAYOUT, methods=["car", "sar"], spatial_temporal=True, num_inference_steps=2, height=SIZE,
                       width=SIZE, seed=0, output_type="latent", max_iter_to_alter=1)  # fmt: skip
    assert len(out.steps) == 1 and all(math.isfinite(v) for v in out.steps[0].total_loss)
    assert all(type(p).__name__ == "FluxAttnProcessor" for p in syn.backbone.model.attn_processors.values())


@pytest.mark.parametrize("variant", ["flux_dev", "sd3"])
def test_the_attention_refocusing_preset_runs_without_grounding(pipes, variant):
    """CAR + SAR on Attention Refocusing's schedule; an MM-DiT has no GLIGEN fuser, so the grounding term is 0."""
    syn = _synthesizer(pipes, variant)
    out = syn.generate(LAYOUT, methods=["attention_refocusing"], num_inference_steps=2, height=SIZE, width=SIZE,
                       seed=0, output_type="latent")  # fmt: skip
    assert [record.step for record in out.steps] == [0, 1]
    assert all(math.isfinite(v) and v > 0 for record in out.steps for v in record.total_loss)
