"""LMD (Lian et al. 2023) image-level rules: OWL-ViT detections judged by LMD's stage-1 layout predicates."""

from __future__ import annotations

from collections.abc import Sequence

from scenewright.eval.boxes import nms
from scenewright.eval.detection import Detection
from scenewright.eval.layouts import lmd_eval_info, lmd_layout_correct
from scenewright.eval.scores import detections_layout
from scenewright.eval.suites import BenchItem


def _lmd_query_text(detection: Detection, attribution: bool) -> str:
    """The OWL-ViT query LMD would have detected this box with: 'a photo of a <object>' (with its color for attribution)."""
    phrase = f"{detection.color} {detection.name}" if attribution and detection.color else detection.name
    return f"a photo of {'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def lmd_image_correct(
    prompt: str, detections: Sequence[Detection], *, score_threshold: float = 0.05, nms_threshold: float = 0.5
) -> tuple[str, bool]:
    """LMD image-level (``scripts/owl_vit_eval.py``, ``utils/eval``): score >= 0.05, class-agnostic NMS 0.5, stage-1 predicates."""
    attribution = lmd_eval_info(prompt)["type"] == "attribution"
    kept = nms([d for d in detections if d.score >= score_threshold], nms_threshold)
    boxes = detections_layout(kept, prompt)  # LMD judges the detected boxes with its layout predicates
    named = [o.model_copy(update={"phrase": _lmd_query_text(d, attribution)}) for o, d in zip(boxes.objects, kept)]
    return lmd_layout_correct(prompt, boxes.with_objects(named))


# ----------------------------------------------------------------------------- bench scorer
def lmd_scores(item: BenchItem, image, detections: list[Detection]) -> dict:
    """LMD on one bench image: 1.0 when its prompt's predicate holds on the detections, else 0.0."""
    _kind, correct = lmd_image_correct(item.prompt, detections)
    return {"lmd": float(correct)}
