"""FLUX.1 and SD3 through the one loop (``Synthesizer.generate``): equal to diffusers unguided, regional attention."""

from __future__ import annotations

import math

import pytest
import torch

from scenewright.layout.schema import Layout, LayoutObject
from scenewright.synth.pipeline import Synthesizer
from scenewright.synth.regional_attention import RegionalAttention, box_token_masks, regional_attention_mask
from scenewright.synth.spatial_temporal import SpatialTemporalControl
from scenewright.synth.testing import get_dummy_flux_pipe, get_dummy_sd3_pipe

PROMPT = "a cat and a dog"
SIZES = [(32, 32), (32, 48)]
T5_LENGTH = 32  # a short T5 length keeps the tiny models fast; the default is the pipelines' (512 / 256)
LAYOUT = Layout(
    prompt=PROMPT,
    objects=(
        LayoutObject(name="cat", phrase="a cat", box=(0.0, 0.0, 0.5, 1.0)),
        LayoutObject(name="dog", phrase="a dog", box=(0.5, 0.0, 1.0, 1.0)),
    ),
)


@pytest.fixture(scope="module")
def pipes():
    return {
        "flux_dev": get_dummy_flux_pipe(seed=0, guidance_embeds=True),
        "flux_schnell": get_dummy_flux_pipe(seed=0, guidance_embeds=False),
        "sd3": get_dummy_sd3_pipe(seed=0, with_t5=True),
        "sd3_without_t5": get_dummy_sd3_pipe(seed=0, with_t5=False),
    }


#: variant -> the pipeline's guidance_scale: FLUX's distilled guidance (ignored by schnell), SD3's real CFG.
GUIDANCE = {"flux_dev": 3.5, "flux_schnell": 3.5, "sd3": 5.0, "sd3_without_t5": 5.0}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", list(GUIDANCE))
def test_generate_reproduces_flux_and_sd3_pipelines(pipes, variant, size):
    pipe = pipes[variant]
    height, width = size
    kwargs = dict(num_inference_steps=3, guidance_scale=GUIDANCE[variant], height=height, width=width, output_type="np")
    expected = pipe(PROMPT, max_sequence_length=T5_LENGTH, generator=torch.Generator().manual_seed(0), **kwargs).images
    syn = Synthesizer.from_pipe(pipe, max_sequence_length=T5_LENGTH)
    images = syn.generate(PROMPT, methods=["none"], seed=0, **kwargs).images
    assert images.shape == (1, height, width, 3)
    assert abs(images - expected).max() <= 1e-4


def test_generate_reproduces_flux_true_cfg_and_given_latents(pipes):
    pipe = pipes["flux_dev"]
    kwargs = dict(num_inference_steps=3, height=32, width=48, output_type="np")
    expected = pipe(PROMPT, negative_prompt="blurry", true_cfg_scale=2.0, max_sequence_length=T5_LENGTH,
                    generator=torch.Generator().manual_seed(0), **kwargs).images  # fmt: skip
    syn = Synthesizer.from_pipe(pipe, max_sequence_length=T5_LENGTH, true_cfg_scale=2.0)
    out = syn.generate(PROMPT, negative_prompt="blurry", seed=0, **kwargs)  # guidance_scale: FLUX's 3.5
    assert abs(out.images - expected).max() <= 1e-4
    again = syn.generate(PROMPT, negative_prompt="blurry", latents=torch.randn(1, 96, 16), **kwargs).images
    assert again.shape == out.images.shape  # packed latents (B, h * w, 4C) are taken as given
    with pytest.raises(ValueError, match=r"`latents` has shape \(1, 4, 4\), expected \(1, 96, 16\)"):
        syn.generate(PROMPT, latents=torch.randn(1, 4, 4), **kwargs)


