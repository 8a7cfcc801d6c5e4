"""LMD latent composition: objects drawn alone, moved into their boxes, pasted into the scene's first steps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from scenewright.layout.schema import Layout, LayoutObject
from scenewright.synth import Synthesizer
from scenewright.synth.composition import (
    CompositionOptions,
    LatentComposition,
    PlacedObject,
    box_cells,
    compose_layout,
    shift_latents,
    shift_mask,
)
from scenewright.synth.testing import get_dummy_pipe


@pytest.fixture(scope="module")
def syn() -> Synthesizer:
    return Synthesizer.from_pipe(get_dummy_pipe())


def _layout(box=(0.55, 0.55, 0.95, 0.95), phrase="a red circle") -> Layout:
    return Layout(prompt=f"{phrase} on a table", objects=(LayoutObject(name=phrase.split()[-1], phrase=phrase, box=box),))


def test_shifts_move_content_masks_do_not_wrap():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    moved = shift_latents(x, 1, 2)
    assert moved[0, 0, 1, 2] == x[0, 0, 0, 0] and moved[0, 0, 0, 0] == x[0, 0, 3, 2]  # wraps: noise stays noise
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 2:, 2:] = True
    assert shift_mask(mask, 1, 1).sum() == 1 and shift_mask(mask, 1, 1)[0, 0, 3, 3]  # what leaves is gone
    assert torch.equal(shift_mask(mask, -2, -2)[0, 0], torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0] * 4, [0] * 4]).bool())
    cells = box_cells((0.3, 0.0, 0.55, 0.2), 4, 4)[0, 0]
    assert cells.nonzero().tolist() == [[0, 1], [0, 2]]


def test_apply_pastes_inside_masks_and_fills_the_rest_by_background():
    h = w = 4
    first, second = torch.full((1, 2, h, w), 1.0), torch.full((1, 2, h, w), 2.0)
    mask_a, mask_b = box_cells((0, 0, 0.5, 0.5), h, w), box_cells((0.5, 0.5, 1, 1), h, w)
    objects = [PlacedObject("a", [first, first], mask_a, (0, 0)), PlacedObject("b", [second, second], mask_b, (0, 0))]
    scene = torch.zeros(3, 2, h, w)
    out = LatentComposition(objects, steps=2, background="scene").apply(0, scene)
    assert (out[:, :, :2, :2] == 1).all() and (out[:, :, 2:, 2:] == 2).all()
    assert (out[:, :, :2, 2:] == 0).all() and (out[:, :, 2:, :2] == 0).all()  # the scene's own latents
    out = LatentComposition(objects, steps=2, background="object").apply(1, scene)
    assert (out[:, :, :2, 2:] == 1).all() and (out[:, :, 2:, 2:] == 2).all()  # the first object's canvas
    assert torch.equal(LatentComposition(objects, steps=2, background="object").apply(2, scene), scene)  # done


def test_a_later_objects_margin_does_not_cut_into_an_earlier_objects_body():
    h, w = 1, 6
    first, second = torch.full((1, 1, h, w), 1.0), torch.full((1, 1, h, w), 2.0)

    def cells(*columns):
        mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
        mask[..., list(columns)] = True
        return mask

    # Bodies in columns 1 and 4; each margin reaches one cell further: column 2 is the first body and the
    # second's margin, column 3 both margins.
    a = PlacedObject("a", [first], cells(0, 1, 2), (0, 0), core=cells(1, 2))
    b = PlacedObject("b", [second], cells(2, 3, 4, 5), (0, 0), core=cells(4))
    out = LatentComposition([a, b], steps=1, background="scene").apply(0, torch.zeros(1, 1, h, w))
    assert out.flatten().tolist() == [1, 1, 1, 2, 2, 2]
    # Without bodies (attention-placed objects paste their box), a later object covers an earlier one.
    a, b = PlacedObject("a", [first], cells(0, 1, 2), (0, 0)), PlacedObject("b", [second], cells(2, 3, 4, 5), (0, 0))
    out = LatentComposition([a, b], steps=1, background="scene").apply(0, torch.zeros(1, 1, h, w))
    assert out.flatten().tolist() == [1, 1, 2, 2, 2, 2]


def test_compose_layout_moves_the_segmented_object_to_its_box_centre(syn):
    # A fake segmenter says every drawing shows its object in the top-left 16x16 px of the 64 px image.
    def top_left(image, phrase):
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[:16, :16] = True
        return [mask]

    layout = _layout(box=(0.5, 0.5, 1.0, 1.0))
    options = CompositionOptions(steps=0.5, candidates=2, segmenter=top_left)
    placed = compose_layout(syn, layout, options, num_inference_steps=4, guidance_scale=5.0, seed=3, height=64, width=64)
    assert placed.steps == 2 and len(placed.objects) == 1
    obj = placed.objects[0]
    # Latent 32x32: mask centre (4, 4) cells -> box centre (24, 24): shift 20 cells down and right.
    assert obj.shift == (20, 20)
    cells = obj.mask[0, 0].nonzero()  # cells 0-7 plus a cell of margin (cut at the canvas edge), moved by 20
    assert cells.min(0).values.tolist() == [20, 20] and cells.max(0).values.tolist() == [28, 28]
    body = obj.core[0, 0].nonzero()  # the cells the object itself touches: 0-7, moved by 20
    assert body.min(0).values.tolist() == [20, 20] and body.max(0).values.tolist() == [27, 27]
    # The pasted trajectory is the drawing's own, moved: redraw the chosen candidate and compare.
    seeds = [3 * 1009 + 7919 + c for c in range(2)]
    redrawn = [syn.generate(layout.objects[0].phrase, num_inference_steps=4, guidance_scale=5.0, seed=s,
                            output_type="latent", return_trajectory=True) for s in seeds]  # fmt: skip
    assert any(torch.allclose(obj.trajectory[1], shift_latents(r.trajectory[1], 20, 20), atol=1e-5) for r in redrawn)
    # Without a share, the model's declared one (LMD's 0.5 for a folder that declares none; the shapes model's 0.7).
    assert syn.defaults.composition_steps == 0.5
    unset = CompositionOptions(candidates=2, segmenter=top_left)
    assert compose_layout(syn, layout, unset, num_inference_steps=4, guidance_scale=5.0, seed=3, height=64, width=64).steps == 2
    declared = Synthesizer.from_pipe(syn.pipe, defaults=replace(syn.defaults, composition_steps=0.75))
    assert compose_layout(declared, layout, unset, num_inference_steps=4, guidance_scale=5.0, seed=3, height=64,
                          width=64).steps == 3  # fmt: skip


def squares(calls: list, side_of):
    """A fake segmenter that logs its calls: each drawing's object is a top-left square of ``side_of(call number)`` px."""

    def segment(image, phrase):
        calls.append(phrase)
        mask = np.zeros(image.shape[:2], dtype=bool)
        side = side_of(len(calls))
        mask[:side, :side] = True
        return [mask]

    return segment


