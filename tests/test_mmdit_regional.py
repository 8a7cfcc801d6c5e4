"""Regional attention on SD3/SD3.5, and LMD's latent composition on FLUX.1 and SD3, through the one loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scenewright.layout.schema import Layout, LayoutObject
from scenewright.synth.composition import (
    CompositionOptions,
    LatentComposition,
    PlacedObject,
    box_cells,
    centring_shift,
    compose_layout,
    joint_attention_extents,
    joint_phrase_positions,
    noised_to,
    shifted_trajectory,
)
from scenewright.synth.controllers import StepController
from scenewright.synth.pipeline import Synthesizer
from scenewright.synth.regional_attention import RegionalAttention, image_first, regional_attention_mask
from scenewright.synth.spatial_temporal import SpatialTemporalControl
from scenewright.synth.testing import get_dummy_flux_pipe, get_dummy_sd3_pipe, get_dummy_sd35_pipe

T5_LENGTH = 32  # a short T5 length keeps the tiny models fast; the default is the pipelines' (512 / 256)
LAYOUT = Layout(
    prompt="a cat and a dog",
    objects=(
        LayoutObject(name="cat", phrase="a cat", box=(0.0, 0.0, 0.5, 1.0)),
        LayoutObject(name="dog", phrase="a dog", box=(0.5, 0.0, 1.0, 1.0)),
    ),
)


@pytest.fixture(scope="module")
def pipes():
    return {
        "flux_dev": get_dummy_flux_pipe(seed=0, guidance_embeds=True),
        "sd3": get_dummy_sd3_pipe(seed=0, with_t5=True),
        "sd3_without_t5": get_dummy_sd3_pipe(seed=0, with_t5=False),
        "sd35": get_dummy_sd35_pipe(),
    }


def _syn(pipes, variant) -> Synthesizer:
    return Synthesizer.from_pipe(pipes[variant], max_sequence_length=T5_LENGTH)


def _generate(syn, **kwargs):
    kwargs = {"num_inference_steps": 3, "height": 32, "width": 48, "seed": 0, "output_type": "np", **kwargs}
    return syn.generate(LAYOUT, **kwargs).images


# --- A. regional attention on SD3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["sd3", "sd3_without_t5", "sd35"])
def test_zero_regional_weight_is_the_unguided_sd3_image_exactly(pipes, variant):
    syn = _syn(pipes, variant)
    transformer = syn.backbone.model
    originals = transformer.attn_processors
    plain = _generate(syn)  # SD3's real CFG (7.0)
    zero = _generate(syn, spatial_temporal=SpatialTemporalControl(local_weight=0.0))
    assert abs(zero - plain).max() <= 1e-6
    regional = _generate(syn, spatial_temporal=True)
    assert abs(regional - plain).max() > 1e-4  # the phrases' tokens really steer the image
    half = _generate(syn, spatial_temporal=SpatialTemporalControl(local_weight=0.5))  # blends with the base output
    assert abs(half - plain).max() > 1e-5 and abs(half - regional).max() > 1e-5
    without_cfg = _generate(syn, spatial_temporal=True, guidance_scale=1.0)  # one row per image, no negatives
    assert abs(without_cfg - _generate(syn, guidance_scale=1.0)).max() > 1e-4
    assert transformer.attn_processors == originals  # restored after each call
    if variant == "sd35":  # the image-only attn2 is not joint: it keeps diffusers' processor during the loop
        assert type(transformer.transformer_blocks[0].attn.norm_q).__name__ == "RMSNorm"
        during = ProcessorsDuringTheLoop(transformer)
        _generate(syn, spatial_temporal=True, controllers=[during])
        assert during.kinds == {"transformer_blocks.0.attn.processor": "RegionalAttentionProcessor",
                                "transformer_blocks.0.attn2.processor": "JointAttnProcessor2_0",
                                "transformer_blocks.1.attn.processor": "RegionalAttentionProcessor"}  # fmt: skip


class ProcessorsDuringTheLoop(StepController):
    """Notes which processor class each attention module has while the loop runs."""

    def __init__(self, transformer):
        self.transformer, self.kinds = transformer, {}

    def before_step(self, i, t, latents):
        self.kinds = {name: type(p).__name__ for name, p in self.transformer.attn_processors.items()}
        return latents


@pytest.mark.parametrize("variant", ["sd3", "sd3_without_t5"])
def test_sd3_regional_tokens_are_the_phrases_own_clip_then_t5_tokens(pipes, variant):
    syn = _syn(pipes, variant)
    spans = syn.backbone.phrase_token_spans(["a cat", "a dog"])
    # CLIP: <|startoftext|> a cat <|endoftext|>; T5 (after the 77 CLIP tokens): ▁a ▁cat </s>
    expected = {"CLIP": slice(0, 4), "T5": slice(77, 80)} if variant == "sd3" else {"CLIP": slice(0, 4)}
    assert spans == expected
    assert syn.backbone.text_length == 77 + T5_LENGTH
    length = syn._region_length([LAYOUT])
    assert length == (7 if variant == "sd3" else 4)
    embeds = syn._phrase_embeds([LAYOUT], length, 32, 48)  # (B, N, Lr, D)
    own = syn.backbone.encode(["a dog"], None, False, syn.device, 32, 48).embeds  # the phrase encoded alone
    torch.testing.assert_close(embeds[0, 1], torch.cat([own[:, s] for s in spans.values()], dim=1)[0])


def _masked_scores(attn, image, text):
    """SD3's joint scores [image, text] x [image, text], as JointAttnProcessor2_0 computes them: (B, heads, S, S)."""

    def heads(projection, norm, x):
        x = projection(x).unflatten(-1, (attn.heads, -1))
        return x if norm is None else norm(x)

    q = torch.cat([heads(attn.to_q, attn.norm_q, image), heads(attn.add_q_proj, attn.norm_added_q, text)], 1)
    k = torch.cat([heads(attn.to_k, attn.norm_k, image), heads(attn.add_k_proj, attn.norm_added_k, text)], 1)
    v = torch.cat([heads(attn.to_v, None, image), heads(attn.add_v_proj, None, text)], 1)
    return torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1]), v


