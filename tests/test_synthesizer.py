"""`Synthesizer`: guidance lowers each method's loss, batches equal single runs, failures are clear."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from scenewright.layout.schema import Layout
from scenewright.synth import Synthesizer
from scenewright.synth import methods as registry
from scenewright.synth.attention import AttentionCapture
from scenewright.synth.pipeline import update_latents
from scenewright.synth.testing import get_dummy_pipe

# The tiny UNet (32x32 latent) attends only at 16x16 = latent / 2; SD1.5's defaults assume latent / 4.
TINY_RESOLUTIONS = {"attn_res": (16, 16), "car_res": (16, 16), "sar_res": (16, 16), "up_res": (16, 16)}
CAT_AND_DOG = Layout.parse(
    {
        "prompt": "a cat and a dog",
        "objects": [
            {"name": "cat", "phrase": "a cat", "box": [0.0, 0.0, 0.5, 1.0]},
            {"name": "dog", "phrase": "a dog", "box": [0.5, 0.0, 1.0, 1.0]},
        ],
    }
)
CAR_AND_BIRD = Layout.parse(
    {
        "prompt": "a photo of a red car",
        "objects": [
            {"name": "car", "phrase": "a red car", "box": [0.1, 0.5, 0.9, 1.0]},
            {"name": "bird", "phrase": "a bird", "box": [0.3, 0.0, 0.7, 0.4]},
        ],
    }
)


def options_for(name: str) -> dict:
    return {k: v for k, v in TINY_RESOLUTIONS.items() if k in registry.get_method(name).defaults}


@pytest.fixture(scope="module")
def syn() -> Synthesizer:
    return Synthesizer.from_pipe(get_dummy_pipe())


@pytest.fixture(scope="module")
def fixed_latent() -> torch.Tensor:
    return torch.randn(1, 4, 32, 32, generator=torch.Generator("cpu").manual_seed(7))


def _processor_ids(syn) -> dict[str, int]:
    return {name: id(p) for name, p in syn.unet.attn_processors.items()}


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_one_guided_step_lowers_the_methods_loss(syn, fixed_latent, name):
    """The engine's capture + gradient is a descent direction for each registered method."""
    method_options = {name: options_for(name)}
    before = syn.measure(CAT_AND_DOG, fixed_latent, timestep=801, methods=method_options)
    assert torch.isfinite(before.total).all() and before.total.item() > 0
    assert before.grad.dtype == torch.float32 and before.grad.abs().sum() > 0
    step = 0.5 / float(before.grad.abs().max())  # move the latent by at most 0.5
    moved = update_latents(fixed_latent, before.grad, step, torch.ones(1, dtype=torch.bool))
    after = syn.measure(CAT_AND_DOG, moved, timestep=801, methods=method_options)
    # The step lowers each loss by 2.8e-4 (sar) to 1.2e-2 on the tiny model; float noise is ~1e-6.
    assert after.losses[name].item() < before.losses[name].item() - 1e-4, (name, before.losses[name].item(), after.losses[name].item())


def test_car_step_moves_cross_attention_mass_into_the_box(syn, fixed_latent):
    method_options = {"car": options_for("car")}

    def mass_in_boxes(measure) -> float:
        """Summed over objects: the share of each object's token attention that falls inside its box."""
        attention = measure.maps[0].mean("cross", (16, 16))  # (16, 16, 77)
        target = measure.targets[0]
        shares = [
            (attention[..., group[-1]] * mask).sum() / attention[..., group[-1]].sum()
            for group, mask in zip(target.token_groups, target.box_masks(16, 16))
        ]
        return float(sum(shares))

    before = syn.measure(CAT_AND_DOG, fixed_latent, timestep=801, methods=method_options)
    moved = update_latents(fixed_latent, before.grad, 1.0 / float(before.grad.abs().max()), torch.ones(1, dtype=torch.bool))
    after = syn.measure(CAT_AND_DOG, moved, timestep=801, methods=method_options)
    # One step of at most 1.0 per latent cell moves ~7e-4 of the mass into the boxes; float noise is ~1e-7.
    assert mass_in_boxes(after) > mass_in_boxes(before) + 2e-4


