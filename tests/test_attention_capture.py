"""The capture processor: exact attention, stores only what is asked, exits early, always restores."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from scenewright.synth.attention import AttentionCapture, CaptureProcessor, attention_capture, grid_size, layer_kind, layer_place
from scenewright.synth.maps import MapRequest
from scenewright.synth.testing import get_dummy_components


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    return get_dummy_components()["unet"].eval()


@pytest.fixture(scope="module")
def inputs(unet):
    g = torch.Generator("cpu").manual_seed(0)
    size = unet.config.sample_size
    latents = torch.randn(2, unet.config.in_channels, size, size, generator=g)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return latents, torch.tensor(500), text


def _processor_ids(unet) -> dict[str, int]:
    return {name: id(proc) for name, proc in unet.attn_processors.items()}


def test_layer_names_and_grid_sizes():
    assert layer_kind("down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor") == "self"
    assert layer_kind("up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor") == "cross"
    assert layer_kind("down_blocks.0.attentions.0.transformer_blocks.0.fuser.attn.processor") == "grounding"  # GLIGEN
    assert layer_place("mid_block.attentions.0.transformer_blocks.0.attn2.processor") == "mid"
    assert grid_size(16 * 16, (64, 64)) == (16, 16)
    assert grid_size(12 * 8, (96, 64)) == (12, 8)
    assert grid_size(7 * 7, (25, 25)) == (7, 7)  # the UNet rounds up when it halves an odd grid
    assert grid_size(100, (64, 64)) is None


def test_unguided_forward_is_unchanged_and_full_capture_matches_sdpa(unet, inputs):
    latents, t, text = inputs
    with torch.no_grad():
        reference = unet(latents, t, encoder_hidden_states=text).sample
        with attention_capture(unet, []) as capture:
            assert all(isinstance(p, CaptureProcessor) for p in unet.attn_processors.values())
            sdpa = unet(latents, t, encoder_hidden_states=text).sample
        everything = [MapRequest("cross", None), MapRequest("self", None)]
        with attention_capture(unet, everything, early_exit=False) as capture:
            out = {}
            capture.guidance_forward(lambda: out.setdefault("x", unet(latents, t, encoder_hidden_states=text).sample), (32, 32))
            explicit = out["x"]
            assert len(capture.layers) == len(unet.attn_processors)
    assert torch.equal(sdpa, reference)  # the fast path IS AttnProcessor2_0
    assert torch.allclose(explicit, reference, atol=1e-5)  # the explicit softmax path computes the same attention


def test_stores_only_requested_maps_as_fp32_probabilities(unet, inputs):
    latents, t, text = inputs
    request = MapRequest("cross", ((16, 16),), places=("down",))
    with torch.no_grad(), attention_capture(unet, [request]) as capture:
        capture.guidance_forward(lambda: unet(latents, t, encoder_hidden_states=text), (32, 32))
        maps = capture.maps(1)
    assert maps.entries and all(e.kind == "cross" and e.place == "down" and e.size == (16, 16) for e in maps.entries)
    for e in maps.entries:
        assert e.probs.dtype == torch.float32
        assert e.probs.shape[1:] == (256, 77) and e.probs.shape[0] >= 1
        torch.testing.assert_close(e.probs.sum(-1), torch.ones_like(e.probs[..., 0]))


def test_early_exit_gives_the_same_maps_and_gradients_as_a_full_forward(unet, inputs):
    latents, t, text = inputs
    request = MapRequest("cross", ((16, 16),), places=("down",))

    def maps_and_grad(early_exit: bool):
        with attention_capture(unet, [request], early_exit=early_exit) as capture:
            results = []
            for _ in range(2):  # the first pass learns the execution order, the second may exit early
                z = latents.clone().requires_grad_(True)
                capture.guidance_forward(lambda: unet(z, t, encoder_hidden_states=text), (32, 32))
                maps = capture.maps(0)
                loss = maps.mean("cross", (16, 16))[..., 3].max()  # any differentiable function of the maps
                grad = torch.autograd.grad(loss, z)[0]
                results.append(([e.probs.detach() for e in maps.entries], grad, capture.stopped_early, list(capture._calls)))
        return results[-1]

    full_maps, full_grad, full_stopped, full_calls = maps_and_grad(early_exit=False)
    early_maps, early_grad, early_stopped, early_calls = maps_and_grad(early_exit=True)
    assert not full_stopped and early_stopped
    assert len(early_calls) < len(full_calls)  # the up blocks never ran
    assert not any(name.startswith("up_blocks") for name in early_calls)
    assert len(early_maps) == len(full_maps) > 0
    for a, b in zip(early_maps, full_maps):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(early_grad, full_grad, rtol=0, atol=0)
    assert full_grad.abs().sum() > 0


def test_processors_restored_after_a_run_and_after_an_exception(unet, inputs):
    latents, t, text = inputs
    before = _processor_ids(unet)
    with attention_capture(unet, [MapRequest("cross")]) as capture:
        capture.guidance_forward(lambda: unet(latents, t, encoder_hidden_states=text), (32, 32))
    assert _processor_ids(unet) == before
    with pytest.raises(RuntimeError, match="boom"):
        with attention_capture(unet, [MapRequest("cross")]):
            raise RuntimeError("boom")
    assert _processor_ids(unet) == before


def test_request_matching_no_layer_is_a_clear_error(unet, inputs):
    latents, t, text = inputs
    with attention_capture(unet, [MapRequest("cross", ((8, 8),))]) as capture:
        with pytest.raises(ValueError, match="attn_res"):
            capture.guidance_forward(lambda: unet(latents, t, encoder_hidden_states=text), (32, 32))


def _recording_capture(name: str, latent_hw: tuple[int, int]):
    """A capture that records ``name`` as a guidance pass would (no UNet needed)."""
    capture = AttentionCapture([MapRequest("cross", None), MapRequest("self", None)], early_exit=False)
    capture.recording, capture.latent_hw = True, latent_hw
    return capture


@pytest.mark.parametrize("kind", ["cross_with_mask", "self_4d_groupnorm_residual"])
def test_explicit_path_matches_attn_processor_2_0_with_masks_norms_and_residuals(kind):
    """The stored-probabilities path computes what AttnProcessor2_0 computes, in every Attention variant."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    batch, hw = 2, (4, 4)
    if kind == "cross_with_mask":
        attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
        hidden = torch.randn(batch, 16, 8)
        context = torch.randn(batch, 5, 6)
        mask = torch.zeros(batch, 1, 5)
        mask[:, :, 3:] = -10000.0  # the last two keys are padding
        name, call = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor", (hidden, context, mask)
    else:
        attn = Attention(query_dim=8, heads=2, dim_head=4, norm_num_groups=2, residual_connection=True,
                         rescale_output_factor=2.0, bias=True)  # fmt: skip
        hidden = torch.randn(batch, 8, *hw)  # (B, C, h, w) as a VAE / UNet mid attention sees it
        name, call = "mid_block.attentions.0.transformer_blocks.0.attn1.processor", (hidden, None, None)
    expected = AttnProcessor2_0()(attn, *call)
    capture = _recording_capture(name, hw)
    got = CaptureProcessor(name, capture)(attn, *call)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    probs = capture.layers[name].probs  # (B, heads, 16, keys)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    if kind == "cross_with_mask":
        assert float(probs[..., 3:].max()) < 1e-6  # masked keys get no attention