@pytest.mark.parametrize("variant", ["sd3", "sd3_without_t5"])
def test_sd3_phrase_attention_mass_lands_inside_its_box(pipes, variant):
    """In SD3's joint block (image first), each phrase token's attention over the image lies in its box; the CFG
    batch's negative rows run diffusers' processor on the base prompt alone."""
    syn = _syn(pipes, variant)
    transformer = syn.backbone.model
    read = "transformer_blocks.0.attn"
    seen: dict = {}

    def keep(module, args, kwargs):  # the block's inputs, and the regional state its processor reads
        seen.setdefault("inputs", dict(kwargs))
        seen.setdefault("processor", module.processor)

    hook = dict(transformer.named_modules())[read].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        syn.generate(LAYOUT, spatial_temporal=True, num_inference_steps=1, height=32, width=48, seed=0,
                     guidance_scale=5.0, output_type="latent")  # fmt: skip
    finally:
        hook.remove()
    regional: RegionalAttention = seen["processor"].regional
    attn, inputs = dict(transformer.named_modules())[read], seen["inputs"]
    image, text = inputs["hidden_states"], inputs["encoder_hidden_states"]
    assert image.shape[0] == 2 and text.shape[1] == regional.text_length  # [negative, prompt]; base + 2 phrases
    num_image = image.shape[1]
    with torch.no_grad():
        scores, values = _masked_scores(attn, image[1:], text[1:])  # the prompt's row
    mask = regional.image_first_mask
    assert torch.equal(mask, image_first(regional_attention_mask(regional.inside, regional.present,
                                                                 regional.base_length, regional.region_length),
                                         num_image))  # fmt: skip
    masked = scores.masked_fill(~mask, float("-inf")).softmax(-1).mean(1)[0]  # (S, S) over [image, text]
    unmasked = scores.softmax(-1).mean(1)[0]
    shares = []
    for n in range(2):
        tokens = slice(num_image + regional.base_length + n * regional.region_length,
                       num_image + regional.base_length + (n + 1) * regional.region_length)  # fmt: skip
        box = regional.inside[0, n]  # (h*w,) the object's box at the token grid: half the image
        for probs, least, most in ((masked, 0.999, 1.001), (unmasked, 0.0, 0.8)):
            over_image = probs[tokens, :num_image]  # (Lr, h*w)
            share = over_image[:, box].sum(-1) / over_image.sum(-1)
            shares.append(float(share.min()))
            assert least <= float(share.min()) and float(share.max()) <= most
        assert float(masked[:num_image][~box][:, tokens].sum()) == 0.0  # image tokens outside give it nothing
    print(f"{variant}: phrase mass inside its box, masked / unmasked (min per phrase): {shares}")
    with torch.no_grad():
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)  # (1, heads, S, S)
        naive = attn.to_out[0](torch.einsum("bhqk,bkhd->bqhd", probs, values).flatten(2)[:, :num_image])
        image_out, text_out = seen["processor"](attn, **inputs)
        unguided, _ = seen["processor"].original(attn, image[:1], text[:1, : regional.base_length])  # diffusers'
    assert text_out.shape[1] == regional.text_length
    torch.testing.assert_close(image_out[1:], naive, atol=1e-5, rtol=1e-4)  # the masked attention, weight 1
    assert torch.equal(image_out[:1], unguided)  # the negative row: no regions


