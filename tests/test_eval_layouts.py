"""Stage-1 rules of LMD and NSR-1K on hand-made layouts whose answers are known, and the runner."""

from __future__ import annotations

import argparse
import json

import pytest

from scenewright.eval import cli as eval_cli
from scenewright.eval.layouts import (
    evaluate_suite,
    format_table,
    lmd_eval_info,
    lmd_layout_correct,
    load_lmd,
    load_nsr1k,
    nsr_counting_correct,
    nsr_spatial_correct,
    nsr_spatial_relation,
)
from scenewright.layout.schema import Layout, LayoutObject

LEFT, RIGHT = (0.05, 0.4, 0.35, 0.6), (0.6, 0.4, 0.9, 0.6)
TOP, BOTTOM = (0.4, 0.05, 0.6, 0.3), (0.4, 0.7, 0.6, 0.95)


def _layout(*objects: tuple[str, str, tuple[float, float, float, float]], prompt: str = "p") -> Layout:
    return Layout(prompt=prompt, objects=tuple(LayoutObject(name=n, phrase=p, box=b) for n, p, b in objects))


# ------------------------------------------------------------------------------ LMD
def test_lmd_eval_info_reads_each_task_from_the_prompt():
    assert lmd_eval_info("A realistic photo of a scene without backpacks") == {
        "type": "negation", "names": ("backpack",), "number": 0}  # fmt: skip
    assert lmd_eval_info("A realistic photo of a scene with three cats") == {
        "type": "numeracy", "names": ("cat",), "number": 3}  # fmt: skip
    info = lmd_eval_info("A realistic photo of a scene with a blue dog and a white bowl")
    assert info["type"] == "attribution" and info["names1"] == ("a blue dog",) and info["names2"] == ("a white bowl",)
    info = lmd_eval_info("A realistic photo of a scene with a bowl on the right and a cat on the left")
    assert (info["names1"], info["location1"], info["names2"], info["location2"]) == (("a bowl",), "right", ("a cat",), "left")
    with pytest.raises(ValueError, match="not an LMD benchmark prompt"):
        lmd_eval_info("just a cat")


def test_lmd_negation():
    prompt = "A realistic photo of a scene without cats"
    assert lmd_layout_correct(prompt, _layout(("dog", "a dog", LEFT))) == ("negation", True)
    assert lmd_layout_correct(prompt, _layout(("cat", "a black cat", LEFT))) == ("negation", False)


def test_lmd_numeracy_is_exact():
    prompt = "A realistic photo of a scene with three cats"
    three = _layout(("cat", "a cat", LEFT), ("cat", "a cat", RIGHT), ("cat", "a cat", TOP))
    assert lmd_layout_correct(prompt, three) == ("numeracy", True)
    assert lmd_layout_correct(prompt, _layout(("cat", "a cat", LEFT), ("cat", "a cat", RIGHT)))[1] is False
    four = three.with_objects([*three.objects, LayoutObject(name="cat", phrase="a cat", box=BOTTOM)])
    assert lmd_layout_correct(prompt, four)[1] is False


def test_lmd_attribution_needs_the_colored_phrase():
    prompt = "A realistic photo of a scene with a blue dog and a white bowl"
    assert lmd_layout_correct(prompt, _layout(("dog", "a blue dog", LEFT), ("bowl", "a white bowl", RIGHT)))[1]
    assert not lmd_layout_correct(prompt, _layout(("dog", "a dog", LEFT), ("bowl", "a white bowl", RIGHT)))[1]
    assert not lmd_layout_correct(prompt, _layout(("dog", "a red dog", LEFT), ("bowl", "a white bowl", RIGHT)))[1]


def test_lmd_spatial_by_box_centres():
    prompt = "A realistic photo of a scene with a bottle on the left and a dog on the right"
    assert lmd_layout_correct(prompt, _layout(("bottle", "a bottle", LEFT), ("dog", "a dog", RIGHT))) == ("spatial", True)
    assert not lmd_layout_correct(prompt, _layout(("bottle", "a bottle", RIGHT), ("dog", "a dog", LEFT)))[1]
    assert not lmd_layout_correct(prompt, _layout(("dog", "a dog", RIGHT)))[1]  # missing object
    prompt = "A realistic photo of a scene with a cup on the top and a backpack on the bottom"
    assert lmd_layout_correct(prompt, _layout(("cup", "a cup", TOP), ("backpack", "a backpack", BOTTOM)))[1]
    assert not lmd_layout_correct(prompt, _layout(("cup", "a cup", BOTTOM), ("backpack", "a backpack", TOP)))[1]