@pytest.mark.parametrize("variant", ["flux_schnell", "sd3_without_t5"])
def test_from_pretrained_reads_a_flux_or_sd3_folder(pipes, variant, tmp_path):
    pipe = pipes[variant]
    pipe.save_pretrained(tmp_path)
    without_t5 = {"text_encoder_3": None, "tokenizer_3": None} if variant == "sd3_without_t5" else {}
    syn = Synthesizer.from_pretrained(str(tmp_path), **without_t5)
    assert syn.backbone.name == ("flux" if variant.startswith("flux") else "sd3")
    assert syn.defaults.guidance_scale == (3.5 if variant.startswith("flux") else 7.0)  # the pipelines' defaults
    kwargs = dict(num_inference_steps=2, height=32, width=32, output_type="np")
    expected = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert abs(syn.generate(PROMPT, seed=0, **kwargs).images - expected).max() <= 1e-4


def test_mmdit_bad_input_is_a_clear_error(pipes):
    flux = Synthesizer.from_pipe(pipes["flux_dev"], max_sequence_length=T5_LENGTH)
    with pytest.raises(ValueError, match=r"multiples of 4 .*got 30x32; use 28x32"):  # 16 px with FLUX's VAE
        flux.generate(PROMPT, height=30, width=32, num_inference_steps=1)
    with pytest.raises(ValueError, match="no GLIGEN weights for FLUX.1"):
        flux.generate(LAYOUT, gligen=True, num_inference_steps=1, height=32, width=32)
    with pytest.raises(ValueError, match="guidance_rescale"):
        flux.generate(PROMPT, guidance_rescale=0.5, num_inference_steps=1, height=32, width=32)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        flux.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(local_weight=2.0), num_inference_steps=1,
                      height=32, width=32)  # fmt: skip
    many = Layout(prompt="animals", objects=tuple(
        LayoutObject(name="cat", phrase="a cat", box=(0.1 * k, 0.0, 0.1 * k + 0.1, 1.0)) for k in range(10)
    ))  # fmt: skip
    with pytest.raises(ValueError, match=r"10 phrases of up to 3 T5 tokens: 30 .*max_sequence_length=16"):
        Synthesizer.from_pipe(pipes["flux_dev"], max_sequence_length=16).generate(
            many, spatial_temporal=True, num_inference_steps=1, height=32, width=32
        )
    with pytest.raises(ValueError, match="leave `clip` unset"):
        flux.generate(LAYOUT, spatial_temporal=SpatialTemporalControl(clip=object()), num_inference_steps=1,
                      height=32, width=32)  # fmt: skip
    with pytest.raises(ValueError, match="not yet combined with true CFG"):
        Synthesizer.from_pipe(pipes["flux_dev"], max_sequence_length=T5_LENGTH, true_cfg_scale=2.0).generate(
            LAYOUT, negative_prompt="blurry", spatial_temporal=True, num_inference_steps=1, height=32, width=32
        )


# --- box-confined regional attention on FLUX ------------------------------------------------------------------


def _generate(syn, **kwargs):
    return syn.generate(LAYOUT, num_inference_steps=3, height=32, width=48, seed=0, output_type="np", **kwargs).images


def test_zero_regional_weight_is_the_unguided_image_exactly(pipes):
    syn = Synthesizer.from_pipe(pipes["flux_dev"], max_sequence_length=T5_LENGTH)
    transformer = syn.backbone.model
    originals = transformer.attn_processors
    plain = _generate(syn)
    assert torch.equal(torch.from_numpy(_generate(syn, spatial_temporal=SpatialTemporalControl(local_weight=0.0))),
                       torch.from_numpy(plain))  # fmt: skip
    regional = _generate(syn, spatial_temporal=True)
    assert abs(regional - plain).max() > 1e-4  # the phrases' tokens really steer the image
    shorter = _generate(syn, spatial_temporal=SpatialTemporalControl(regional_steps=0.5, regional_blocks=0.5))
    assert abs(shorter - plain).max() > 1e-5 and abs(shorter - regional).max() > 1e-5  # the shares end it early
    assert transformer.attn_processors == originals  # restored after each call


