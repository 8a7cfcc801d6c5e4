"""The one loop equals diffusers: unguided == StableDiffusionPipeline, attend_excite == A&E pipeline."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionAttendAndExcitePipeline,
    StableDiffusionPipeline,
)

from scenewright.synth import Synthesizer
from scenewright.synth.testing import get_dummy_components

PROMPT = "a cat and a dog"


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(**get_dummy_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def ae_pipe(pipe) -> StableDiffusionAttendAndExcitePipeline:
    # Same component objects (the SD pipeline already fixed the scheduler's config in place).
    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    ae = StableDiffusionAttendAndExcitePipeline(**components)
    ae.set_progress_bar_config(disable=True)
    return ae


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


@pytest.mark.parametrize(
    "scheduler_cls, output_type",
    [(DDIMScheduler, "pt"), (EulerDiscreteScheduler, "np"), (DPMSolverMultistepScheduler, "pt")],
)
def test_unguided_equals_stable_diffusion_pipeline(pipe, scheduler_cls, output_type):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    syn = Synthesizer.from_pipe(pipe)
    ref = pipe(PROMPT, num_inference_steps=3, generator=torch.Generator("cpu").manual_seed(0), output_type=output_type)
    ours = syn.generate(PROMPT, methods=["none"], num_inference_steps=3, seed=0, output_type=output_type)
    diff = _max_diff(ours.images, ref.images)
    print(f"none vs StableDiffusionPipeline ({scheduler_cls.__name__}, {output_type}): max abs diff {diff:.2e}")
    assert diff <= 1e-4
    # The image is not saturated flat, so the comparison has something to compare.
    assert torch.as_tensor(ref.images).std() > 0.01


def test_unguided_batch_of_two_seeds_equals_pipeline_with_generator_list(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    syn = Synthesizer.from_pipe(pipe)
    generators = [torch.Generator("cpu").manual_seed(s) for s in (0, 1)]
    ref = pipe([PROMPT, PROMPT], num_inference_steps=2, generator=generators, output_type="latent").images
    ours = syn.generate(PROMPT, num_inference_steps=2, batch_size=2, seed=[0, 1], output_type="latent").images
    assert _max_diff(ours, ref) <= 1e-4
    assert _max_diff(ours[0], ours[1]) > 0.1  # the two seeds really differ


def test_single_seed_for_a_batch_draws_like_one_diffusers_generator(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    syn = Synthesizer.from_pipe(pipe)
    ref = pipe(
        PROMPT, num_inference_steps=2, num_images_per_prompt=2,
        generator=torch.Generator("cpu").manual_seed(3), output_type="latent",
    ).images  # fmt: skip
    ours = syn.generate(PROMPT, num_inference_steps=2, batch_size=2, seed=3, output_type="latent").images
    assert _max_diff(ours, ref) <= 1e-4


def test_attend_excite_equals_diffusers_attend_and_excite_pipeline(pipe, ae_pipe):
    """Same token indices and settings; the threshold at step 0 stops refinement part-way (after 4 updates)."""
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ae_pipe.scheduler = pipe.scheduler
    syn = Synthesizer.from_pipe(pipe)
    # With scale_factor 200 this tiny model's A&E loss falls ~9e-5 per update from 0.98551, so the
    # target 1 - 0.0147 = 0.9853 is crossed mid-refinement, far from floating-point noise.
    options = dict(num_inference_steps=2, max_iter_to_alter=2, thresholds={0: 0.0147}, attn_res=(16, 16), scale_factor=200)
    token_indices = [2, 5]  # "cat" and "dog" (position 0 is <|startoftext|>)
    ref = ae_pipe(
        PROMPT, token_indices=token_indices, generator=torch.Generator("cpu").manual_seed(0), output_type="pt", **options
    ).images
    ours = syn.generate(
        PROMPT, methods=["attend_excite"], token_indices=token_indices, seed=0, output_type="pt", **options
    )
    unguided = syn.generate(PROMPT, num_inference_steps=2, seed=0, output_type="pt").images
    diff = _max_diff(ours.images, ref)
    print(f"attend_excite vs diffusers A&E pipeline: max abs diff {diff:.2e}")
    assert diff <= 1e-3
    assert _max_diff(ours.images, unguided) > 10 * max(diff, 1e-5)  # guidance really changed the image
    assert 0 < ours.steps[0].refinement_iterations[0] < 20  # stopped by the threshold, not the cap