def test_batched_guidance_equals_sequential_with_per_sample_refinement(syn):
    # scale 200 moves this model's A&E loss ~9e-5 per update; with target 1 - 0.01447 = 0.98553 the
    # first layout (loss 0.98551) needs no refinement and the second (0.98557) refines: masks differ.
    settings = dict(
        methods={"attend_excite": options_for("attend_excite")}, num_inference_steps=2, max_iter_to_alter=2,
        thresholds={0: 0.01447}, scale_factor=200, output_type="latent",
    )  # fmt: skip
    batched = syn.generate([CAT_AND_DOG, CAR_AND_BIRD], seed=[0, 1], **settings)
    first = syn.generate(CAT_AND_DOG, seed=0, **settings)
    second = syn.generate(CAR_AND_BIRD, seed=1, **settings)
    iterations = batched.steps[0].refinement_iterations
    assert iterations[0] != iterations[1]  # the per-sample mask was exercised
    assert iterations == first.steps[0].refinement_iterations + second.steps[0].refinement_iterations
    sequential = torch.cat([first.images, second.images])
    assert float((batched.images - sequential).abs().max()) <= 1e-4


def test_all_methods_combined_guide_one_batched_run(syn):
    """Every method at once: each loss is recorded per step, refinement runs on the A&E/BoxDiff part."""
    # Every method on A&E's schedule (a preset with its own schedule, attention_refocusing, is tested apart).
    on_ae_schedule = [n for n, m in registry.METHODS.items() if m.defaults.get("schedule", "attend_excite") == "attend_excite"]
    every = {name: options_for(name) for name in on_ae_schedule}
    out = syn.generate(
        CAT_AND_DOG, methods=every, num_inference_steps=3, max_iter_to_alter=2, thresholds={0: 0.9},
        max_refinement_steps=1, seed=0, output_type="latent",
    )  # fmt: skip
    unguided = syn.generate(CAT_AND_DOG, num_inference_steps=3, seed=0, output_type="latent")
    assert [record.step for record in out.steps] == [0, 1]
    for record in out.steps:
        assert set(record.losses) == set(on_ae_schedule)
        assert all(torch.isfinite(torch.tensor(v)).all() for v in record.losses.values())
        assert record.skipped == [False]
    assert out.steps[0].refinement_iterations == [1] and out.steps[1].refinement_iterations == [0]
    assert torch.isfinite(out.images).all() and float((out.images - unguided.images).abs().max()) > 1e-3


def test_no_guidance_forward_after_max_iter_to_alter_and_processors_restored(syn, monkeypatch):
    calls: list[int] = []
    original = AttentionCapture.guidance_forward

    def counting(self, run_unet, latent_hw):
        calls.append(1)
        return original(self, run_unet, latent_hw)

    monkeypatch.setattr(AttentionCapture, "guidance_forward", counting)
    before = _processor_ids(syn)
    progress: list[tuple[int, int, object]] = []
    out = syn.generate(
        CAT_AND_DOG, methods={"attend_excite": options_for("attend_excite")}, num_inference_steps=3,
        max_iter_to_alter=1, thresholds={}, seed=0, output_type="latent",
        callback=lambda i, total, record: progress.append((i, total, record)),
    )  # fmt: skip
    assert len(calls) == 1  # step 0 only; the reference runs a wasted grad forward at every step
    assert [(i, total) for i, total, _ in progress] == [(0, 3), (1, 3), (2, 3)]
    assert progress[0][2] is out.steps[0] and progress[1][2] is None
    assert _processor_ids(syn) == before


def test_processors_restored_after_an_exception_inside_the_loop(syn):
    before = _processor_ids(syn)

    def fail(i, total, record):
        raise KeyboardInterrupt  # e.g. the user pressed Ctrl-C mid-run

    with pytest.raises(KeyboardInterrupt):
        syn.generate("a cat", num_inference_steps=2, seed=0, output_type="latent", callback=fail)
    assert _processor_ids(syn) == before


