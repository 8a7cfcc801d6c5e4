"""The embedded shapes-world model against its targets (issue: embedded shapes-world model).

Prints, for a model folder (default: the embedded ``shapes``):

1. **Unguided from captions** (DDIM; CFG: the model's declared scale unless ``--guidance-scale``), scored
   by the exact detector: single-object color recall and
   color+shape exact match; 1-4 object per-instance color recall, exact multiset and count accuracy
   (:func:`scenewright.synth.shapes.train.evaluate`, the same numbers the training log records).
2. **Attention localization**: ground-truth scenes are encoded, noised to timestep ``--auc-timestep`` and
   passed once through the UNet with their captions; each caption word that names objects (count, size,
   color, shape) gets its 16x16 cross-attention map (mean of heads, layers and the word's tokens) and the
   ROC AUC of that map against the union of its objects' boxes. Reported for shape nouns and color words,
   and (``*_mask``, no target) against the objects' own cells.
3. **Region words**: single-object captions with a region ("a red circle in the top left") are drawn twice
   from the same seeds, with and without the region words; each figure is the fraction of images whose
   largest detected object has its centre in the named 3x3 region. If the two are equal, the model ignores
   the words and only the initial noise decides where objects go (what guidance then has to overcome).
4. **Grounded** (a GLIGEN model only, e.g. after ``--stage gligen``): 1-4 object scenes drawn from their
   captions and their true boxes through :class:`scenewright.synth.Synthesizer` with the gated layers on for the first
   ``--gligen-beta`` of the steps; count accuracy, objects inside their boxes (IoU >= 0.5), clean background
   (:func:`scenewright.synth.shapes.train.evaluate_grounded`, the numbers the GLIGEN training log records).
5. **Speed**: wall time of one unguided 64x64 image (``--steps`` DDIM steps, CFG) with ``--threads`` threads.

    python benchmarks/shapes_model.py                         # embedded model, 64 scenes per suite
    python benchmarks/shapes_model.py --model runs/shapes/export --count 128 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from scenewright.synth.attention import attention_capture
from scenewright.synth.gligen import is_gligen_unet
from scenewright.synth.loading import load_stable_diffusion, model_defaults, resolve_model
from scenewright.synth.maps import MapRequest, box_cell_masks
from scenewright.synth.shapes.detector import detect
from scenewright.synth.shapes.train import (
    LATENT_SIZE,
    evaluate,
    evaluate_grounded,
    images_to_tensor,
    object_masks_latent,
    word_token_spans,
)
from scenewright.synth.shapes.world import COLORS, SHAPES, region_of, sample_scene

TARGETS = {"single_color_recall": 0.95, "single_exact": 0.9, "auc_noun": 0.8, "auc_color": 0.8, "seconds_per_image": 2.0,
           "grounded_count_acc": 0.9, "grounded_box_iou50": 0.8}


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a random positive cell outscores a random negative one (ties count half); None if one class is empty."""
    scores, positive = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def attention_auc(pipe, count: int, seed: int, timestep: int) -> dict[str, float | None]:
    """Mean ROC AUC of word attention vs. the word's objects' boxes, for shape nouns and color words.

    Also against the objects' own cells (``auc_*_mask``: cells at least half covered), which says how well the
    words find their objects whatever their shape; the box figure, which guidance needs, counts a star's
    empty box corners as cells the word should attend to.
    """
    rng = np.random.default_rng([seed, 7])
    scenes = [sample_scene(rng, curriculum_level=2) for _ in range(count)]
    latents = pipe.vae.encode(images_to_tensor(np.stack([s.render() for s in scenes]))).latent_dist.mean
    latents = latents * pipe.vae.config.scaling_factor
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator)
    t = torch.full((count,), timestep, dtype=torch.long)
    noisy = pipe.scheduler.add_noise(latents, noise, t)
    ids = pipe.tokenizer([s.caption.text for s in scenes], padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids  # fmt: skip
    text = pipe.text_encoder(ids)[0]
    request = MapRequest(kind="cross", resolutions=((LATENT_SIZE, LATENT_SIZE),))
    with attention_capture(pipe.unet, [request], early_exit=True) as capture:
        capture.guidance_forward(lambda: pipe.unet(noisy, t, encoder_hidden_states=text), (LATENT_SIZE, LATENT_SIZE))
        maps = torch.stack([layer.probs.float() for layer in capture.layers.values()]).mean(dim=(0, 2))  # (B, hw, 77)
    results: dict[str, list[float]] = {"noun": [], "color": [], "noun_mask": [], "color_mask": []}
    for b, scene in enumerate(scenes):
        words = scene.caption.text.split()
        object_cells = object_masks_latent(scene) >= 0.5  # (MAX_OBJECTS, 256)
        for word, span, refs in zip(words, word_token_spans(pipe.tokenizer, words), scene.caption.word_objects):
            core = word.rstrip(",.;")
            kind = "noun" if core.rstrip("s") in SHAPES else "color" if core in COLORS else None
            if kind is None or not refs or not span:
                continue
            word_map = maps[b, :, span].mean(dim=-1).numpy()
            boxes = torch.tensor([scene.objects[k].box for k in refs], dtype=torch.float32)
            in_boxes = box_cell_masks(boxes, LATENT_SIZE, LATENT_SIZE).amax(dim=0).numpy()
            for name, positive in ((kind, in_boxes), (f"{kind}_mask", object_cells[list(refs)].any(axis=0))):
                auc = roc_auc(word_map, positive)
                if auc is not None:
                    results[name].append(auc)
    return {f"auc_{k}": (float(np.mean(v)) if v else None) for k, v in results.items()}


@torch.no_grad()
def region_following(pipe, count: int, seed: int, steps: int, guidance: float) -> dict[str, float]:
    """Fraction of images whose object lands in the caption's region: with the region words, and without them."""
    rng = np.random.default_rng([seed, 11])
    with_region, without_region, regions = [], [], []
    while len(with_region) < count:
        scene = sample_scene(rng, max_objects=1, curriculum_level=0)
        words = scene.caption.text.split()
        kept = [w for w, refs in zip(words, scene.caption.word_objects) if refs]
        if len(kept) == len(words):  # this caption names no region
            continue
        with_region.append(scene.caption.text)
        without_region.append(" ".join(kept))
        regions.append(region_of(*scene.objects[0].center))
    figures = {}
    for name, captions in (("region_accuracy", with_region), ("region_accuracy_without_words", without_region)):
        images = pipe(captions, num_inference_steps=steps, guidance_scale=guidance,
                      generator=[torch.Generator().manual_seed(seed + i) for i in range(count)], output_type="np").images
        hits = []
        for image, region in zip(images, regions):
            found = detect((image * 255).round().astype(np.uint8))  # largest first
            hits.append(bool(found) and region_of((found[0].box[0] + found[0].box[2]) / 2,
                                                  (found[0].box[1] + found[0].box[3]) / 2) == region)  # fmt: skip
        figures[name] = float(np.mean(hits))
    return figures


def seconds_per_image(pipe, steps: int, repeats: int = 3) -> float:
    """Best wall time of one unguided image (CFG 5), after one warm-up run."""
    best = float("inf")
    for r in range(repeats + 1):
        start = time.perf_counter()
        pipe("a red circle to the left of a blue square", num_inference_steps=steps, guidance_scale=5.0,
             generator=torch.Generator().manual_seed(r), output_type="np")  # fmt: skip
        if r:  # the first run warms up allocators and caches
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="embedded name or an exported SD folder")
    parser.add_argument("--count", type=int, default=64, help="scenes per suite")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps of the generations")
    parser.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--auc-timestep", type=int, default=500)
    parser.add_argument("--gligen-beta", type=float, default=0.3, help="share of steps with grounding on (GLIGEN: 0.3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipe = load_stable_diffusion(args.model, safety_checker=None, requires_safety_checker=False)
    guidance = args.guidance_scale
    if guidance is None:
        guidance = model_defaults(resolve_model(args.model)).guidance_scale
    figures: dict[str, float | None] = {}
    unguided = evaluate(pipe, args.seed, args.count, args.steps, guidance)
    figures.update({f"{suite}_{k}": v for suite, scores in unguided.items() for k, v in scores.items()})
    figures.update(attention_auc(pipe, args.count, args.seed, args.auc_timestep))
    figures.update(region_following(pipe, args.count, args.seed, args.steps, guidance))
    if is_gligen_unet(pipe.unet):
        grounded = evaluate_grounded(pipe, args.seed, args.count, args.steps, guidance, args.gligen_beta)
        figures.update({f"grounded_{k}": v for k, v in grounded.items()})
    figures["seconds_per_image"] = seconds_per_image(pipe, args.steps)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"model={args.model} scenes/suite={args.count} steps={args.steps} cfg={guidance} threads={args.threads}")
    for name, value in figures.items():
        target = TARGETS.get(name)
        shown = "n/a" if value is None else f"{value:.3f}"
        if target is None:
            print(f"{name:28s} {shown}")
            continue
        met = value is not None and (value <= target if name == "seconds_per_image" else value >= target)
        print(f"{name:28s} {shown}   target {'<=' if name == 'seconds_per_image' else '>='} {target}  {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