def test_regional_attention_errors_name_the_fix_on_sd3(pipes):
    sd3 = _syn(pipes, "sd3")
    kwargs = dict(num_inference_steps=1, height=32, width=32)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sd3.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(local_weight=2.0), **kwargs)
    with pytest.raises(ValueError, match="leave `clip` unset"):
        sd3.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(clip=object()), **kwargs)
    with pytest.raises(ValueError, match="needs layouts with objects"):
        sd3.generate("a cat", spatial_temporal=True, **kwargs)
    many = Layout(prompt="animals", objects=tuple(
        LayoutObject(name="cat", phrase="a cat", box=(0.05 * k, 0.0, 0.05 * k + 0.05, 1.0)) for k in range(20)
    ))  # fmt: skip
    # 20 phrases x (4 CLIP + 3 T5) = 140 regional tokens, more than 77 + 16 base tokens
    with pytest.raises(ValueError, match=r"20 phrases of up to 7 CLIP \+ T5 tokens: 140 .* 93 text tokens"):
        Synthesizer.from_pipe(pipes["sd3"], max_sequence_length=16).generate(many, spatial_temporal=True, **kwargs)


# --- B. LMD's latent composition on FLUX and SD3 -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["flux_dev", "sd3", "sd3_without_t5"])
def test_composition_runs_end_to_end_on_flux_and_sd3(pipes, variant):
    """Attention-placed objects (joint attention) paste their boxes into the first steps; the rest denoises."""
    syn = _syn(pipes, variant)
    options = CompositionOptions(steps=0.5, candidates=2, rounds=1)
    kwargs = dict(num_inference_steps=4, height=32, width=48, seed=0, return_trajectory=True, output_type="np")
    composed = syn.generate(LAYOUT, composition=options, **kwargs)
    plain = syn.generate(LAYOUT, **kwargs)
    assert composed.images.shape == plain.images.shape == (1, 32, 48, 3)
    placed = compose_layout(syn, LAYOUT, options, num_inference_steps=4, guidance_scale=None, seed=0, height=32,
                            width=48)  # fmt: skip
    assert placed.steps == 2 and len(placed.objects) == 2
    cells = (8, 12) if variant == "flux_dev" else (16, 24)  # FLUX: image tokens; SD3: its latents
    for obj, layout_obj in zip(placed.objects, LAYOUT.objects):
        box = syn.backbone.cells_to_latents(box_cells(layout_obj.box, *cells))
        assert torch.equal(obj.mask, box)  # attention-placed: the box is pasted, in the latents' layout
        assert obj.trajectory[0].shape == plain.trajectory[0].shape
    torch.testing.assert_close(composed.trajectory[0], placed.apply(0, plain.trajectory[0]), atol=0, rtol=0)
    assert abs(composed.images - plain.images).max() > 1e-3


def test_a_segmented_object_moves_by_whole_tokens_on_flux(pipes):
    """With a segmenter the object is found in the decoded drawing and its cells are FLUX's image tokens."""
    syn = _syn(pipes, "flux_dev")

    def top_left(image, phrase):  # every drawing shows its object in the top-left 8x8 px: 2x2 tokens of 4 px
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[:8, :8] = True
        return [mask]

    layout = Layout(prompt="a cat", objects=(LayoutObject(name="cat", phrase="a cat", box=(0.5, 0.5, 1.0, 1.0)),))
    options = CompositionOptions(steps=0.5, candidates=2, rounds=1, segmenter=top_left)
    placed = compose_layout(syn, layout, options, num_inference_steps=4, guidance_scale=None, seed=3, height=32,
                            width=48)  # fmt: skip
    obj = placed.objects[0]
    # Token grid 8x12: the object's centre (1, 1) tokens -> the box's centre (6, 9): 5 rows down, 8 columns right.
    assert obj.shift == (5, 8)
    core = obj.core[0, :, 0].reshape(8, 12).nonzero()
    assert core.min(0).values.tolist() == [5, 8] and core.max(0).values.tolist() == [6, 9]
    seeds = [3 * 1009 + 7919 + c for c in range(2)]
    redrawn = [syn.generate("a cat", num_inference_steps=4, height=32, width=48, seed=s, output_type="latent",
                            return_trajectory=True).trajectory[1] for s in seeds]  # fmt: skip
    moved = [shifted_trajectory(syn.backbone, [r], 0, 5, 8, 32, 48)[0] for r in redrawn]
    assert any(torch.allclose(obj.trajectory[1], m, atol=1e-5) for m in moved)