# --------------------------------------------------------------------------- NSR-1K
def test_nsr_counting_exact_per_category():
    example = {"sub-type": "two-categories", "num_object": [["potted plant", 2], ["vase", 1]]}
    good = _layout(("potted plant", "a potted plant", LEFT), ("potted plant", "a potted plant", TOP), ("vase", "a vase", RIGHT))
    assert nsr_counting_correct(example, good)
    assert not nsr_counting_correct(example, _layout(("potted plant", "a potted plant", LEFT), ("vase", "a vase", RIGHT)))
    # Objects the example does not mention do not count against it (LayoutGPT's rule).
    assert nsr_counting_correct(example, good.with_objects([*good.objects, LayoutObject(name="table", phrase="a table", box=BOTTOM)]))


def test_nsr_counting_comparison_checks_the_order():
    example = {"sub-type": "comparison", "num_object": [["potted plant", 3], ["vase", 1]]}
    plants = [("potted plant", "a potted plant", b) for b in (LEFT, RIGHT, TOP)]
    assert nsr_counting_correct(example, _layout(*plants, ("vase", "a vase", BOTTOM)))
    assert nsr_counting_correct(example, _layout(*plants, ("vase", "a vase", BOTTOM), ("vase", "a vase", (0, 0, 0.1, 0.1))))
    vases = [("vase", "a vase", b) for b in (BOTTOM, (0, 0, 0.1, 0.1), (0.9, 0.9, 1, 1))]
    assert not nsr_counting_correct(example, _layout(*plants, *vases))  # 3 vs 3: not "more"
    assert not nsr_counting_correct(example, _layout(*plants[:2], ("vase", "a vase", BOTTOM)))  # first count wrong


@pytest.mark.parametrize(
    "box1, box2, relation",
    [(LEFT, RIGHT, "left"), (RIGHT, LEFT, "right"), (TOP, BOTTOM, "top"), (BOTTOM, TOP, "bottom"),
     ((0, 0, 0.2, 0.2), (0.5, 0.5, 0.7, 0.7), "diagonal"), (LEFT, LEFT, "diagonal")],
)  # fmt: skip
def test_nsr_spatial_relation_by_angle(box1, box2, relation):
    assert nsr_spatial_relation(box1, box2) == relation


def test_nsr_spatial_correct_and_next_to():
    example = {"obj1": ["cat", []], "obj2": ["dog", []], "relation": "left"}
    assert nsr_spatial_correct(example, _layout(("cat", "a cat", LEFT), ("dog", "a dog", RIGHT)))
    assert not nsr_spatial_correct(example, _layout(("cat", "a cat", RIGHT), ("dog", "a dog", LEFT)))
    assert not nsr_spatial_correct(example, _layout(("cat", "a cat", LEFT)))  # missing counts as wrong
    next_to = {**example, "relation": "next to"}
    assert nsr_spatial_correct(next_to, _layout(("cat", "a cat", RIGHT), ("dog", "a dog", LEFT)))
    assert not nsr_spatial_correct(next_to, _layout(("cat", "a cat", TOP), ("dog", "a dog", BOTTOM)))


# ---------------------------------------------------------------------------- runner
def test_benchmark_data_ships_as_package_data():
    assert len(load_lmd()) == 400
    assert len(load_nsr1k("counting")) == 762 and len(load_nsr1k("spatial")) == 283
    with pytest.raises(ValueError, match="`task` must be"):
        load_nsr1k("colors")


class _FixedPlanner:
    """Answers every prompt with one layout; raises on prompts containing 'books'."""

    name = "fixed"

    def plan(self, prompt: str, *, seed: int = 0) -> Layout:
        if "books" in prompt:
            raise RuntimeError("planner failed")
        return _layout(("dog", "a dog", LEFT), prompt=prompt)


def test_evaluate_suite_scores_and_survives_planner_errors():
    # LMD's first 20 rows: 10 x "without backpacks" then 10 x "without books".
    result = evaluate_suite("lmd", _FixedPlanner(), limit=20)
    (score,) = result.scores
    assert (score.task, score.n, score.correct) == ("negation", 20, 10)
    assert result.errors == 10 and "planner failed" in score.failures[-1]
    assert result.prompts == 2  # repeated prompts are planned once
    table = format_table([result])
    assert "negation" in table and "50.0%" in table and "NO" in table


def test_eval_layouts_command_prints_json(capsys):
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval-layouts", "--suite", "nsr1k-spatial", "--limit", "5", "--json"])
    assert args.handler(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["suite"] == "nsr1k-spatial" and result["tasks"][0]["n"] == 5
    assert result["planner"] == "offline" and result["prompts_per_second"] > 0


def test_eval_layouts_rejects_bad_flags(capsys):
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval-layouts", "--suite", "lmd", "--limit", "0"])
    assert args.handler(args) == 2 and "--limit" in capsys.readouterr().err
    args = parser.parse_args(["eval-layouts", "--suite", "lmd", "--model", "gpt"])
    assert args.handler(args) == 2 and "--model" in capsys.readouterr().err