def test_non_finite_loss_skips_the_update_with_a_warning(syn, monkeypatch):
    def nan_loss(maps, targets, step, **_):
        return maps.entries[0].probs.sum() * float("nan")

    broken = registry.GuidanceMethod(
        name="broken", losses=(nan_loss,), needs=lambda options, hw: [registry.MapRequest("cross", ((16, 16),))]
    )
    monkeypatch.setitem(registry.METHODS, "broken", broken)
    with pytest.warns(RuntimeWarning, match="not finite"):
        guided = syn.generate(CAT_AND_DOG, methods=["broken"], num_inference_steps=2, max_iter_to_alter=1, seed=0, output_type="latent")
    unguided = syn.generate(CAT_AND_DOG, methods=["none"], num_inference_steps=2, seed=0, output_type="latent")
    assert guided.steps[0].skipped == [True]
    assert torch.isfinite(guided.images).all()
    torch.testing.assert_close(guided.images, unguided.images)


def test_each_guided_step_sees_the_previous_steps_detached_maps(syn, monkeypatch):
    """A-STAR's retention loss is passed ``previous``: the last step's maps, outside the graph."""
    seen: list[tuple[int, object]] = []

    def spy_loss(maps, targets, step, previous=None, **_):
        seen.append((step, previous))
        return maps.entries[0].probs[..., 2].mean()

    spy = registry.GuidanceMethod(
        name="spy", losses=(spy_loss,), needs=lambda options, hw: [registry.MapRequest("cross", ((16, 16),))]
    )
    monkeypatch.setitem(registry.METHODS, "spy", spy)
    syn.generate(CAT_AND_DOG, methods=["spy"], num_inference_steps=3, max_iter_to_alter=2, thresholds={}, seed=0, output_type="latent")
    assert [step for step, _ in seen] == [0, 1]
    assert seen[0][1] is None
    previous = seen[1][1]
    assert previous is not None and previous.entries
    assert all(not e.probs.requires_grad and e.size == (16, 16) for e in previous.entries)


def test_output_types_and_layout_phrases_appended(syn):
    out = syn.generate(
        CAR_AND_BIRD, methods={"attend_excite": options_for("attend_excite")}, num_inference_steps=1,
        thresholds={}, seed=0, output_type="pil",
    )  # fmt: skip
    assert isinstance(out.images[0], Image.Image) and out.images[0].size == (64, 64)
    assert out.appended_phrases == [["a bird"]] and "a bird" in out.prompts[0]
    assert len(out.targets[0].token_groups) == 2 and out.targets[0].boxes.shape == (2, 4)
    assert out.layouts == [CAR_AND_BIRD]
    pt = syn.generate("a cat", num_inference_steps=1, batch_size=2, seed=[0, 1], output_type="pt").images
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 3, 64, 64) and 0 <= float(pt.min()) <= float(pt.max()) <= 1


def test_a_layouts_negative_text_is_its_negative_prompt(syn):
    layout = CAT_AND_DOG.model_copy(update={"negative": "blurry"})
    run = dict(num_inference_steps=1, seed=0, output_type="latent")
    from_layout = syn.generate(layout, **run).images
    explicit = syn.generate(layout.prompt, negative_prompt="blurry", **run).images
    plain = syn.generate(layout.prompt, **run).images
    torch.testing.assert_close(from_layout, explicit)
    assert float((from_layout - plain).abs().max()) > 1e-3