def test_the_packed_shift_moves_a_marked_patch_exactly_to_the_box_cells_on_flux(pipes):
    pipe = pipes["flux_dev"]
    backbone = Synthesizer.from_pipe(pipe).backbone
    height, width, channels = 32, 48, 4  # latents 16x24 (VAE factor 2), image tokens 8x12
    unpacked = torch.zeros(1, channels, 16, 24)
    patch = torch.arange(1.0, 1.0 + channels * 4).reshape(1, channels, 2, 2)  # every value of the patch differs
    unpacked[..., 2:4, 4:6] = patch  # image token (1, 2)
    packed = pipe._pack_latents(unpacked, 1, channels, 16, 24)  # (1, 96, 16): diffusers' own packing
    grid = backbone.latent_cells(packed, height, width)
    assert grid.shape == (1, 4 * channels, 8, 12) and torch.equal(backbone.cells_to_latents(grid), packed)
    box = (9 / 12, 5 / 8, 10 / 12, 6 / 8)  # exactly image token (5, 9)
    dy, dx = centring_shift((2.5 / 12, 1.5 / 8), box, 8, 12)  # from the marked token's centre
    assert (dy, dx) == (4, 7)
    moved = shifted_trajectory(backbone, [packed], 0, dy, dx, height, width)[0]
    out = pipe._unpack_latents(moved, height, width, pipe.vae_scale_factor)
    assert torch.equal(out[..., 10:12, 18:20], patch)  # the whole patch, each value in its place
    out[..., 10:12, 18:20] = 0
    assert not out.any()  # and nothing else
    rolled = pipe._pack_latents(torch.roll(unpacked, (2 * dy, 2 * dx), dims=(-2, -1)), 1, channels, 16, 24)
    assert torch.equal(moved, rolled)  # = moving the unpacked latents by whole 2x2 patches
    mask = backbone.cells_to_latents(box_cells(box, 8, 12))  # (1, 96, 1): the box's token
    assert mask.shape == (1, 96, 1) and mask.flatten().nonzero().flatten().tolist() == [5 * 12 + 9]
    scene = torch.full_like(packed, -1.0)
    pasted = LatentComposition([PlacedObject("cat", [moved], mask, (dy, dx))], steps=1, background="scene").apply(
        0, scene
    )
    expected = torch.full((1, channels, 16, 24), -1.0)
    expected[..., 10:12, 18:20] = patch
    assert torch.equal(pipe._unpack_latents(pasted, height, width, pipe.vae_scale_factor), expected)


@pytest.mark.parametrize("variant", ["flux_dev", "sd3"])
def test_noised_to_is_the_flow_matching_forward_process(pipes, variant):
    syn = _syn(pipes, variant)
    scheduler, backbone = syn.scheduler, syn.backbone
    timesteps = backbone.set_timesteps(4, syn.device, backbone.image_seq_len(32, 48))
    latents = syn.backbone.prepare_latents(2, 32, 48, torch.Generator().manual_seed(0), torch.float32, syn.device)
    x, noise = latents * 0.5 + 0.3, torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    for index in (0, 1, 2):
        sigma = float(scheduler.sigmas[index])
        expected = (1 - sigma) * x + sigma * noise
        got = noised_to(scheduler, x, noise, timesteps[index].expand(2))
        assert float((got - expected).abs().max()) <= 1e-6
        scheduler.step(torch.zeros_like(x), timesteps[index], x)  # a loop's state does not change the lookup
    assert float(scheduler.sigmas[1]) < 1.0  # a real noise level, not pure noise
    begin = scheduler.begin_index
    noised_to(scheduler, x, noise, timesteps[3].expand(2))
    assert scheduler.begin_index == begin  # the loop's own state is left as it was


@pytest.mark.parametrize("variant", ["flux_dev", "sd3", "sd3_without_t5"])
def test_joint_attention_extents_read_the_phrases_tokens(pipes, variant):
    syn = _syn(pipes, variant)
    positions = joint_phrase_positions(syn, "a red cat", "cat")
    # FLUX: T5 pieces ▁a ▁red ▁cat -> red, cat; SD3: the same after 77 CLIP tokens; without T5: CLIP's (BOS first)
    assert positions == {"flux_dev": [1, 2], "sd3": [78, 79], "sd3_without_t5": [2, 3]}[variant]
    latents = syn.backbone.prepare_latents(2, 32, 48, torch.Generator().manual_seed(0), torch.float32, syn.device)
    extents = joint_attention_extents(syn, latents, "a red cat", "cat", CompositionOptions(), 32, 48)
    cells = (8, 12) if variant == "flux_dev" else (16, 24)
    assert len(extents) == 2
    for soft, extent in extents:
        assert soft.shape == cells and float(soft.max()) == pytest.approx(1.0) and extent is not None
    with pytest.raises(ValueError, match="leave `attention_res` unset"):
        joint_attention_extents(syn, latents, "a red cat", "cat", CompositionOptions(attention_res=(4, 4)), 32, 48)
