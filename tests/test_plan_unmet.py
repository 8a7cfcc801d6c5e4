"""A plan reports every requirement of its own prompt that its layout still breaks (issue 21): in ``Plan.unmet``,
in ``plan_layout``'s notes, on ``scenewright plan``'s stderr and in the agent's report.json."""

from __future__ import annotations

import json

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from scenewright.agent.cli import main
from scenewright.agent.config import AgentSettings
from scenewright.agent.loop import Attempt, RunResult
from scenewright.layout.plan import fit_to_model, plan, plan_for_layout, plan_layout
from scenewright.layout.relations import violations
from scenewright.layout.schema import Layout, LayoutError, LayoutObject
from scenewright.layout.vocabulary import COCO_CLASSES

# Found by fuzzing plan() over vocabulary prompts: the offline planner and the checker keep what holds but
# cannot reach these, and before issue 21 nothing said so. prompt -> the words of what stays broken.
BROKEN_PROMPTS = {
    "a cat next to a dog beside a tree": ["relation next_to: 'a cat' next to 'a dog' does not hold"],
    "a tiny cat between two huge dogs": ["relation between: 'a tiny cat' between the 'a huge dog' instances does not hold"],
    "four huge bicycles at the top": [f"objects[{i}] 'a huge bicycle' should be huge" for i in range(4)],
    "a huge dog smaller than a cat": ["objects[0] 'a huge dog' should be huge"],
}


@pytest.mark.parametrize("prompt", sorted(BROKEN_PROMPTS))
def test_a_plan_lists_every_requirement_its_layout_still_breaks(prompt):
    result = plan(prompt)
    assert result.unmet and list(result.unmet) == violations(result.spec, result.layout)
    for expected in BROKEN_PROMPTS[prompt]:
        assert any(message.startswith(expected) for message in result.unmet), (expected, result.unmet)
    layout, notes = plan_layout(prompt)
    assert layout == result.layout and notes == [*result.notes, *(f"unmet: {m}" for m in result.unmet)]


def test_a_plan_that_meets_its_prompt_has_nothing_unmet():
    result = plan("two red circles to the left of a blue square")
    assert result.unmet == () and not any(n.startswith("unmet:") for n in plan_layout(result.prompt)[1])


class _OneCatPlanner:
    """A planner (as an LLM might answer) that places one cat where the prompt asks for two."""

    name = "one-cat"

    def plan(self, prompt: str, seed: int = 0) -> Layout:
        return Layout(prompt=prompt, objects=[LayoutObject(name="cat", phrase="a cat", box=(0.1, 0.3, 0.4, 0.7))])


@pytest.mark.parametrize("check", [True, False])
def test_a_missing_object_is_an_unmet_count_checked_or_not(check):
    result = plan("two cats", _OneCatPlanner(), check=check)
    assert any("expected 2 x 'a cat'" in message and "has 1" in message for message in result.unmet), result.unmet


def test_a_layout_from_elsewhere_and_a_fitted_plan_are_judged_on_their_own_boxes():
    hand_made = Layout(prompt="a huge cat", objects=[LayoutObject(name="cat", phrase="a huge cat", box=(0.4, 0.4, 0.5, 0.5))])
    assert [m.startswith("objects[0] 'a huge cat' should be huge") for m in plan_for_layout(hand_made).unmet] == [True]
    fitted = fit_to_model(plan("a tiny cat between two huge dogs"), object_sides=(0.1, 0.2))
    assert fitted.unmet and list(fitted.unmet) == violations(fitted.spec, fitted.layout)


def test_plan_cli_prints_each_unmet_requirement_on_stderr_and_only_json_on_stdout(capsys, tmp_path):
    assert main(["plan", "a tiny cat between two huge dogs"]) == 0
    out, err = capsys.readouterr()
    assert Layout.parse(out).prompt == "a tiny cat between two huge dogs" and "unmet" not in out
    assert "unmet: relation between: 'a tiny cat' between the 'a huge dog' instances does not hold\n" in err
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("two red circles to the left of a blue square\nfour huge bicycles at the top\n", encoding="utf-8")
    assert main(["plan", "--input", str(prompts), "--output", str(tmp_path / "out.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "line 1: unmet" not in err
    assert sum(line.startswith("line 2: unmet: objects[") for line in err.splitlines()) == 4, err


def test_report_json_keeps_what_the_plan_still_breaks(tmp_path):
    first = plan("a tiny cat between two huge dogs")
    attempt = Attempt(index=1, remedy="first", seed=0, planner_seed=0, methods=["none"], options={}, plan=first,
                      notes=["plan repaired: nothing"], error="scripted: no image")  # fmt: skip
    result = RunResult(prompt=first.prompt, attempts=[attempt], settings=AgentSettings())
    report = json.loads((result.save(tmp_path)["report"]).read_text(encoding="utf-8"))
    assert report["unmet"] == list(first.unmet) != []
    assert report["attempts"][0]["notes"] == ["plan repaired: nothing", *(f"plan unmet: {m}" for m in first.unmet)]


def test_fuzz_found_a_large_object_overhanging_its_region_keeps_a_box_on_the_canvas():
    # Found by the fuzz job (seed 3): the huge bicycle outgrows the top third; jitter and the next_to snap
    # pushed it "within" that third, i.e. off the canvas, and the persons stacked beside it were clipped to
    # zero height (a pydantic ValidationError from plan()).
    result = plan("a person left of a person left of a person next to a huge bicycle at the top", seed=3)
    assert [o.name for o in result.layout.objects] == ["person"] * 3 + ["bicycle"]
    for obj in result.layout.objects:
        assert 0.0 <= obj.box[0] < obj.box[2] <= 1.0 and 0.0 <= obj.box[1] < obj.box[3] <= 1.0
    assert list(result.unmet) == violations(result.spec, result.layout)


# Prompts built from the vocabulary and relation words: the kind of text the planner is meant to read.
_KINDS = st.sampled_from(COCO_CLASSES[:24] + ("circle", "square", "tree"))
_NOUNS = st.builds(
    lambda number, size, color, kind: f"{number} {size}{color}{kind}",
    st.sampled_from(["a", "one", "two", "three"]), st.sampled_from(["", "large ", "huge ", "small ", "tiny ", "tall "]),
    st.sampled_from(["", "red ", "blue "]), _KINDS,
)  # fmt: skip
_RELATIONS = st.sampled_from(["left of", "to the right of", "above", "below", "next to", "beside", "between", "and",
                              "bigger than", "smaller than", "on top of", "under"])  # fmt: skip
_PROMPTS = st.builds(
    lambda head, rest, region: " ".join([head, *(f"{relation} {noun}" for relation, noun in rest)]) + region,
    _NOUNS, st.lists(st.tuples(_RELATIONS, _NOUNS), max_size=3),
    st.sampled_from(["", " on the left", " at the top", " in a row"]),
)  # fmt: skip


@fuzz(150)
@given(prompt=_PROMPTS, seed=st.sampled_from([0, 3]))
def test_fuzz_vocabulary_prompts_plan_or_say_why_and_report_what_stays_broken(prompt, seed):
    try:
        result = plan(prompt, seed=seed)
    except LayoutError as err:
        assert str(err)
        return
    assert list(result.unmet) == violations(result.spec, result.layout), prompt