def test_guidance_math_is_fp32_for_a_bf16_model(fixed_latent):
    pipe = get_dummy_pipe().to(dtype=torch.bfloat16)
    syn16 = Synthesizer.from_pipe(pipe)
    measure = syn16.measure(CAT_AND_DOG, fixed_latent.to(torch.bfloat16), timestep=801, methods={"attend_excite": options_for("attend_excite")})
    assert measure.grad.dtype == torch.float32 and torch.isfinite(measure.grad).all()
    assert all(e.probs.dtype == torch.float32 for e in measure.maps[0].entries)
    assert measure.total.dtype == torch.float32 and torch.isfinite(measure.total).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(height=42), ValueError, "`height` must be a multiple of 4"),
        (dict(seed=[0, 1, 2]), ValueError, "one seed per image"),
        (dict(seed=0, generator=torch.Generator()), ValueError, "either `seed` or `generator`"),
        (dict(methods=["atend_excite"]), ValueError, "unknown guidance method"),
        (dict(methods=["car"], car_wieght=1.0), TypeError, "car_wieght"),
        (dict(output_type="jpg"), ValueError, "output_type"),
        (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
        (dict(layout_or_prompt="a cat", methods=["car"]), ValueError, "pass a Layout"),
        (dict(layout_or_prompt=""), TypeError, "non-empty prompt"),
        (dict(layout_or_prompt="a cat", methods=["attend_excite"], token_indices=[9]), ValueError, "token_indices"),
        (dict(layout_or_prompt="a cat", token_indices=[2]), ValueError, "no guidance method"),
        (dict(methods=["attend_excite"], thresholds={0: 5}), ValueError, "thresholds"),
        (dict(methods=["attend_excite"], max_iter_to_alter=-1), ValueError, "max_iter_to_alter"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_field(syn, kwargs, error, match):
    kwargs = {"layout_or_prompt": CAT_AND_DOG, "num_inference_steps": 1, **kwargs}
    with pytest.raises(error, match=match):
        syn.generate(**kwargs)


def test_from_pretrained_missing_weights_says_how_to_fix(monkeypatch, tmp_path):
    from scenewright.errors import ModelNotAvailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="download it on a connected machine"):
        Synthesizer.from_pretrained("scenewright-tests/no-such-model")
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        Synthesizer.from_pretrained(str(tmp_path / "missing" / "folder"))
    with pytest.raises(ModelNotAvailableError, match="model_index.json"):
        Synthesizer.from_pretrained(str(tmp_path))


def test_from_pretrained_loads_a_saved_local_folder(syn, tmp_path):
    syn.pipe.save_pretrained(tmp_path / "tiny-sd")
    loaded = Synthesizer.from_pretrained(str(tmp_path / "tiny-sd"), device="cpu")
    a = syn.generate("a cat", num_inference_steps=1, seed=0, output_type="latent").images
    b = loaded.generate("a cat", num_inference_steps=1, seed=0, output_type="latent").images
    torch.testing.assert_close(a, b)


_OPTION_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
    st.tuples(st.integers(0, 32), st.integers(0, 32)), st.dictionaries(st.integers(-2, 30), st.floats(-1, 2), max_size=3),
    st.text(max_size=5),
)  # fmt: skip
_OPTION_NAMES = st.sampled_from(
    sorted({k for m in registry.METHODS.values() for k in m.defaults} | {"max_iter_to_alter", "thresholds",
    "scale_factor", "max_refinement_steps", "not_an_option", "car_wieght"})
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(st.sampled_from(sorted(registry.METHODS) + ["none", "atend_excite", ""]), max_size=3, unique=True),
    options=st.dictionaries(_OPTION_NAMES, _OPTION_VALUES, max_size=4),
)
def test_fuzzed_methods_and_options_resolve_or_raise_a_clear_error(syn, names, options):
    """Any method list and options either resolve (every option reaching a method) or raise ValueError/TypeError."""
    try:
        active, engine = syn._resolve_methods(names, dict(options))
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    assert {a.name for a in active} == set(names) - {"none"}
    for key, value in options.items():
        if key in engine and key != "thresholds":
            assert engine[key] == value
        else:
            assert key == "thresholds" or any(a.options.get(key) is value for a in active)