def test_more_rounds_are_drawn_only_while_no_drawing_fits_inside_its_box(syn):
    # The fake segmenter finds a 32 px object in the first batch of drawings, a 12 px one afterwards; the box
    # is 16 px (the dummy model's latent is 32x32, 2 px a cell: cells 8-15).
    calls = []
    shrinking = squares(calls, lambda n: 32 if n <= 2 else 12)

    layout = _layout(box=(0.25, 0.25, 0.5, 0.5))  # 16 px of 64
    kwargs = dict(num_inference_steps=2, guidance_scale=5.0, seed=3, height=64, width=64)
    once = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=2, rounds=1, segmenter=shrinking), **kwargs)
    assert len(calls) == 2 and once.objects[0].core.sum() == 16 * 16  # one round: the 32 px drawing, too large
    calls.clear()
    again = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=2, segmenter=shrinking), **kwargs)
    assert len(calls) == 4 and again.objects[0].core.sum() == 6 * 6  # the second round fits: no third
    cells = again.objects[0].core[0, 0].nonzero()
    assert cells.min(0).values.tolist() == [9, 9] and cells.max(0).values.tolist() == [14, 14]  # centred in the box
    # A 4 px drawing lies inside the box's cells but, centred, fills a sixteenth of it (IoU 0.06 < `fit_iou`):
    # another round is drawn, as for a model that drew an unsized object small in a box planned large.
    calls.clear()
    growing = squares(calls, lambda n: 4 if n <= 2 else 14)

    grown = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=2, segmenter=growing), **kwargs)
    assert len(calls) == 4 and grown.objects[0].core.sum() == 7 * 7
    calls.clear()
    lenient = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=2, segmenter=growing, fit_iou=0.0), **kwargs)
    assert len(calls) == 2 and lenient.objects[0].core.sum() == 2 * 2  # cells alone: the first round is enough


