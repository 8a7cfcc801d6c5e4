"""Box-confined spatial-temporal attention control (Wu et al. 2023) in the capture processor."""

from __future__ import annotations

import pytest
import torch

from scenewright.layout.schema import Layout
from scenewright.synth import Synthesizer
from scenewright.synth.spatial_temporal import SpatialTemporalControl, fixed_schedule, soft_box_masks

BOX = [0.0, 0.0, 0.75, 1.0]
LAYOUT = Layout.from_gligen("a photo of a red car on a street", ["a yellow bird"], [BOX])
STEPS = 3


@pytest.fixture(scope="module")
def syn(dummy_pipe) -> Synthesizer:
    return Synthesizer.from_pipe(dummy_pipe)


def _inside(latents: torch.Tensor) -> torch.Tensor:
    h, w = latents.shape[-2:]
    return latents[..., : int(BOX[3] * h), : int(BOX[2] * w)]


def test_soft_masks_are_one_inside_zero_outside_and_soft_at_the_edge():
    mask = soft_box_masks(torch.tensor([[0.25, 0.25, 0.75, 0.75]]), (8, 8), softness=1.0).view(8, 8)
    assert mask[4, 4] > 0.95 and mask[0, 0] < 0.05
    assert 0.5 < mask[2, 4] < 0.95 and 0.05 < mask[1, 4] < 0.5  # rows either side of the edge are soft


def test_fixed_schedule_moves_from_global_to_local():
    weights = fixed_schedule(5, 2, local_weight=2.0)
    assert weights.shape == (5, 1, 2)
    assert weights[0].eq(0).all() and weights[-1].eq(2.0).all() and (weights[1:, 0, 0] > weights[:-1, 0, 0]).all()


def test_all_weights_zero_equals_the_plain_loop_exactly(syn):
    kwargs = dict(num_inference_steps=STEPS, seed=0, output_type="latent")
    plain = syn.generate(LAYOUT, **kwargs).images
    zero = syn.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(local_weight=0.0), **kwargs).images
    assert torch.equal(plain, zero)


def test_weights_move_the_box_toward_its_local_description(syn):
    kwargs = dict(num_inference_steps=STEPS, seed=0, output_type="latent")
    plain = syn.generate(LAYOUT, **kwargs).images
    local_only = syn.generate(LAYOUT.objects[0].phrase, **kwargs).images  # the phrase as the whole prompt
    weights = torch.full((STEPS, 1, 1), 50.0)  # local description dominates the box at every step
    controlled = syn.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(weights=weights), **kwargs).images
    before = (_inside(plain) - _inside(local_only)).norm()
    after = (_inside(controlled) - _inside(local_only)).norm()
    print(f"distance in the box to the local-only output: {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before


def test_bad_weights_shape_names_the_expected_one(syn):
    with pytest.raises(ValueError, match=r"expected \(steps, images, objects\)"):
        syn.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(weights=torch.zeros(2, 1, 1)), num_inference_steps=3)
    with pytest.raises(ValueError, match="layouts with objects"):
        syn.generate("a cat", spatial_temporal=True, num_inference_steps=1)


def _tiny_clip():
    """A tiny open_clip CLIP built from config, random weights (nothing downloaded)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from scenewright.synth.spatial_temporal import ClipScore

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return ClipScore(model)


def test_clip_weight_optimization_lowers_its_loss(syn):
    # Start from weight 1 so that Adam may move it either way (the clamp keeps weights >= 0).
    weights = torch.ones(2, 1, 1)
    control = SpatialTemporalControl(weights=weights, clip=_tiny_clip(), epochs=4, lr=0.5, optimize_steps=1)
    out = syn.generate(LAYOUT, spatial_temporal=control, num_inference_steps=2, seed=0, output_type="latent")
    regional_history = out.spatial_temporal_history
    assert list(regional_history) == [0] and len(regional_history[0]) == 4
    first, last = regional_history[0][0], regional_history[0][-1]
    print(f"CLIP loss over 4 epochs at step 0: {regional_history[0]}")
    assert last < first
