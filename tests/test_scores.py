"""Scorers on hand-made detections whose right answer is known, including each benchmark's edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scenewright.eval.benchmarks.geneval import geneval_correct, geneval_relative_position
from scenewright.eval.benchmarks.hrs import (
    hrs_color_correct,
    hrs_counting_counts,
    hrs_counting_prf,
    hrs_hue_color,
    hrs_region_color,
    hrs_size_correct,
    hrs_spatial_correct,
    opencv_hue,
)
from scenewright.eval.benchmarks.lmd import lmd_image_correct
from scenewright.eval.benchmarks.t2i_compbench import (
    t2i_numeracy_score,
    t2i_position_score,
    t2i_spatial_locality,
    t2i_spatial_score,
)
from scenewright.eval.boxes import box_iou, nms
from scenewright.eval.detection import Detection
from scenewright.eval.scores import grounding_scores
from scenewright.layout.schema import Layout


def det(name, box, score=0.95, color=None, mask=None):
    return Detection(name, tuple(box), score, mask=mask, color=color)


def layout(prompt, *objects):
    return Layout.parse({"prompt": prompt, "objects": [{"name": n, "phrase": f"a {n}", "box": list(b)} for n, b in objects]})


CAT_LEFT, DOG_RIGHT = (0.05, 0.3, 0.4, 0.7), (0.6, 0.3, 0.95, 0.7)


# ---------------------------------------------------------------- grounding
def test_grounding_iou_boundary_and_one_to_one():
    plan = layout("a cat", ("cat", (0.0, 0.0, 0.5, 0.5)))
    # detected box covers exactly half of the union: IoU 0.5 counts (>=)
    half = det("cat", (0.0, 0.0, 0.5, 0.25))
    assert box_iou(half.box, plan.objects[0].box) == pytest.approx(0.5)
    assert grounding_scores([half], plan) == {"box_iou50": 1.0, "mean_iou": pytest.approx(0.5)}
    assert grounding_scores([det("cat", (0.0, 0.0, 0.5, 0.24))], plan)["box_iou50"] == 0.0
    two = layout("two cats", ("cat", (0.0, 0.0, 0.4, 0.4)), ("cat", (0.5, 0.5, 0.9, 0.9)))
    shared = grounding_scores([det("cat", (0.0, 0.0, 0.4, 0.4))], two)  # one detection serves one plan
    assert shared == {"box_iou50": 0.5, "mean_iou": 0.5}
    assert grounding_scores([det("dog", (0.0, 0.0, 0.4, 0.4))], two)["box_iou50"] == 0.0  # names must agree


# ------------------------------------------------------------------------ HRS
def test_hrs_counting_tp_is_min_of_gt_and_pred():
    dets = [det("cat", (0, 0, 0.1, 0.1))] * 3 + [det("car", (0.5, 0.5, 0.6, 0.6))]
    assert hrs_counting_counts(dets, {"cat": 2, "dog": 1}) == (2, 1, 1)
    prf = hrs_counting_prf([(2, 1, 1), (1, 0, 0)])
    assert prf["precision"] == pytest.approx(3 / 4) and prf["recall"] == pytest.approx(3 / 4)
    assert prf["f1"] == pytest.approx(3 / 4)
    assert hrs_counting_prf([(0, 0, 2)]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_hrs_spatial_uses_box_edges_not_centres():
    # A is wide: its centre lies right of B's, but its left edge is further left -> HRS says "left of"
    a, b = det("cat", (0.0, 0.4, 1.0, 0.6)), det("dog", (0.3, 0.4, 0.5, 0.6))
    assert hrs_spatial_correct([a, b], ["cat", "dog"], ["on the left of"])
    assert hrs_spatial_correct([a, b], ["cat", "dog"], ["on the right of"])  # xmax 1.0 > 0.5 too
    # "above" holds when either the top or the bottom edge is higher
    top_only = det("cat", (0.4, 0.1, 0.6, 0.95))
    assert hrs_spatial_correct([top_only, det("dog", (0.4, 0.2, 0.6, 0.9))], ["cat", "dog"], ["above"])
    assert not hrs_spatial_correct([det("cat", (0.4, 0.3, 0.6, 0.95)), det("dog", (0.4, 0.2, 0.6, 0.9))], ["cat", "dog"], ["on"])
    assert not hrs_spatial_correct([a], ["cat", "dog"], ["on the left of"])  # missing object
    with pytest.raises(ValueError, match="unknown"):
        hrs_spatial_correct([a, b], ["cat", "dog"], ["inside"])


def test_hrs_spatial_medium_and_hard_levels():
    left, mid, right = (0.0, 0.4, 0.2, 0.6), (0.4, 0.4, 0.6, 0.6), (0.8, 0.4, 1.0, 0.6)
    dets = [det("cat", mid), det("dog", left), det("car", right)]
    assert hrs_spatial_correct(dets, ["cat", "dog", "car"], ["between"])
    assert not hrs_spatial_correct([det("cat", left), det("dog", mid), det("car", right)], ["cat", "dog", "car"], ["in the middle of"])
    assert hrs_spatial_correct(dets, ["cat", "dog", "car"], ["on the right of", "on the left of"])
    assert not hrs_spatial_correct(dets, ["cat", "dog", "car"], ["on the right of", "on the right of"])
    # hard: person and airplane beneath a car and on the right of a cat
    hard = [det("person", (0.6, 0.7, 0.7, 0.9)), det("airplane", (0.8, 0.7, 0.9, 0.9)),
            det("car", (0.5, 0.1, 0.7, 0.3)), det("cat", (0.0, 0.4, 0.2, 0.6))]  # fmt: skip
    objs = ["person", "airplane", "car", "cat"]
    assert hrs_spatial_correct(hard, objs, ["beneath", "on the right of"])
    assert not hrs_spatial_correct(hard, objs, ["beneath", "on the left of"])


def test_hrs_last_detection_of_a_kind_is_the_one_judged():
    first, last = det("cat", (0.0, 0.4, 0.1, 0.6)), det("cat", (0.9, 0.4, 1.0, 0.6))
    dog = det("dog", (0.4, 0.4, 0.6, 0.6))
    assert hrs_spatial_correct([first, last, dog], ["cat", "dog"], ["on the right of"])
    assert not hrs_spatial_correct([last, first, dog], ["cat", "dog"], ["on the right of"])


def test_hrs_size_by_box_area():
    big, small, tiny = (0, 0, 0.6, 0.6), (0.7, 0.7, 0.9, 0.9), (0.0, 0.9, 0.05, 0.95)
    assert hrs_size_correct([det("cat", big), det("dog", small)], ["cat", "dog"], ["bigger"])
    assert not hrs_size_correct([det("cat", big), det("dog", small)], ["cat", "dog"], ["smaller"])
    three = [det("cat", small), det("dog", big), det("car", tiny)]
    assert hrs_size_correct(three, ["cat", "dog", "car"], ["smaller", "larger"])
    assert not hrs_size_correct(three, ["cat", "dog", "car"], ["larger", "larger"])


def _canvas(color, box=(16, 16, 48, 48), size=64, background=(128, 128, 128)):
    image = np.full((size, size, 3), background, dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = color
    return image


def test_opencv_hue_scale_and_hrs_bins():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 128, 0], [255, 255, 0], [40, 40, 40]]], dtype=np.uint8)
    assert opencv_hue(px)[0].tolist() == [0, 60, 120, 15, 30, 0]
    assert [hrs_hue_color(h) for h in (0, 14.9, 15, 21.9, 22, 38.9, 39, 77.9, 78, 130.9, 131, 170)] == [
        "red", "red", "orange", "orange", "yellow", "yellow", "green", "green", "blue", "blue", "red", "red"
    ]  # fmt: skip
    assert hrs_hue_color(math.nan) == "red"  # HRS: an all-zero-hue region divides 0 by 0


def test_hrs_color_inside_box_ignores_gray_and_uses_mask():
    image = _canvas((0, 0, 255))  # blue square on gray
    loose = det("cat", (0.0, 0.0, 1.0, 1.0))  # the gray pixels (hue 0) do not dilute the mean
    assert hrs_region_color(image, loose) == "blue"
    assert hrs_color_correct(image, [loose], ["cat", "dog"], ["blue", "blue"]) == [True, False]
    two = _canvas((0, 255, 0), box=(0, 0, 32, 64))
    two[:, 32:] = (0, 0, 255)
    mask = np.zeros((64, 64), dtype=bool)
    mask[:, 40:] = True
    masked = det("cat", (0.0, 0.0, 0.6, 1.0), mask=mask)  # the box says green-ish, the mask blue
    assert hrs_region_color(two, masked) == "blue"
    assert hrs_region_color(two, det("cat", (0.0, 0.0, 0.4, 1.0))) == "green"
    with pytest.raises(ValueError, match="mask"):
        hrs_region_color(two, det("cat", (0, 0, 1, 1), mask=np.ones((8, 8), dtype=bool)))


# -------------------------------------------------------------------- GenEval
def counting(n, name="cat"):
    return {"tag": "counting", "include": [{"class": name, "count": n}], "exclude": [{"class": name, "count": n + 1}]}


def row(k, score=0.95, name="cat"):
    return [det(name, (0.1 * i, 0.1, 0.1 * i + 0.08, 0.2), score) for i in range(k)]


def test_geneval_counting_exact_high_confidence_not_n_plus_one():
    assert geneval_correct(row(3), counting(3))[0] is True
    ok, reason = geneval_correct(row(4), counting(3))
    assert ok is False and "cat<4" in reason
    assert geneval_correct(row(2), counting(3))[0] is False
    # the fourth cat at 0.5 is below the counting threshold (0.9): ignored
    assert geneval_correct(row(3) + [det("cat", (0.7, 0.7, 0.8, 0.8), 0.5)], counting(3))[0] is True
    # 0.9 itself does not pass ("score > threshold")
    assert geneval_correct(row(3, score=0.9), counting(3))[0] is False
    # other tags use the 0.3 threshold
    single = {"tag": "single_object", "include": [{"class": "cat", "count": 1}]}
    assert geneval_correct(row(1, score=0.5), single)[0] is True
    assert geneval_correct(row(1, score=0.3), single)[0] is False


def test_geneval_position_margin():
    # boxes 100 px wide on a 1000 px canvas: A is "right of" B once the centre offset exceeds 0.4 x width
    b = (0.40, 0.45, 0.50, 0.55)
    assert geneval_relative_position((500, 450, 600, 550), (400, 450, 500, 550)) == {"right of"}  # dx = 100
    assert geneval_relative_position((441, 450, 541, 550), (400, 450, 500, 550)) == {"right of"}  # dx = 41
    assert geneval_relative_position((439, 450, 539, 550), (400, 450, 500, 550)) == set()  # dx = 39
    assert geneval_relative_position((419, 450, 519, 550), (400, 450, 500, 550)) == set()  # within 0.2 x (wa + wb)
    meta = {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    near = [det("cat", b), det("dog", (0.439, 0.45, 0.539, 0.55))]
    far = [det("cat", b), det("dog", (0.45, 0.45, 0.55, 0.55))]
    assert geneval_correct([det("cat", b), det("dog", (0.441, 0.45, 0.541, 0.55))], meta, image_size=1000)[0] is True
    assert geneval_correct(near, meta, image_size=1000)[0] is False
    assert geneval_correct(far, meta, image_size=1000)[0] is True
    assert geneval_correct([det("dog", (0.8, 0.4, 0.9, 0.5))], meta)[0] is False  # no target


def test_geneval_position_judges_most_confident_only():
    meta = {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    cat = det("cat", (0.7, 0.4, 0.8, 0.5))
    good_dog, bad_dog = det("dog", (0.1, 0.4, 0.2, 0.5), 0.9), det("dog", (0.9, 0.4, 1.0, 0.5), 0.6)
    assert geneval_correct([cat, bad_dog, good_dog], meta)[0] is True
    assert geneval_correct([cat, det("dog", bad_dog.box, 0.95), good_dog], meta)[0] is False


def test_geneval_color_attribution_and_unknown_color():
    meta = {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "green"}, {"class": "cup", "count": 1, "color": "purple"}]}
    bus, cup = (0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 0.9, 0.9)
    assert geneval_correct([det("bus", bus, color="green"), det("cup", cup, color="purple")], meta)[0] is True
    ok, reason = geneval_correct([det("bus", bus, color="purple"), det("cup", cup, color="green")], meta)
    assert ok is False and "green bus" in reason
    ok, reason = geneval_correct([det("bus", bus), det("cup", cup)], meta)
    assert ok is None and "no color" in reason
    with pytest.raises(ValueError, match="include"):
        geneval_correct([], {"tag": "counting"})


def test_geneval_nms_when_enabled():
    twins = [det("cat", (0.1, 0.1, 0.5, 0.5)), det("cat", (0.11, 0.1, 0.5, 0.5), 0.94)]
    assert geneval_correct(twins, counting(1))[0] is False  # no NMS by default (max_overlap = 1)
    assert geneval_correct(twins, counting(1), nms_threshold=0.5)[0] is True


# ------------------------------------------------------------------------ LMD
PREFIX = "A realistic photo of a scene"


def test_lmd_numeracy_threshold_and_nms():
    prompt = f"{PREFIX} with three cups"
    cups = row(3, score=0.3, name="cup")
    assert lmd_image_correct(prompt, cups) == ("numeracy", True)
    assert lmd_image_correct(prompt, cups + [det("cup", (0.8, 0.8, 0.9, 0.9), 0.04)])[1] is True  # < 0.05 ignored
    assert lmd_image_correct(prompt, cups + [det("cup", (0.8, 0.8, 0.9, 0.9), 0.05)])[1] is False
    duplicate = det("cup", (0.005, 0.1, 0.085, 0.2), 0.2)  # IoU with the first cup > 0.5: suppressed
    assert lmd_image_correct(prompt, cups + [duplicate])[1] is True
    # LMD's NMS is class-agnostic: a dog on top of a cup removes the weaker cup
    assert lmd_image_correct(prompt, cups + [det("dog", cups[0].box, 0.9)])[1] is False
    assert len(nms(cups + [det("dog", cups[0].box, 0.9)], 0.5, class_aware=True)) == 4


def test_lmd_negation_attribution_spatial():
    assert lmd_image_correct(f"{PREFIX} without dogs", [det("cat", (0, 0, 0.2, 0.2))]) == ("negation", True)
    assert lmd_image_correct(f"{PREFIX} without dogs", [det("dog", (0, 0, 0.2, 0.2))])[1] is False
    prompt = f"{PREFIX} with a red car and a blue dog"
    red_car, blue_dog = det("car", (0, 0, 0.3, 0.3), color="red"), det("dog", (0.5, 0.5, 0.9, 0.9), color="blue")
    assert lmd_image_correct(prompt, [red_car, blue_dog]) == ("attribution", True)
    assert lmd_image_correct(prompt, [det("car", red_car.box, color="blue"), det("dog", blue_dog.box, color="red")])[1] is False
    spatial = f"{PREFIX} with a cat on the left and a dog on the right"
    assert lmd_image_correct(spatial, [det("cat", CAT_LEFT), det("dog", DOG_RIGHT)]) == ("spatial", True)
    assert lmd_image_correct(spatial, [det("cat", DOG_RIGHT), det("dog", CAT_LEFT)])[1] is False
    assert lmd_image_correct(spatial, [det("cat", CAT_LEFT)])[1] is False


# -------------------------------------------------------------- T2I-CompBench
def test_t2i_position_partial_credit():
    a, b = (0, 200, 100, 300), (300, 200, 400, 300)
    assert t2i_position_score("on the left of", a, b) == 1.0
    assert t2i_position_score("on the right of", a, b) == 0.0
    overlapping = (50, 200, 150, 300)  # IoU 1/3 with a
    assert t2i_position_score("on the left of", a, overlapping) == pytest.approx(0.1 / (1 / 3))
    assert t2i_position_score("next to", a, (0, 0, 10, 10)) == 1.0  # |dx| < 150
    assert t2i_position_score("near", (0, 0, 10, 10), (400, 400, 410, 410)) == pytest.approx(150 / 400)
    assert t2i_position_score("on the top of", (0, 0, 100, 100), (0, 300, 100, 400)) == 1.0
    assert t2i_position_score("on top of", (0, 0, 100, 100), (0, 300, 100, 400)) == 0.0  # as in T2I-CompBench
    assert t2i_spatial_locality("a cat on the left of a dog") == "on the left of"


def test_t2i_spatial_score_and_cut_below_half():
    cat, dog = det("cat", (0.0, 0.4, 0.2, 0.6), 0.8), det("dog", (0.6, 0.4, 0.8, 0.6), 0.6)
    assert t2i_spatial_score([cat, dog], "cat", "dog", "on the left of") == pytest.approx(0.25 * 0.8 + 0.25 * 0.6 + 0.5)
    assert t2i_spatial_score([cat, dog], "cat", "dog", "on the right of") == 0.0  # 0.35 < 0.5 -> 0
    assert t2i_spatial_score([cat], "cat", "dog", "on the left of") == 0.0  # only one found: 0.2 -> 0
    person = det("person", (0.0, 0.4, 0.2, 0.6), 1.0)
    assert t2i_spatial_score([person, dog], "girl", "dog", "on the left of") == pytest.approx(0.25 + 0.15 + 0.5)


def test_t2i_numeracy_partial_credit_and_duplicates():
    three = row(3, name="apple")
    assert t2i_numeracy_score(three, [("apple", 3)]) == 1.0
    assert t2i_numeracy_score(three[:2], [("apple", 3)]) == 0.5  # present, wrong count
    assert t2i_numeracy_score(three, [("apple", 3), ("pear", 1)]) == 0.5
    inner = det("apple", (0.005, 0.105, 0.075, 0.195))  # 90% inside the first apple: the same apple
    assert t2i_numeracy_score(three + [inner], [("apple", 3)]) == 1.0
    assert t2i_numeracy_score([det("person", (0, 0, 0.3, 0.3))] * 2, [("boy", 2)]) == 0.5  # identical boxes dedupe -> 1 person
    assert t2i_numeracy_score([det("person", (0, 0, 0.3, 0.3)), det("person", (0.5, 0, 0.8, 0.3))], [("boy", 2)]) == 1.0
    assert t2i_numeracy_score([det("sports ball", (0, 0, 0.3, 0.3))], [("ball", 1)]) == 1.0  # substring renaming
    with pytest.raises(ValueError, match="objects"):
        t2i_numeracy_score(three, [])
