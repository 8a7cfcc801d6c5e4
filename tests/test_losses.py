"""Guidance losses as pure functions of attention maps: no UNet, maps built from parameter tensors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scenewright.synth import losses
from scenewright.synth.maps import AttentionMaps, CapturedAttention, GuidanceTargets, MapRequest
from scenewright.synth.methods import METHODS, get_method

LATENT = (32, 32)  # a tiny model's latent: "16x16 maps" (latent / 4) are 8x8 here, the mid block 4x4
GRID = (8, 8)
MID = (4, 4)
KEYS = 77
HEADS = 2
# Every layer a loss may read, as SD's UNet has them at this latent: (kind, place, size)
LAYERS = [
    ("cross", "down", GRID),
    ("cross", "mid", MID),
    ("cross", "up", GRID),
    ("cross", "up", GRID),
    ("self", "down", GRID),
    ("self", "mid", MID),
    ("self", "up", GRID),
    ("grounding", "down", GRID),  # GLIGEN's fuser: pixels attend to pixels + 30 grounding tokens
    ("grounding", "up", GRID),
]
BOXES = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])  # top-left and bottom-right quadrants
GROUPS = [[2, 3], [5]]  # "a red car and a dog" style: object 0 has two tokens, object 1 one


def keys_of(kind: str, size: tuple[int, int]) -> int:
    if kind == "grounding":
        return size[0] * size[1] + 30
    return KEYS if kind == "cross" else size[0] * size[1]


def random_logits(seed: int, scale: float = 1.0, layers=LAYERS) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (scale * torch.randn(HEADS, s[0] * s[1], keys_of(k, s), generator=generator)).requires_grad_(True)
        for k, _, s in layers
    ]


def as_maps(logits: list[torch.Tensor], layers=LAYERS, latent_size=LATENT) -> AttentionMaps:
    """Probabilities = softmax over keys of each layer's logits, as the capture stores them."""
    return AttentionMaps(
        entries=[
            CapturedAttention(layer=f"{place}.{n}.{kind}", kind=kind, place=place, size=size, probs=x.softmax(dim=-1))
            for n, (x, (kind, place, size)) in enumerate(zip(logits, layers))
        ],
        latent_size=latent_size,
    )


def targets(boxes=BOXES, groups=GROUPS) -> GuidanceTargets:
    return GuidanceTargets(token_groups=[list(g) for g in groups], boxes=boxes.clone(), eot_index=7)


def crisp_logits(regions: dict[int, torch.Tensor], layers=LAYERS, strength: float = 8.0) -> list[torch.Tensor]:
    """Cross logits where token t dominates the cells of regions[t] (a (h, w) box mask in [0, 1] coords)."""
    out = []
    for kind, _, size in layers:
        x = torch.zeros(HEADS, size[0] * size[1], keys_of(kind, size))
        if kind == "cross":
            for token, box in regions.items():
                mask = GuidanceTargets([[token]], box[None], 0).box_masks(*size)[0].flatten()
                x[:, :, token] += strength * mask
        out.append(x.requires_grad_(True))
    return out


def all_losses():
    """(method name, loss fn, its options) for every loss term of every registered method."""
    for name, method in METHODS.items():
        for term in method.losses:
            fn = term[0] if isinstance(term, tuple) else term
            yield pytest.param(name, fn, method.defaults, id=f"{name}:{fn.__name__}")


def descend(fn, logits, target_fn, options, steps: int, lr: float):
    """Normalized gradient descent on the logits; returns the losses seen."""
    seen = []
    for step in range(steps):
        value = fn(as_maps(logits), target_fn(), step, **options)
        seen.append(float(value))
        grads = torch.autograd.grad(value, logits, allow_unused=True)
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads if g is not None)) or 1.0
        with torch.no_grad():
            logits = [(x - lr * g / norm if g is not None else x).requires_grad_(True) for x, g in zip(logits, grads)]
    seen.append(float(fn(as_maps(logits), target_fn(), steps, **options)))
    return seen, logits


