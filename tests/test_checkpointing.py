"""The guided forward's memory: it stops after the last layer read, and gradient checkpointing changes nothing else."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock
from torch.overrides import TorchFunctionMode

from scenewright.layout.schema import Layout
from scenewright.synth.attention import attention_capture
from scenewright.synth.maps import MapRequest
from scenewright.synth.pipeline import Synthesizer
from scenewright.synth.recipe import ENGINE_DEFAULTS, check_engine_options
from scenewright.synth.testing import get_dummy_pipe, get_dummy_sdxl_pipe

R = (16, 16)  # the tiny UNets' cross-attention grid at a 32x32 latent
CAT_AND_DOG = Layout.parse(
    {
        "prompt": "a cat and a dog",
        "objects": [
            {"name": "cat", "phrase": "a cat", "box": [0.0, 0.0, 0.5, 0.5]},
            {"name": "dog", "phrase": "a dog", "box": [0.5, 0.5, 1.0, 1.0]},
        ],
    }
)
METHODS = {
    "attend_excite": {"attend_excite": {"attn_res": R}},
    "car+sar": {"car": {"car_res": R}, "sar": {"sar_res": R}},
}


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def syn(request) -> Synthesizer:
    return Synthesizer.from_pipe(get_dummy_sdxl_pipe(seed=0) if request.param == "sdxl" else get_dummy_pipe())


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))


class _CountSoftmax(TorchFunctionMode):
    """Counts explicit softmaxes: the capture computes one per layer whose probabilities it materializes."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.softmax, torch.softmax, torch.nn.functional.softmax):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _count_blocks(unet) -> tuple[list[int], list]:
    """A one-item counter of transformer-block calls, and the hooks to remove."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    hooks = [m.register_forward_pre_hook(count) for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    return calls, hooks


def test_the_sdxl_guided_forward_stops_after_the_last_block_read_and_materializes_only_those_maps():
    pipe = get_dummy_sdxl_pipe(seed=0)
    unet, backbone = pipe.unet, Synthesizer.from_pipe(pipe).backbone
    conditioning = backbone.encode(["a cat and a dog"], None, False, torch.device("cpu"), 64, 64)
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    request = MapRequest("cross", (R,), places=("down",))
    all_blocks = sum(isinstance(m, BasicTransformerBlock) for m in unet.modules())
    down_blocks = sum(isinstance(m, BasicTransformerBlock) for m in unet.down_blocks.modules())
    calls, hooks = _count_blocks(unet)
    runs = []
    try:
        with attention_capture(unet, [request]) as capture:
            for _ in range(2):  # the first pass learns where the last requested layer is, the second stops there
                calls[0] = 0
                with torch.enable_grad(), _CountSoftmax() as softmaxes:
                    capture.guidance_forward(lambda: unet(z, 500, **conditioning.unet_kwargs(cond_only=True)), (32, 32))
                runs.append((calls[0], softmaxes.count, len(capture.layers), capture.stopped_early))
    finally:
        for hook in hooks:
            hook.remove()
    (full_calls, full_softmaxes, stored, full_stopped), (early_calls, early_softmaxes, early_stored, stopped) = runs
    assert not full_stopped and full_calls == all_blocks
    # SDXL's down cross-attention sits in its last down block: the pass ends with that block's transformers.
    assert stopped and early_calls == down_blocks < all_blocks
    assert stored == early_stored == full_softmaxes == early_softmaxes > 0  # one softmax per stored map, no other


@pytest.mark.parametrize("methods", list(METHODS))
def test_gradient_checkpointing_gives_the_same_loss_and_gradient(syn, latents, methods):
    unet = syn.unet
    calls, hooks = _count_blocks(unet)
    try:
        measured = {}
        for checkpointing in (False, True):
            calls[0] = 0
            measured[checkpointing] = syn.measure(
                CAT_AND_DOG, latents, 700, METHODS[methods], gradient_checkpointing=checkpointing
            )
            measured[checkpointing, "calls"] = calls[0]
    finally:
        for hook in hooks:
            hook.remove()
    plain, checkpointed = measured[False], measured[True]
    assert measured[True, "calls"] > measured[False, "calls"]  # the backward re-ran blocks: checkpointing was on
    assert not any(getattr(m, "gradient_checkpointing", False) for m in unet.modules())  # the UNet's setting is back
    assert float(plain.grad.abs().max()) > 0
    torch.testing.assert_close(checkpointed.total, plain.total, rtol=0, atol=1e-5)
    torch.testing.assert_close(checkpointed.grad, plain.grad, rtol=0, atol=1e-5)


def test_a_checkpointed_sdxl_generate_equals_the_plain_one():
    syn = Synthesizer.from_pipe(get_dummy_sdxl_pipe(seed=0))
    run = dict(num_inference_steps=3, guidance_scale=5.0, seed=0, output_type="latent", max_iter_to_alter=2)
    plain = syn.generate(CAT_AND_DOG, methods=METHODS["car+sar"], **run)
    checkpointed = syn.generate(CAT_AND_DOG, methods=METHODS["car+sar"], gradient_checkpointing=True, **run)
    unguided = syn.generate(CAT_AND_DOG, **run)
    assert len(checkpointed.steps) == len(plain.steps) == 2
    torch.testing.assert_close(checkpointed.images, plain.images, rtol=0, atol=1e-5)
    assert float((plain.images - unguided.images).abs().max()) > 1e-4  # guidance moved the latent


def test_a_bf16_sdxl_guides_in_fp32_with_checkpointing(latents):
    pipe = get_dummy_sdxl_pipe(seed=0).to(dtype=torch.bfloat16)
    syn16 = Synthesizer.from_pipe(pipe)
    measured = {
        checkpointing: syn16.measure(CAT_AND_DOG, latents.to(torch.bfloat16), 700, METHODS["car+sar"],
                                     gradient_checkpointing=checkpointing)  # fmt: skip
        for checkpointing in (False, True)
    }
    for m in measured.values():
        assert m.grad.dtype == m.total.dtype == torch.float32
        assert torch.isfinite(m.grad).all() and torch.isfinite(m.total).all() and float(m.grad.abs().max()) > 0
        assert all(e.probs.dtype == torch.float32 for e in m.maps[0].entries)
    # Recomputation repeats the bf16 forward bit for bit, so checkpointing changes nothing here either.
    torch.testing.assert_close(measured[True].grad, measured[False].grad, rtol=0, atol=1e-5)


def test_gradient_checkpointing_is_an_engine_option_off_by_default():
    assert ENGINE_DEFAULTS["gradient_checkpointing"] is False
    with pytest.raises(ValueError, match="`gradient_checkpointing` must be True or False"):
        check_engine_options({**ENGINE_DEFAULTS, "gradient_checkpointing": "yes"})
