"""Tiny, seeded Stable Diffusion / GLIGEN components for tests: random weights, the real CLIP tokenizer.

Follows diffusers' ``tests/pipelines/stable_diffusion/test_stable_diffusion.py::get_dummy_components``
(and the Attend-and-Excite test's variant, whose 32x32 latent gives 16x16 cross-attention maps), but
with SD1.x's real 49408-token CLIP vocabulary, so prompts tokenize exactly as on the real model
and token positions found in tests are the ones users will see.
"""

from __future__ import annotations

from typing import Any

import torch

from .tokenizer import build_clip_tokenizer, build_t5_tokenizer

_TOKENIZER = None  # building the BPE tables costs ~0.5 s; share one tokenizer across calls
_T5_TOKENIZER = None  # likewise for the T5 word list read from eval/data


def _clip_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = build_clip_tokenizer()
    return _TOKENIZER


def get_dummy_components(seed: int = 0, cross_attention_dim: int = 32, gligen: bool = False) -> dict[str, Any]:
    """Components for ``StableDiffusionPipeline(**components)`` (or the GLIGEN pipeline with ``gligen=True``).

    UNet: 32x32 latent, blocks (32, 64) -> cross-attention at 16x16 only (``CrossAttnDownBlock2D`` /
    ``CrossAttnUpBlock2D``) and 8x8 (mid); VAE: factor 2, so images are 64x64 px. Every module is
    initialised from ``torch.manual_seed(seed)``, so the same ``seed`` gives the same weights.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if not isinstance(cross_attention_dim, int) or cross_attention_dim < 4 or cross_attention_dim % 4:
        raise ValueError(f"`cross_attention_dim` must be a positive multiple of 4 (4 heads), got {cross_attention_dim!r}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4),
        # GLIGEN's gated self-attention injects grounding tokens (Li et al. 2023); its position net
        # embeds phrases with the text encoder's pooled output, whose width is cross_attention_dim here.
        attention_type="gated" if gligen else "default",
    )
    if gligen:
        # GLIGEN initialises its gates at 0 (tanh(0) = 0: the fuser is a no-op until trained); open them
        # as a trained checkpoint's are, so that the grounding tokens really change the output in tests.
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if name.endswith(("fuser.alpha_attn", "fuser.alpha_dense")):
                    param.fill_(1.0)
    # SD1.x's scheduler config (runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json).
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=cross_attention_dim,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            layer_norm_eps=1e-5,
            hidden_act="quick_gelu",  # as CLIP ViT-L/14's text tower
            vocab_size=49408,
            max_position_embeddings=77,
            # SD1.x's text_encoder/config.json keeps the legacy ids (0, 1, 2); with eos_token_id == 2
            # transformers pools at the argmax id, i.e. the first <|endoftext|> (49407), as CLIP does.
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
        )
    )
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": _clip_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def get_dummy_pipe(seed: int = 0, cross_attention_dim: int = 32, gligen: bool = False):
    """A tiny ``StableDiffusionPipeline`` (``StableDiffusionGLIGENPipeline`` with ``gligen=True``) on CPU."""
    components = get_dummy_components(seed=seed, cross_attention_dim=cross_attention_dim, gligen=gligen)
    if gligen:
        from diffusers import StableDiffusionGLIGENPipeline

        components.pop("image_encoder")  # the GLIGEN pipeline takes no image encoder
        pipe = StableDiffusionGLIGENPipeline(**components, requires_safety_checker=False)
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_dummy_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Components for ``StableDiffusionXLPipeline(**components)``: diffusers' own SDXL test config, wider.

    As ``tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py::get_dummy_components``:
    ``addition_embed_type="text_time"`` (pooled text + 6 time ids of 8 dims: 6 * 8 + 32 = 80 inputs),
    ``transformer_layers_per_block=(1, 2)``, linear projections, two CLIP text encoders of width 32 whose
    hidden states are concatenated (cross-attention width 64), the second with a 32-dim projection.
    Blocks are (32, 64) wide instead of (2, 4), so attention maps are not degenerate; cross-attention runs at
    16x16 (2 transformer blocks down, 2 x 3 up) and 8x8 (mid), none at the latent's 32x32, as in SDXL.
    Both tokenizers are SD's real CLIP BPE. Images are 64x64 px.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + the 32-dim pooled text embedding
        cross_attention_dim=64,  # text_encoder (32) and text_encoder_2 (32) hidden states, concatenated
    )
    # SDXL's scheduler config (stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json).
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=128,
    )
    config = _tiny_clip_config(projection_dim=32)  # SDXL's two text towers: widths 32, projection 32
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(config)
    torch.manual_seed(seed + 1)  # a second tower, not a copy of the first
    text_encoder_2 = CLIPTextModelWithProjection(config)
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": _clip_tokenizer(),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": _clip_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def get_dummy_sdxl_pipe(seed: int = 0):
    """A tiny ``StableDiffusionXLPipeline`` on CPU (no invisible watermark, so outputs compare exactly)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**get_dummy_sdxl_components(seed), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _t5_tokenizer():
    global _T5_TOKENIZER
    if _T5_TOKENIZER is None:
        _T5_TOKENIZER = build_t5_tokenizer()
    return _T5_TOKENIZER