# ---------------------------------------------------------------------------------------------------------
# Attend-and-Excite equals diffusers
# ---------------------------------------------------------------------------------------------------------


def test_gaussian_kernel_equals_diffusers_smoothing():
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (
        GaussianSmoothing,
    )

    reference = GaussianSmoothing(channels=1, kernel_size=3, sigma=0.5, dim=2).weight[0, 0]
    torch.testing.assert_close(losses.gaussian_kernel_2d(3, 0.5), reference)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attend_and_excite_equals_the_diffusers_pipeline(seed):
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (
        StableDiffusionAttendAndExcitePipeline as Pipeline,
    )

    # diffusers aggregates the 16x16 cross maps of up/down/mid: mean over heads and layers.
    maps = as_maps(random_logits(seed, scale=3.0))
    cross = [e for e in maps.entries if e.kind == "cross" and e.size == GRID]
    aggregated = torch.cat([e.probs.reshape(-1, *GRID, KEYS) for e in cross]).mean(dim=0).detach()
    indices = [3, 5, 9]
    # `_compute_max_attention_per_index` scales its input in place: hand it a copy.
    reference_peaks = Pipeline._compute_max_attention_per_index(aggregated.clone(), indices)
    reference_loss = Pipeline._compute_loss(reference_peaks)

    peaks = losses.max_attention_per_token(maps, indices)
    loss = losses.attend_and_excite_loss(maps, targets(), 0, token_indices=indices)
    torch.testing.assert_close(peaks.detach(), torch.stack(reference_peaks))
    torch.testing.assert_close(loss.detach(), torch.as_tensor(reference_loss, dtype=torch.float32))


def test_attend_and_excite_uses_each_groups_last_token():
    maps = as_maps(crisp_logits({3: BOXES[0], 5: BOXES[1]}))  # tokens 3 and 5 are strong, token 2 is not
    by_groups = losses.attend_and_excite_loss(maps, targets(), 0)
    explicit = losses.attend_and_excite_loss(maps, targets(), 0, token_indices=[3, 5])
    weak_first_token = losses.attend_and_excite_loss(maps, targets(), 0, token_indices=[2, 5])
    assert float(by_groups) == pytest.approx(float(explicit))
    assert float(by_groups) < 0.1 < float(weak_first_token)


# ---------------------------------------------------------------------------------------------------------
# Every loss: descends, is finite, 0-dim fp32, takes fp16 maps
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fn", "options"), list(all_losses()))
def test_one_gradient_step_lowers_every_loss(name, fn, options):
    previous = as_maps([x.detach() for x in crisp_logits({3: BOXES[1], 5: BOXES[0]})])  # retention has work to do
    logits = random_logits(seed=7)
    seen, _ = descend(fn, logits, targets, {**options, "previous": previous}, steps=1, lr=0.5)
    assert seen[0] > 0, f"{name}: nothing to descend"
    assert seen[1] < seen[0], f"{name}: {fn.__name__} went from {seen[0]} to {seen[1]}"


@pytest.mark.parametrize(("name", "fn", "options"), list(all_losses()))
def test_every_loss_is_a_finite_fp32_scalar_on_uniform_maps(name, fn, options):
    uniform = as_maps([torch.zeros(HEADS, s[0] * s[1], keys_of(k, s)) for k, _, s in LAYERS])
    value = fn(uniform, targets(), 0, previous=uniform, **options)
    assert value.shape == () and value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize(("name", "fn", "options"), list(all_losses()))