def test_a_model_folder_declares_its_attention_size_and_guidance_scale(syn, tmp_path):
    import json

    from scenewright.errors import ModelNotAvailableError
    from scenewright.synth.loading import ModelDefaults

    folder = tmp_path / "tiny-sd"
    syn.pipe.save_pretrained(folder)
    latent = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))

    def car_map_sizes(synthesizer) -> set:
        measured = synthesizer.measure(CAT_AND_DOG, latent, 500, ["car"])
        return {e.size for e in measured.maps[0].entries}

    # No scenewright.json: SD's latent / 4 = 8x8, which this UNet (attention at 16x16 only) lacks: a clear error.
    plain = Synthesizer.from_pretrained(str(folder))
    assert plain.defaults == ModelDefaults(attention_downscale=4, guidance_scale=7.5)
    with pytest.raises(ValueError, match="set the method's resolution option"):
        car_map_sizes(plain)
    # The folder says its attention is at latent / 2 and its CFG scale is 3: both become the defaults.
    (folder / "scenewright.json").write_text(json.dumps({"attention_downscale": 2, "guidance_scale": 3, "_why": "a note"}))
    loaded = Synthesizer.from_pretrained(str(folder))
    assert loaded.defaults == ModelDefaults(attention_downscale=2, guidance_scale=3.0)
    assert car_map_sizes(loaded) == {(16, 16)}
    assert Synthesizer.from_pipe(loaded.pipe).defaults == loaded.defaults  # found via the pipe's folder too
    assert Synthesizer.from_pipe(loaded.pipe, defaults=ModelDefaults()).defaults.attention_downscale == 4
    with pytest.raises(ValueError, match="set the method's resolution option"):  # an explicit option still wins
        loaded.measure(CAT_AND_DOG, latent, 500, ["car"], car_res=(8, 8))
    kwargs = dict(num_inference_steps=1, seed=0, output_type="latent")
    by_default = loaded.generate("a cat", **kwargs).images
    torch.testing.assert_close(by_default, loaded.generate("a cat", guidance_scale=3.0, **kwargs).images)
    # CFG 7.5 instead of 3 moves the one-step latents by ~2e-3 on the tiny model; float noise is ~1e-6.
    assert (by_default - loaded.generate("a cat", guidance_scale=7.5, **kwargs).images).abs().max() > 2e-4
    # Object sizes for the planners' boxes: [low, high] of the canvas, and a gap.
    (folder / "scenewright.json").write_text(json.dumps({"object_sides": [0.2, 0.4], "object_gap": 0.05, "composition_steps": 1,
                                                         "size_sides": {"Small": [0.2, 0.25]}}))  # fmt: skip
    declared = Synthesizer.from_pretrained(str(folder)).defaults
    assert (declared.object_sides, declared.object_gap, declared.composition_steps) == ((0.2, 0.4), 0.05, 1.0)
    assert declared.size_sides == {"small": (0.2, 0.25)} and declared.layout_fit()["size_sides"] == declared.size_sides
    for bad, message in (({"attention_downscale": 0}, "must be a positive int"), ({"guidance_scale": "high"}, "number in"),
                         ({"cfg": 2}, r"unknown key\(s\) \['cfg'\]"), ([1, 2], "not a JSON object"),
                         ({"object_sides": [0.5, 0.2]}, r"`object_sides` must be \[low, high\]"),
                         ({"object_sides": 0.3}, "`object_sides`"), ({"object_gap": -1}, "`object_gap` must be"),
                         ({"object_sides": [0.1, 0.5], "size_sides": {"small": [0.3, 0.2]}}, "`size_sides` must map"),
                         ({"size_sides": {"small": [0.1, 0.2]}}, "needs `object_sides`"),
                         ({"composition_steps": 0}, r"`composition_steps` must be a share of the steps in \(0, 1\]")):  # fmt: skip
        (folder / "scenewright.json").write_text(json.dumps(bad))
        with pytest.raises(ModelNotAvailableError, match=message):
            Synthesizer.from_pretrained(str(folder))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-2, 2, allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["attention_downscale", "guidance_scale", "object_sides", "object_gap",
                                        "composition_steps", "size_sides", "_why", "cfg"]),
                       _json_values | st.dictionaries(st.text(max_size=5), _json_values, max_size=2), max_size=4))  # fmt: skip
def test_any_scenewright_json_gives_defaults_or_an_error_naming_the_key(tmp_path_factory, declared):
    import json

    from scenewright.errors import ModelNotAvailableError
    from scenewright.synth.loading import ModelDefaults, model_defaults

    folder = tmp_path_factory.mktemp("declared")
    (folder / "scenewright.json").write_text(json.dumps(declared))
    try:
        defaults = model_defaults(folder)
    except ModelNotAvailableError as err:
        assert any(f"`{key}`" in str(err) or repr(key) in str(err) for key in declared), err
        return
    assert isinstance(defaults, ModelDefaults)
    low_high = defaults.object_sides
    assert low_high is None or 0 < low_high[0] <= low_high[1] <= 1
    assert 0 <= defaults.object_gap < 0.5 and 0 < defaults.composition_steps <= 1
    assert defaults.size_sides is None or (low_high and all(0 < a <= b <= 1 for a, b in defaults.size_sides.values()))