def test_regional_attention_mask_confines_each_phrase_to_its_box():
    inside = box_token_masks(torch.tensor([[[0.0, 0.0, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]]), (2, 4))  # (1, 2, 8)
    assert inside.int().tolist() == [[[1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]]]
    tiny = box_token_masks(torch.tensor([[0.6, 0.6, 0.61, 0.61]]), (2, 4))  # smaller than a token: its centre's
    assert tiny.int().tolist() == [[0, 0, 0, 0, 0, 0, 1, 0]]
    mask = regional_attention_mask(inside, torch.tensor([[1.0, 0.0]]), base_length=3, region_length=2)[0, 0]
    base, cat, absent, image = slice(0, 3), slice(3, 5), slice(5, 7), slice(7, 15)
    assert mask[base, base].all() and mask[base, image].all() and not mask[base, cat].any()
    assert mask[cat, cat].all() and torch.equal(mask[cat, image], inside[0, 0].expand(2, 8))
    assert torch.equal(mask[image, cat], inside[0, 0][:, None].expand(8, 2)) and mask[image, image].all()
    assert mask[absent, absent].all() and not mask[absent, image].any() and not mask[image, absent].any()


def test_phrase_attention_mass_lands_inside_its_box(pipes):
    """In a regional block, each phrase token's attention over the image lies in its box; unmasked, about half."""
    from diffusers.models.embeddings import apply_rotary_emb

    syn = Synthesizer.from_pipe(pipes["flux_dev"], max_sequence_length=T5_LENGTH)
    transformer = syn.backbone.model
    read = "transformer_blocks.0.attn"
    seen: dict = {}

    def keep(module, args, kwargs):  # the block's inputs, and the regional state its processor reads
        seen.setdefault("inputs", dict(kwargs))
        seen.setdefault("processor", module.processor)

    hook = dict(transformer.named_modules())[read].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        syn.generate(LAYOUT, spatial_temporal=True, num_inference_steps=1, height=32, width=48, seed=0,
                     output_type="latent")  # fmt: skip
    finally:
        hook.remove()
    regional: RegionalAttention = seen["processor"].regional
    attn, inputs = dict(transformer.named_modules())[read], seen["inputs"]

    def heads(projection, norm, x):
        return norm(projection(x).unflatten(-1, (attn.heads, -1)))

    text, image = inputs["encoder_hidden_states"], inputs["hidden_states"]
    with torch.no_grad():
        q = torch.cat([heads(attn.add_q_proj, attn.norm_added_q, text), heads(attn.to_q, attn.norm_q, image)], 1)
        k = torch.cat([heads(attn.add_k_proj, attn.norm_added_k, text), heads(attn.to_k, attn.norm_k, image)], 1)
        q, k = (apply_rotary_emb(x, inputs["image_rotary_emb"], sequence_dim=1) for x in (q, k))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])  # (1, heads, S, S)
    masked = scores.masked_fill(~regional.mask, float("-inf")).softmax(-1).mean(1)[0]  # (S, S)
    unmasked = scores.softmax(-1).mean(1)[0]
    text_length = regional.text_length
    for n in range(2):
        tokens = slice(regional.base_length + n * regional.region_length,
                       regional.base_length + (n + 1) * regional.region_length)  # fmt: skip
        box = regional.inside[0, n]  # (h*w,) the object's box at the token grid: half the image
        for probs, least, most in ((masked, 0.999, 1.001), (unmasked, 0.0, 0.8)):
            over_image = probs[tokens, text_length:]  # (Lr, h*w)
            share = over_image[:, box].sum(-1) / over_image.sum(-1)
            assert least <= float(share.min()) and float(share.max()) <= most
        # ... and image tokens outside the box give that phrase no attention at all
        assert float(masked[text_length:][~box][:, tokens].sum()) == 0.0
    # The block's processor attends exactly so: its image output is this masked attention's (weight 1 in the boxes).
    with torch.no_grad():
        values = torch.cat([heads(attn.add_v_proj, torch.nn.Identity(), text), heads(attn.to_v, torch.nn.Identity(),
                                                                                   image)], 1)  # fmt: skip
        probs = scores.masked_fill(~regional.mask, float("-inf")).softmax(-1)  # (1, heads, S, S)
        naive = torch.einsum("bhqk,bkhd->bqhd", probs, values).flatten(2)[:, text_length:]
        naive = attn.to_out[0](naive)
        image_out, _ = seen["processor"](attn, **inputs)
    torch.testing.assert_close(image_out, naive, atol=1e-5, rtol=1e-4)