def test_fp16_maps_are_read_in_fp32(name, fn, options):
    logits = [x.detach() for x in random_logits(seed=3)]
    full = as_maps(logits)
    half = AttentionMaps([CapturedAttention(e.layer, e.kind, e.place, e.size, e.probs.half()) for e in full.entries], LATENT)
    value_half = fn(half, targets(), 0, previous=half, **options)
    value_full = fn(full, targets(), 0, previous=full, **options)
    assert value_half.dtype == torch.float32
    # fp16 rounding of the probabilities only; CAR's x100 token softmax amplifies it a little.
    torch.testing.assert_close(value_half, value_full, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------------------
# What each loss moves
# ---------------------------------------------------------------------------------------------------------


def inside_share(maps: AttentionMaps, token: int, box: torch.Tensor) -> float:
    """Share of a token's raw cross attention (mean over 8x8 layers and heads) that falls in the box."""
    attention = maps.mean("cross", GRID)[:, :, token]  # (h, w)
    mask = GuidanceTargets([[token]], box[None], 0).box_masks(*GRID)[0]
    return float((attention * mask).sum() / attention.sum())


def test_car_moves_each_tokens_attention_into_its_box():
    logits = random_logits(seed=11)
    options = get_method("car").defaults
    before = as_maps(logits)
    seen, logits = descend(losses.cross_attention_refocusing_loss, logits, targets, options, steps=25, lr=2.0)
    after = as_maps(logits)
    assert seen[-1] < seen[0]
    for group, box in zip(GROUPS, BOXES):
        for token in group:
            assert inside_share(after, token, box) > inside_share(before, token, box) + 0.05, token


def outside_self_mass(maps: AttentionMaps, boxes: torch.Tensor) -> float:
    """Mean over self layers, boxes and heads of the in-box pixels' attention mass outside the box."""
    total, count = 0.0, 0
    for entry in maps.select("self", GRID):
        for box in boxes:
            mask = GuidanceTargets([[1]], box[None], 0).box_masks(*GRID)[0].flatten().bool()
            rows = entry.probs[:, mask, :]  # (heads, inside, h*w)
            total += float(rows[:, :, ~mask].sum(dim=-1).mean())
            count += 1
    return total / count


def test_sar_lowers_the_self_attention_mass_outside_the_boxes():
    logits = random_logits(seed=5)
    before = outside_self_mass(as_maps(logits), BOXES)
    _, logits = descend(losses.self_attention_refocusing_loss, logits, targets, {}, steps=10, lr=2.0)
    assert outside_self_mass(as_maps(logits), BOXES) < before - 0.1


def test_sar_of_uniform_self_attention_is_the_area_outside_the_box():
    uniform = as_maps([torch.zeros(HEADS, s[0] * s[1], keys_of(k, s)) for k, _, s in LAYERS])
    one_box = targets(boxes=BOXES[:1], groups=[[2]])
    # Every pixel spreads its attention evenly: a quarter-image box keeps 1/4, sends 3/4 outside.
    assert float(losses.self_attention_refocusing_loss(uniform, one_box, 0)) == pytest.approx(0.75)


def test_segregation_is_half_for_identical_maps_and_near_zero_for_disjoint_ones():
    same = as_maps(crisp_logits({3: BOXES[0], 5: BOXES[0]}))
    apart = as_maps(crisp_logits({3: BOXES[0], 5: BOXES[1]}))
    # sum(min(A, A)) / sum(A + A) = 1/2 whatever A is; disjoint supports overlap only by smoothing.
    assert float(losses.astar_segregation_loss(same, targets(), 0)) == pytest.approx(0.5, abs=1e-6)
    assert float(losses.astar_segregation_loss(apart, targets(), 0)) < 0.05


def test_segregation_descent_lowers_the_overlap_of_two_concepts():
    left, right = torch.tensor([0.0, 0.0, 0.75, 1.0]), torch.tensor([0.25, 0.0, 1.0, 1.0])  # half the image shared
    logits = crisp_logits({3: left, 5: right}, strength=4.0)
    seen, _ = descend(losses.astar_segregation_loss, logits, targets, {}, steps=15, lr=2.0)
    assert seen[0] > 0.2 and seen[-1] < seen[0] - 0.1


def test_retention_is_zero_without_history_small_when_kept_and_large_when_moved():
    kept = as_maps(crisp_logits({3: BOXES[0], 5: BOXES[1]}, strength=12.0))
    moved = as_maps(crisp_logits({3: BOXES[1], 5: BOXES[0]}, strength=12.0))
    assert float(losses.astar_retention_loss(kept, targets(), 0, previous=None)) == 0.0
    # Unsmoothed crisp maps are almost binary: the soft IoU with their own binarization is ~1.
    assert float(losses.astar_retention_loss(kept, targets(), 0, previous=kept, smooth_attentions=False)) < 0.1
    # Each concept left the region it held: IoU ~ 0 for both, loss ~ 2 (smoothed or not).
    assert float(losses.astar_retention_loss(moved, targets(), 0, previous=kept)) > 1.8
    # Smoothing softens box edges, so a kept map scores above 0, but far below a moved one.
    assert float(losses.astar_retention_loss(kept, targets(), 0, previous=kept)) < 0.5
    # The previous maps are read at the current maps' resolution even when they do not know their latent.
    unsized = AttentionMaps([CapturedAttention(e.layer, e.kind, e.place, e.size, e.probs.detach()) for e in kept.entries])
    assert float(losses.astar_retention_loss(moved, targets(), 0, previous=unsized)) > 1.8


def test_layout_guidance_is_zero_inside_and_squared_outside_share_for_uniform_maps():
    inside = as_maps(crisp_logits({2: BOXES[0], 3: BOXES[0], 5: BOXES[1]}, strength=30.0))
    assert float(losses.layout_guidance_loss(inside, targets(), 0)) < 1e-2  # softmax leaves ~1/77 per cell outside
    uniform = as_maps([torch.zeros(HEADS, s[0] * s[1], keys_of(k, s)) for k, _, s in LAYERS])
    # Uniform attention puts 1/4 in a quarter box: (1 - 1/4)^2 for every object, layer and token.
    assert float(losses.layout_guidance_loss(uniform, targets(), 0)) == pytest.approx(0.75**2)


def test_layout_guidance_reads_mid_and_up_layers_only():
    logits = random_logits(seed=2)
    maps = as_maps(logits)
    value = losses.layout_guidance_loss(maps, targets(), 0)
    grads = torch.autograd.grad(value, logits, allow_unused=True)
    used = {(kind, place) for (kind, place, _), g in zip(LAYERS, grads) if g is not None and g.abs().sum() > 0}
    assert used == {("cross", "mid"), ("cross", "up")}


def test_boxdiff_moves_attention_into_the_box_and_handles_one_cell_boxes():
    logits = random_logits(seed=13)
    before = as_maps(logits)
    options = get_method("boxdiff").defaults
    seen, logits = descend(losses.boxdiff_loss, logits, targets, options, steps=20, lr=2.0)
    after = as_maps(logits)
    assert seen[-1] < seen[0]
    for token, box in zip([3, 5], BOXES):
        assert inside_share(after, token, box) > inside_share(before, token, box) + 0.05
    tiny = torch.tensor([[0.1, 0.1, 0.12, 0.12], [0.5, 0.5, 1.0, 1.0]])  # one cell: k = int(1 * 0.8) = 0 officially
    assert torch.isfinite(losses.boxdiff_loss(after, targets(boxes=tiny), 0))


def test_boxdiff_inner_term_is_what_refinement_reads():
    maps = as_maps(crisp_logits({3: BOXES[0], 5: BOXES[1]}, strength=12.0))
    wrong = as_maps(crisp_logits({3: BOXES[1], 5: BOXES[0]}, strength=12.0))
    assert get_method("boxdiff").refinement_loss is losses.boxdiff_inner_box_loss
    assert float(losses.boxdiff_inner_box_loss(maps, targets(), 0)) < 0.3
    assert float(losses.boxdiff_inner_box_loss(wrong, targets(), 0)) > 0.9


# ---------------------------------------------------------------------------------------------------------
# Registry: maps requested are the maps read; errors name the fix
# ---------------------------------------------------------------------------------------------------------


def layers_for(requests: list[MapRequest]) -> list[tuple[str, str, tuple[int, int]]]:
    return [
        layer
        for layer in LAYERS
        if any(
            r.kind == layer[0] and layer[1] in r.places and (r.resolutions is None or layer[2] in r.resolutions)
            for r in requests
        )
    ]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_runs_on_exactly_the_maps_it_requests(name):
    method = get_method(name)
    requested = layers_for(method.needs(method.defaults, LATENT))
    assert requested, f"{name} requests no layer of a {LATENT} latent"
    logits = [x.detach() for x in random_logits(seed=1, layers=requested)]
    # Without latent_size, each loss must find its maps among only those requested.
    maps = as_maps(logits, layers=requested, latent_size=None)
    for term in method.losses:
        fn = term[0] if isinstance(term, tuple) else term
        assert torch.isfinite(fn(maps, targets(), 0, previous=maps, **method.defaults))
    expected_kinds = {"sar": {"self"}, "attention_refocusing": {"cross", "self", "grounding"}}.get(name, {"cross"})
    assert {kind for kind, _, _ in requested} == expected_kinds


def test_requests_scale_with_the_latent():
    assert get_method("attend_excite").needs({"attn_res": None}, (64, 64))[0].resolutions == ((16, 16),)
    assert get_method("sar").needs({"sar_res": None}, (96, 64))[0].resolutions == ((24, 16),)
    assert get_method("car").needs({"car_res": (32, 32)}, (64, 64))[0].resolutions == ((32, 32),)
    with pytest.raises(ValueError, match="attn_res"):
        get_method("boxdiff").needs({"attn_res": (16,)}, (64, 64))


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(ValueError, match="attend_excite.*boxdiff.*car"):
        get_method("attend-and-excite")


def test_box_methods_and_prompt_methods_are_marked():
    assert {name for name, m in METHODS.items() if m.uses_boxes} == {
        "car", "sar", "layout_guidance", "boxdiff", "attention_refocusing",
    }  # fmt: skip


def test_errors_name_the_field_and_the_fix():
    maps = as_maps([x.detach() for x in random_logits(seed=0)])
    with pytest.raises(ValueError, match=r"token positions \[80\]"):
        losses.attend_and_excite_loss(maps, targets(), 0, token_indices=[80])
    with pytest.raises(ValueError, match="targets.boxes"):
        losses.cross_attention_refocusing_loss(maps, targets(boxes=BOXES[:1]), 0)
    with pytest.raises(ValueError, match=r"token_groups\[1\] is empty"):
        losses.layout_guidance_loss(maps, targets(groups=[[2], []]), 0)
    unsized = AttentionMaps(maps.entries, latent_size=None)  # 8x8 and 4x4 cross maps, no latent to pick by
    with pytest.raises(ValueError, match="attn_res"):
        losses.attend_and_excite_loss(unsized, targets(), 0)


# ---------------------------------------------------------------------------------------------------------
# Fuzz: any layout gives finite, non-negative losses
# ---------------------------------------------------------------------------------------------------------

box_strategy = st.tuples(
    st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.floats(0.02, 1.0), st.floats(0.02, 1.0)
).map(lambda b: [b[0], b[1], min(1.0, b[0] + b[2]), min(1.0, b[1] + b[3])])

FUZZ_MAPS = as_maps([x.detach() for x in random_logits(seed=21, scale=2.0)])


@settings(max_examples=25, deadline=None)
@given(
    layout=st.lists(st.tuples(box_strategy, st.lists(st.integers(1, 20), min_size=1, max_size=3)), min_size=1, max_size=3),
    step=st.integers(0, 49),
)
def test_any_layout_gives_finite_non_negative_losses(layout, step):
    boxes = torch.tensor([b for b, _ in layout], dtype=torch.float32)
    fuzzed = targets(boxes=boxes, groups=[g for _, g in layout])
    for method in METHODS.values():
        for term in method.losses:
            fn = term[0] if isinstance(term, tuple) else term
            value = fn(FUZZ_MAPS, fuzzed, step, previous=FUZZ_MAPS, **method.defaults)
            assert torch.isfinite(value) and float(value) >= 0.0, (method.name, fn.__name__)