def test_of_the_drawings_that_fill_their_box_the_largest_is_kept(syn):
    # Drawings of 9 px (first seed) and 10 px (second) touch the same 5 latent cells (2 px each) and both,
    # centred, fill the 9 px box (IoU 1.0 and 0.81): only their pixels tell them apart, and the larger is
    # kept (small objects are the ones the caption's later steps erase or misshape).
    calls = []
    two_sizes = squares(calls, lambda n: 9 if n % 2 else 10)

    layout = _layout(box=(0.25, 0.25, 0.25 + 9 / 64, 0.25 + 9 / 64))
    kwargs = dict(num_inference_steps=2, guidance_scale=5.0, seed=3, height=64, width=64)
    placed = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=2, segmenter=two_sizes), **kwargs)
    assert len(calls) == 2 and placed.objects[0].core.sum() == 5 * 5
    second = syn.generate(layout.objects[0].phrase, num_inference_steps=2, guidance_scale=5.0, seed=3 * 1009 + 7919 + 1,
                          output_type="latent", return_trajectory=True)  # fmt: skip
    torch.testing.assert_close(placed.objects[0].trajectory[0], shift_latents(second.trajectory[0], *placed.objects[0].shift))


def test_the_canvas_is_the_drawing_calmest_outside_its_object(syn):
    # The fake segmenter finds the circle in a corner of its drawing (the random-weight drawing around it is
    # busy) and the square filling all of its drawing (nothing outside it): the square's drawing is the canvas.
    layout = Layout(prompt="a red circle and a blue square", objects=(
        LayoutObject(name="circle", phrase="a red circle", box=(0.0, 0.0, 0.25, 0.25)),
        LayoutObject(name="square", phrase="a blue square", box=(0.0, 0.0, 1.0, 1.0))))  # fmt: skip

    def segmenter(image, phrase):
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[: 12 if "circle" in phrase else 64, : 12 if "circle" in phrase else 64] = True
        return [mask]

    kwargs = dict(num_inference_steps=2, guidance_scale=5.0, seed=3, height=64, width=64)
    placed = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=1, segmenter=segmenter), **kwargs)
    assert placed.canvas == 1
    scene = torch.zeros(1, 4, 32, 32)
    torch.testing.assert_close(placed.apply(0, scene)[..., 20:, 20:], placed.objects[1].trajectory[0][..., 20:, 20:])
    # Without a segmenter there is no image to judge: the first object's drawing, as LMD's "object" canvas.
    attended = compose_layout(syn, layout, CompositionOptions(steps=0.5, candidates=1, attention_res=(16, 16)), **kwargs)
    assert attended.canvas == 0


def test_generate_with_composition_starts_from_the_composed_latents(syn):
    layout = _layout(box=(0.0, 0.0, 0.5, 0.5))
    # No segmenter: attention finds the object and the box is the mask (the tiny UNet attends at 16x16).
    options = CompositionOptions(steps=0.5, candidates=1, attention_res=(16, 16))
    kwargs = dict(num_inference_steps=4, guidance_scale=5.0, seed=0, output_type="latent", return_trajectory=True)
    composed = syn.generate(layout, composition=options, **kwargs)
    plain = syn.generate(layout, **kwargs)
    placed = compose_layout(syn, layout, options, num_inference_steps=4, guidance_scale=5.0, seed=0, height=64, width=64)
    assert len(composed.trajectory) == 4
    expected = placed.apply(0, plain.trajectory[0])
    torch.testing.assert_close(composed.trajectory[0], expected)
    assert torch.equal(placed.objects[0].mask, box_cells(layout.objects[0].box, 32, 32))
    assert (composed.images - plain.images).abs().max() > 1.0  # composed latents move the result by ~20
    # A bare prompt in the same batch is left alone.
    both = syn.generate([layout, "a dog"], composition=options, **{**kwargs, "seed": [0, 1]})
    alone = syn.generate("a dog", **{**kwargs, "seed": 1})
    torch.testing.assert_close(both.images[1:], alone.images, atol=1e-4, rtol=0)  # batched vs alone: float noise


