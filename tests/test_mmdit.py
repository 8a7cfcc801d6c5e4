"""FLUX.1 and SD3: tiny pipelines (diffusers' test configs, offline tokenizers) through our backbones and capture."""

from __future__ import annotations

import pytest
import torch

from scenewright.synth.backbones import FluxBackbone, SD3Backbone, backbone_for
from scenewright.synth.testing import get_dummy_flux_pipe, get_dummy_sd3_pipe, get_dummy_sd35_pipe

PROMPT = "a cat and a dog"
SIZES = [(32, 32), (32, 48)]
T5_LENGTH = 32  # a short T5 length keeps the tiny models fast; the default is the pipelines' (512 / 256)


@pytest.fixture(scope="module")
def flux_dev():
    return get_dummy_flux_pipe(seed=0, guidance_embeds=True)


@pytest.fixture(scope="module")
def flux_schnell():
    return get_dummy_flux_pipe(seed=0, guidance_embeds=False)


@pytest.fixture(scope="module")
def sd3():
    return get_dummy_sd3_pipe(seed=0, with_t5=True)


@pytest.fixture(scope="module")
def sd3_without_t5():
    return get_dummy_sd3_pipe(seed=0, with_t5=False)


@pytest.fixture(scope="module")
def sd35():
    """SD3.5's transformer: QK RMSNorm on both streams and an extra image-only ``attn2`` in its first block."""
    return get_dummy_sd35_pipe(seed=0)


def _plain_loop(backbone, size, guidance_scale, steps=3, negative=None):
    """The unguided loop on the backbone's pieces only: encode, latents, timesteps, predict + step, decode."""
    height, width = size
    device, scheduler = torch.device("cpu"), backbone.pipe.scheduler
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conditioning = backbone.encode([PROMPT], negative, guidance_scale > 1, device, height, width)
        latents = backbone.prepare_latents(1, height, width, generator, conditioning.embeds.dtype, device)
        timesteps = backbone.set_timesteps(steps, device, backbone.image_seq_len(height, width))
        for t in timesteps:
            noise_pred = backbone.predict(latents, t, conditioning, guidance_scale)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        images, nsfw = backbone.decode(latents, "np", generator, device, torch.float32, height=height, width=width)
    assert nsfw is None
    return images