def _tiny_t5_encoder(seed: int, d_model: int):
    """A 2-layer T5 v1.1 encoder (gated GELU, as ``google/t5-v1_1-xxl``), about ``tiny-random-t5``'s size."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(_t5_tokenizer()),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _tiny_flow_vae(seed: int, latent_channels: int):
    """A 2-block VAE (factor 2) with a shift factor, as FLUX's and SD3's (``latents / scaling + shift``)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def _tiny_clip_config(projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        projection_dim=projection_dim,
    )


def get_dummy_flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict[str, Any]:
    """Components for ``FluxPipeline(**components)``: diffusers' FLUX test config, with 4 latent channels.

    As ``tests/pipelines/flux/test_pipeline_flux.py::get_dummy_components``: one dual-stream and one
    single-stream block, 2 heads of 16 dims, RoPE axes (4, 4, 8), a 32-wide CLIP (pooled) and T5 (sequence).
    ``guidance_embeds=True`` is FLUX.1-dev (distilled guidance, its scheduler shifts with the image size);
    False is FLUX.1-schnell (no guidance embedding, shift 1). The VAE has factor 2 and 4 latent channels,
    packed 2x2 into 16 transformer channels, so sizes are multiples of 4 px and a 32 px image has 8x8 image
    tokens. T5 is a tiny v1.1 encoder from config with the offline T5 tokenizer.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_tiny_clip_config())
    if guidance_embeds:  # black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json
        scheduler = FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, shift=3.0,
            use_dynamic_shifting=True,
        )  # fmt: skip
    else:  # black-forest-labs/FLUX.1-schnell scheduler/scheduler_config.json
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return {
        "scheduler": scheduler,
        "text_encoder": text_encoder,
        "text_encoder_2": _tiny_t5_encoder(seed, d_model=32),
        "tokenizer": _clip_tokenizer(),
        "tokenizer_2": _t5_tokenizer(),
        "transformer": transformer,
        "vae": _tiny_flow_vae(seed, latent_channels=4),
        "image_encoder": None,
        "feature_extractor": None,
    }


def get_dummy_flux_pipe(seed: int = 0, guidance_embeds: bool = True):
    """A tiny ``FluxPipeline`` on CPU: FLUX.1-dev-like, or FLUX.1-schnell-like with ``guidance_embeds=False``."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**get_dummy_flux_components(seed, guidance_embeds=guidance_embeds))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_dummy_sd3_components(seed: int = 0, with_t5: bool = True) -> dict[str, Any]:
    """Components for ``StableDiffusion3Pipeline(**components)``: diffusers' SD3 test config, consistent widths.

    As ``tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3.py::get_dummy_components``: one
    joint block of 4 heads x 8 dims, 4 latent channels; but patch size 2 as SD3's, and widths that add up as
    in SD3: two 32-wide CLIPs (concatenated: 64, the T5 width) with 32-dim projections (pooled: 64).
    ``with_t5=False`` leaves ``text_encoder_3``/``tokenizer_3`` None, as diffusers allows (T5 rows are zeros).
    The VAE has factor 2, so sizes are multiples of 4 px (factor x patch) and 32 px gives 8x8 image tokens.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_tiny_clip_config())
    torch.manual_seed(seed + 1)  # a second tower, not a copy of the first
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config())
    return {
        # stabilityai/stable-diffusion-3-medium-diffusers scheduler/scheduler_config.json
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": _tiny_t5_encoder(seed, d_model=64) if with_t5 else None,
        "tokenizer": _clip_tokenizer(),
        "tokenizer_2": _clip_tokenizer(),
        "tokenizer_3": _t5_tokenizer() if with_t5 else None,
        "transformer": transformer,
        "vae": _tiny_flow_vae(seed, latent_channels=4),
    }


def get_dummy_sd3_pipe(seed: int = 0, with_t5: bool = True):
    """A tiny ``StableDiffusion3Pipeline`` on CPU, with or without its T5 encoder (``text_encoder_3``)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**get_dummy_sd3_components(seed, with_t5=with_t5))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_dummy_sd35_pipe(seed: int = 0):
    """A tiny SD3.5-like ``StableDiffusion3Pipeline``: two joint blocks with QK RMSNorm, the first with SD3.5's extra
    image-only ``attn2`` (dual attention); otherwise :func:`get_dummy_sd3_components`.

    Built from the arguments: ``SD3Transformer2DModel.from_config`` would keep the defaults that a config's
    ``_use_default_values`` lists, i.e. drop ``qk_norm`` and ``dual_attention_layers``.
    """
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    components = get_dummy_sd3_components(seed)
    config = {k: v for k, v in components["transformer"].config.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    components["transformer"] = SD3Transformer2DModel(
        **{**config, "num_layers": 2, "qk_norm": "rms_norm", "dual_attention_layers": (0,)}
    )
    pipe = StableDiffusion3Pipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


__all__ = [
    "get_dummy_components",
    "get_dummy_flux_components",
    "get_dummy_flux_pipe",
    "get_dummy_pipe",
    "get_dummy_sd3_components",
    "get_dummy_sd35_pipe",
    "get_dummy_sd3_pipe",
    "get_dummy_sdxl_components",
    "get_dummy_sdxl_pipe",
]