def test_composition_puts_the_shapes_models_object_in_a_box_it_did_not_draw_there():
    from scenewright.eval.boxes import box_iou
    from scenewright.eval.detect import detector_segmenter
    from scenewright.synth.shapes.detector import ShapesDetector

    syn = Synthesizer.from_pretrained("shapes")
    detector = ShapesDetector()
    boxes = [(0.05, 0.05, 0.45, 0.45), (0.55, 0.55, 0.95, 0.95), (0.05, 0.55, 0.45, 0.95)]
    layouts = [_layout(box=b, phrase="a large blue square") for b in boxes]
    kwargs = dict(num_inference_steps=20, seed=[0, 1, 2], output_type="np")
    plain = syn.generate(layouts, **kwargs).images
    options = CompositionOptions(segmenter=detector_segmenter(detector))
    composed = syn.generate(layouts, composition=options, **kwargs).images

    def best_iou(image, box):
        found = [d for d in detector((image * 255).round().astype(np.uint8)) if d.name == "square"]
        return max((box_iou(d.box, box) for d in found), default=0.0)

    before = [best_iou(img, b) for img, b in zip(plain, boxes)]
    after = [best_iou(img, b) for img, b in zip(composed, boxes)]
    print(f"IoU with its box, plain {before} -> composed {after}")
    assert sum(iou >= 0.5 for iou in after) >= 2 and sum(after) > sum(before) + 0.5


@pytest.mark.parametrize(
    "bad, message",
    [({"steps": 0.0}, "steps"), ({"steps": 1.5}, "steps"), ({"candidates": 0}, "candidates"),
     ({"candidates": True}, "candidates"), ({"rounds": 0}, "rounds"), ({"rounds": 1.5}, "rounds"),
     ({"background": "noise"}, "background"), ({"fit_iou": 1.5}, "fit_iou"),
     ({"attention_threshold": 1.0}, "attention_threshold"), ({"mask_timestep": 1000}, "mask_timestep")],
)  # fmt: skip
def test_bad_options_name_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        CompositionOptions(**bad)


def test_composition_must_be_true_or_options(syn):
    with pytest.raises(TypeError, match="CompositionOptions"):
        syn.generate(_layout(), composition="yes", num_inference_steps=1)


def test_detector_segmenter_returns_the_phrase_objects_mask():
    from scenewright.eval.detect import detector_segmenter
    from scenewright.synth.shapes.detector import ShapesDetector
    from scenewright.synth.shapes.world import sample_scene

    scene = sample_scene(np.random.default_rng(4), curriculum_level=2)
    segment = detector_segmenter(ShapesDetector())
    image = scene.render()
    for obj in scene.objects:
        masks = segment(image, f"a {obj.color} {obj.shape}")
        same = sum((o.color, o.shape) == (obj.color, obj.shape) for o in scene.objects)
        assert len(masks) == same and any((m & obj.mask).sum() >= 0.8 * obj.mask.sum() for m in masks)
    absent = next(f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "star")
                  if all((o.color, o.shape) != (c, s) for o in scene.objects))  # fmt: skip
    assert segment(image, absent) == []


def test_guidance_waits_until_the_composition_ends(syn):
    # Pastes overwrite the latents for the first half of the steps: guiding them would be wasted work.
    options = CompositionOptions(steps=0.5, candidates=1, attention_res=(16, 16))
    out = syn.generate(_layout(), methods=["car", "sar"], composition=options, num_inference_steps=4, seed=0,
                       output_type="latent", car_res=(16, 16), sar_res=(16, 16), max_refinement_steps=0)  # fmt: skip
    assert [r.step for r in out.steps] == [2, 3]
    plain = syn.generate(_layout(), methods=["car", "sar"], num_inference_steps=4, seed=0, output_type="latent",
                         car_res=(16, 16), sar_res=(16, 16), max_refinement_steps=0)  # fmt: skip
    assert [r.step for r in plain.steps] == [0, 1, 2, 3]