#: variant -> (backbone class, the pipeline's guidance_scale): FLUX's distilled guidance, SD3's real CFG.
VARIANTS = {
    "flux_dev": (FluxBackbone, 3.5),  # guidance embedding
    "flux_schnell": (FluxBackbone, 3.5),  # no guidance embedding: the scale is ignored
    "sd3": (SD3Backbone, 5.0),  # batched [negative, prompt] CFG
    "sd3_without_t5": (SD3Backbone, 5.0),  # text_encoder_3=None: zero T5 rows
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_backbone_reproduces_its_pipeline(request, variant, size):
    """The plain loop on the backbone's pieces equals FluxPipeline / StableDiffusion3Pipeline to 1e-4."""
    pipe = request.getfixturevalue(variant)
    backbone_class, guidance_scale = VARIANTS[variant]
    height, width = size
    generator = torch.Generator().manual_seed(0)
    expected = pipe(PROMPT, num_inference_steps=3, guidance_scale=guidance_scale, height=height, width=width,
                    max_sequence_length=T5_LENGTH, generator=generator, output_type="np").images  # fmt: skip
    images = _plain_loop(backbone_class(pipe, max_sequence_length=T5_LENGTH), size, guidance_scale=guidance_scale)
    assert images.shape == (1, height, width, 3)
    assert abs(images - expected).max() <= 1e-4


def test_the_flux_backbone_reproduces_true_cfg(flux_dev):
    expected = flux_dev(PROMPT, negative_prompt="blurry", true_cfg_scale=2.0, num_inference_steps=3, height=32,
                        width=48, max_sequence_length=T5_LENGTH, generator=torch.Generator().manual_seed(0),
                        output_type="np").images  # fmt: skip
    backbone = FluxBackbone(flux_dev, max_sequence_length=T5_LENGTH, true_cfg_scale=2.0)
    images = _plain_loop(backbone, (32, 48), guidance_scale=3.5, negative=["blurry"])
    assert abs(images - expected).max() <= 1e-4
    without = _plain_loop(FluxBackbone(flux_dev, max_sequence_length=T5_LENGTH), (32, 48), guidance_scale=3.5)
    assert abs(images - without).max() > 1e-3  # true CFG really ran


def test_backbone_for_tells_flux_and_sd3_apart(flux_dev, flux_schnell, sd3, sd3_without_t5):
    assert isinstance(backbone_for(flux_dev), FluxBackbone) and isinstance(backbone_for(flux_schnell), FluxBackbone)
    assert isinstance(backbone_for(sd3), SD3Backbone) and isinstance(backbone_for(sd3_without_t5), SD3Backbone)
    assert backbone_for(flux_dev).native_size == (256, 256)  # default_sample_size 128 x VAE factor 2
    assert backbone_for(sd3).native_size == (32, 32)  # the transformer's sample_size 16 x VAE factor 2


def test_sizes_that_do_not_pack_are_a_clear_error(flux_dev, sd3):
    with pytest.raises(ValueError, match=r"multiples of 4 .*2x2 latent packing.*got 30x32; use 28x32"):
        FluxBackbone(flux_dev).prepare_latents(1, 30, 32, None, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"multiples of 4 .*patch.*got 32x34"):
        SD3Backbone(sd3).encode([PROMPT], None, True, torch.device("cpu"), 32, 34)
    with pytest.raises(ValueError, match="at most 512"):
        FluxBackbone(flux_dev, max_sequence_length=1024)


@pytest.mark.parametrize("variant", ["flux_schnell", "sd3_without_t5"])
def test_load_stable_diffusion_loads_flux_and_sd3_folders(request, variant, tmp_path):
    """model_index.json's FluxPipeline / StableDiffusion3Pipeline load, and reproduce the saved pipeline."""
    from scenewright.synth.loading import load_stable_diffusion

    pipe = request.getfixturevalue(variant)
    pipe.save_pretrained(tmp_path)
    # A folder without T5 loads as diffusers documents it: the missing slots passed as None.
    without_t5 = {"text_encoder_3": None, "tokenizer_3": None} if variant == "sd3_without_t5" else {}
    loaded = load_stable_diffusion(str(tmp_path), **without_t5)
    assert type(loaded) is type(pipe) and type(backbone_for(loaded)) is type(backbone_for(pipe))
    kwargs = dict(num_inference_steps=2, height=32, width=32, max_sequence_length=T5_LENGTH, output_type="np")
    expected = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert abs(loaded(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images - expected).max() <= 1e-6


# --- joint-attention maps ------------------------------------------------------------------------------------


def _forward_kwargs(model, pipe, size):
    """One conditional transformer forward on two prompts at ``size``, as the backbone's loop would run it."""
    backbone = (FluxBackbone if model == "flux" else SD3Backbone)(pipe, max_sequence_length=T5_LENGTH)
    device = torch.device("cpu")
    with torch.no_grad():
        conditioning = backbone.encode([PROMPT, "a red car"], None, False, device, *size)
        latents = backbone.prepare_latents(2, *size, torch.Generator().manual_seed(0), torch.float32, device)
    return backbone, backbone.transformer_kwargs(latents, torch.tensor(700.0), conditioning, 3.5)


def _attention_inputs(transformer, names, forward_kwargs):
    """The keyword inputs each named attention module receives in one forward (hidden states, RoPE)."""
    seen = {}
    modules = dict(transformer.named_modules())

    def keep(name):
        def hook(module, args, kwargs):
            seen[name] = dict(kwargs)  # returns None: the inputs go on unchanged

        return hook

    hooks = [modules[name].register_forward_pre_hook(keep(name), with_kwargs=True) for name in names]
    try:
        with torch.no_grad():
            transformer(**forward_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _naive_maps(attn, inputs, layout, num_image):
    """Full joint softmax over text AND image keys, then each slice renormalized: the documented normalization."""
    from diffusers.models.embeddings import apply_rotary_emb

    def heads(x):
        return x.view(x.shape[0], x.shape[1], attn.heads, -1)

    def norm(module, x):
        return x if module is None else module(x)

    hidden, text = inputs["hidden_states"], inputs.get("encoder_hidden_states")
    q, k = norm(attn.norm_q, heads(attn.to_q(hidden))), norm(attn.norm_k, heads(attn.to_k(hidden)))
    if text is not None:
        tq = norm(attn.norm_added_q, heads(attn.add_q_proj(text)))
        tk = norm(attn.norm_added_k, heads(attn.add_k_proj(text)))
        pairs = ((tq, q), (tk, k)) if layout == "flux" else ((q, tq), (k, tk))  # FLUX: text first; SD3: image first
        q, k = (torch.cat(pair, 1) for pair in pairs)
    if inputs.get("image_rotary_emb") is not None:
        q = apply_rotary_emb(q, inputs["image_rotary_emb"], sequence_dim=1)
        k = apply_rotary_emb(k, inputs["image_rotary_emb"], sequence_dim=1)
    joint = torch.einsum("bqhd,bkhd->bhqk", q, k).div(q.shape[-1] ** 0.5).softmax(-1)  # over all keys
    total = q.shape[1]
    image = slice(0, num_image) if layout == "sd3" else slice(total - num_image, total)
    text_keys = slice(num_image, total) if layout == "sd3" else slice(0, total - num_image)
    cross = joint[:, :, image, text_keys]
    self_ = joint[:, :, image, image]
    cross = cross / cross.sum(-1, keepdim=True)
    self_ = self_ / self_.sum(-1, keepdim=True)
    return cross.mean(1), self_.mean(1)  # (B, h*w, keys)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("model", ["flux", "sd3", "sd35"])
def test_joint_maps_equal_a_naive_recomputation_and_capture_changes_nothing(request, model, size):
    from scenewright.synth.joint_attention import joint_attention_capture, joint_attention_layers

    pipe = request.getfixturevalue("flux_dev" if model == "flux" else model)
    if model == "sd35":  # really SD3.5's layout: an image-only attn2 beside the joint attention, QK norms
        assert pipe.transformer.transformer_blocks[0].attn2 is not None and pipe.transformer.config.qk_norm == "rms_norm"
    model = "sd3" if model == "sd35" else model  # SD3.5 lays out its joint attention as SD3
    backbone, kwargs = _forward_kwargs(model, pipe, size)
    transformer = pipe.transformer
    layers = joint_attention_layers(transformer)
    single = ["single_transformer_blocks.0.attn"] if model == "flux" else []  # SD3.5's attn2 is not joint
    joint = [f"transformer_blocks.{k}.attn" for k in range(len(transformer.transformer_blocks))]
    assert layers == [*joint, *single]
    grid = backbone.latent_grid(*size)
    num_image = grid[0] * grid[1]
    with torch.no_grad():
        plain = transformer(**kwargs)[0]
    inputs = _attention_inputs(transformer, layers, kwargs)
    originals = transformer.attn_processors
    read = layers[-1]  # FLUX: only the single-stream block; the dual-stream one keeps diffusers' processor
    with joint_attention_capture(transformer, [read], grid) as capture:
        during = transformer.attn_processors
        assert all(during[name] is processor for name, processor in originals.items() if name != f"{read}.processor")
        with torch.no_grad():
            captured = transformer(**kwargs)[0]
        assert torch.equal(captured, plain)  # the capture changes nothing
        assert set(capture.cross_maps) == set(capture.self_maps) == {read}
        text_len = kwargs["encoder_hidden_states"].shape[1]
        cross, self_ = capture.cross_maps[read], capture.self_maps[read]
        assert cross.shape == (2, 1, num_image, text_len) and self_.shape == (2, 1, num_image, num_image)
        naive_cross, naive_self = _naive_maps(dict(transformer.named_modules())[read], inputs[read],
                                              model, num_image)  # fmt: skip
        torch.testing.assert_close(cross[:, 0], naive_cross, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(self_[:, 0], naive_self, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cross.sum(-1), torch.ones(2, 1, num_image))  # a softmax over text keys alone
        maps = capture.maps(1)
        per_token = maps.mean("cross", grid)  # what the losses read: (h, w, text tokens)
        assert per_token.shape == (*grid, text_len)
        torch.testing.assert_close(per_token, naive_cross[1].reshape(*grid, text_len), atol=1e-5, rtol=1e-4)
        assert maps.mean("self", grid).shape == (*grid, num_image)
    assert transformer.attn_processors == originals  # restored
    assert not capture.cross_maps  # and the maps (with their graph) dropped


def test_flux_dual_stream_maps_and_gradients(flux_dev):
    """The dual-stream block's maps match too, and stay in the autograd graph for guidance."""
    from scenewright.synth.joint_attention import joint_attention_capture

    backbone, kwargs = _forward_kwargs("flux", flux_dev, (32, 48))
    transformer, read = flux_dev.transformer, "transformer_blocks.0.attn"
    grid = backbone.latent_grid(32, 48)
    inputs = _attention_inputs(transformer, [read], kwargs)
    latents = kwargs["hidden_states"].clone().requires_grad_(True)
    with joint_attention_capture(transformer, [read], grid, kinds=("cross",)) as capture:
        transformer(**{**kwargs, "hidden_states": latents})
        assert not capture.self_maps
        naive_cross, _ = _naive_maps(dict(transformer.named_modules())[read], inputs[read], "flux", grid[0] * grid[1])
        torch.testing.assert_close(capture.cross_maps[read][:, 0].detach(), naive_cross, atol=1e-5, rtol=1e-4)
        capture.cross_maps[read][:, 0, :, 3].sum().backward()  # one token's map
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def test_joint_capture_rejects_unknown_layers_and_wrong_grids(flux_dev):
    from scenewright.synth.joint_attention import joint_attention_capture

    transformer = flux_dev.transformer
    with pytest.raises(ValueError, match=r"joint-attention modules.*transformer_blocks.7.attn.*it has"):
        with joint_attention_capture(transformer, ["transformer_blocks.7.attn"], (8, 8)):
            pass
    _, kwargs = _forward_kwargs("flux", flux_dev, (32, 32))
    with pytest.raises(ValueError, match=r"grid=\(4, 8\).*has 64.*latent_grid"):
        with joint_attention_capture(transformer, ["transformer_blocks.0.attn"], (4, 8)), torch.no_grad():
            transformer(**kwargs)
    assert all(type(p).__name__ == "FluxAttnProcessor" for p in transformer.attn_processors.values())


@pytest.mark.parametrize("model", ["flux", "sd3"])
def test_phrase_maps_are_read_on_t5_tokens(request, model):
    """FLUX's text keys are its T5 tokens; SD3's are 77 CLIP tokens then T5's (offset 77)."""
    from scenewright.synth.joint_attention import joint_attention_capture
    from scenewright.synth.t5_tokens import t5_token_groups_for_layout

    pipe = request.getfixturevalue("flux_dev" if model == "flux" else "sd3")
    backbone, kwargs = _forward_kwargs(model, pipe, (32, 48))
    offset = 0 if model == "flux" else pipe.tokenizer_max_length
    mapping = t5_token_groups_for_layout(pipe.tokenizer, pipe.tokenizer_3 if model == "sd3" else pipe.tokenizer_2,
                                         PROMPT, ["a cat", "a dog"], max_length=T5_LENGTH, offset=offset)  # fmt: skip
    assert mapping.token_groups == [[offset + 1], [offset + 4]]
    grid = backbone.latent_grid(32, 48)
    with joint_attention_capture(pipe.transformer, ["transformer_blocks.0.attn"], grid) as capture, torch.no_grad():
        pipe.transformer(**kwargs)
        maps = capture.maps(0).mean("cross", grid)  # (h, w, text tokens)
    assert maps.shape == (*grid, offset + T5_LENGTH)
    cat_map = maps[..., mapping.token_groups[0]].mean(-1)  # (h, w): what a loss reads for "cat"
    assert cat_map.shape == grid and (cat_map > 0).all()
