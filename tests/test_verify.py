"""The one verifier (eval.verify): requirements, their summary figures and the pass rule, on hand-made detections."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenewright.eval.detection import Detection
from scenewright.eval.verify import verify
from scenewright.layout.plan import plan_for_layout
from scenewright.layout.schema import Layout


def det(name, box, score=0.95, color=None):
    return Detection(name, tuple(box), score, color=color)


def layout(prompt, *objects):
    return Layout.parse({"prompt": prompt, "objects": [{"name": n, "phrase": f"a {n}", "box": list(b)} for n, b in objects]})


def verdict_scores(detections, planned, **options):
    """The verdict's summary figures, as the bench records them."""
    return verify(plan_for_layout(planned), detections, **options).scores


CAT_LEFT, DOG_RIGHT = (0.05, 0.3, 0.4, 0.7), (0.6, 0.3, 0.95, 0.7)
_unit = st.floats(0.0, 1.0, allow_nan=False)
_box = st.tuples(_unit, _unit, _unit, _unit)
_names = st.sampled_from(["cat", "dog", "apple"])


def test_verify_perfect_and_swapped():
    plan = layout("a cat to the left of a dog", ("cat", CAT_LEFT), ("dog", DOG_RIGHT))
    good = verdict_scores([det("cat", CAT_LEFT), det("dog", DOG_RIGHT)], plan)
    assert good == {"count_acc": 1.0, "spatial_acc": 1.0, "box_iou50": 1.0, "mean_iou": 1.0}
    swapped = verdict_scores([det("dog", CAT_LEFT), det("cat", DOG_RIGHT)], plan)
    assert swapped == {"count_acc": 1.0, "spatial_acc": 0.0, "box_iou50": 0.0, "mean_iou": 0.0}


def test_verify_counts_extra_missing_and_negation():
    plan = layout("two apples", ("apple", (0.1, 0.1, 0.3, 0.3)), ("apple", (0.6, 0.6, 0.8, 0.8)))
    two = [det("apple", (0.1, 0.1, 0.3, 0.3)), det("apple", (0.6, 0.6, 0.8, 0.8))]
    assert verdict_scores(two, plan)["count_acc"] == 1.0
    assert verdict_scores(two + [det("apple", (0.4, 0.0, 0.5, 0.1))], plan)["count_acc"] == 0.0  # N+1
    one = verdict_scores(two[:1], plan)
    assert one["count_acc"] == 0.0 and one["box_iou50"] == 0.5 and one["spatial_acc"] is None
    negated = layout("a table without cats", ("table", (0.2, 0.5, 0.8, 0.9)))
    assert verdict_scores([det("table", (0.2, 0.5, 0.8, 0.9))], negated)["count_acc"] == 1.0
    assert verdict_scores([det("table", (0.2, 0.5, 0.8, 0.9)), det("cat", (0.1, 0.1, 0.2, 0.2))], negated)["count_acc"] == 0.0


def test_verify_rejects_bad_threshold_and_empty_layout_is_none():
    plan = Layout.parse({"prompt": "an empty room"})
    scores = verdict_scores([], plan)
    assert scores["box_iou50"] is None and scores["mean_iou"] is None
    with pytest.raises(ValueError, match="iou_threshold"):
        verdict_scores([], plan, iou_threshold=0.0)


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.text(min_size=1, max_size=60).filter(str.strip),
    planned=st.lists(st.tuples(_names, _box), max_size=4),
    found=st.lists(st.tuples(_names, _box, _unit), max_size=6),
)
def test_verify_never_crashes_on_any_prompt_or_boxes(prompt, planned, found):
    objects = []
    for name, (a, b, c, d) in planned:
        x0, x1, y0, y1 = min(a, c), max(a, c), min(b, d), max(b, d)
        if x1 - x0 > 1e-3 and y1 - y0 > 1e-3:
            objects.append({"name": name, "phrase": f"a {name}", "box": [x0, y0, x1, y1]})
    plan = Layout.parse({"prompt": prompt, "objects": objects})
    scores = verdict_scores([det(n, b, s) for n, b, s in found], plan)  # degenerate detected boxes allowed
    assert set(scores) == {"count_acc", "spatial_acc", "box_iou50", "mean_iou"}
    assert scores["count_acc"] in (0.0, 1.0)
    for key in ("spatial_acc", "box_iou50", "mean_iou"):
        assert scores[key] is None or 0.0 <= scores[key] <= 1.0


def test_the_verdict_names_each_requirement_and_passes_on_counts_relations_and_mean_iou():
    planned = plan_for_layout(layout("a cat to the left of a dog", ("cat", CAT_LEFT), ("dog", DOG_RIGHT)))
    swapped = verify(planned, [det("dog", CAT_LEFT), det("cat", DOG_RIGHT)])
    assert [r.key for r in swapped.requirements] == ["count:cat", "count:dog", "relation:0", "box:0", "box:1", "mean_iou"]
    assert [r.passed for r in swapped.requirements] == [True, True, False, False, False, False]
    assert not swapped.passed and swapped.failures[0] == "relation left_of: 'a cat' left of 'a dog' does not hold in the image"
    good = verify(planned, [det("cat", CAT_LEFT), det("dog", DOG_RIGHT)])
    assert good.passed and good.failures == [] and all(r.sentence for r in good.requirements)
