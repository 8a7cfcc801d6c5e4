"""The web editor's box state <-> Layout conversion, its messages, generation and the `serve` command's checks."""

from __future__ import annotations

import json
import math

import pytest
from fuzzing import fuzz
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from scenewright.agent.cli import main
from scenewright.agent.web import EditorError, generate_for_layout, layout_to_state, plan_for_editor, state_to_layout
from scenewright.layout.plan import plan_for_layout, plan_layout
from scenewright.layout.schema import Layout

TINY_OPTIONS = dict(car_res=[16, 16], sar_res=[16, 16], max_refinement_steps=1)


def _state(*boxes: dict) -> str:
    return json.dumps({"boxes": list(boxes)})


def _box(phrase="a cat", x=0.1, y=0.2, w=0.3, h=0.4, **extra) -> dict:
    return {"phrase": phrase, "x": x, "y": y, "w": w, "h": h, **extra}


def test_planned_layout_round_trips_through_the_box_state():
    layout, _ = plan_layout("two cats to the left of a dog on a sofa")
    state = json.loads(json.dumps(layout_to_state(layout)))  # what the page holds and sends back
    back = state_to_layout(state, layout.prompt, layout.background, layout.negative)
    assert back.names == layout.names and back.phrases == layout.phrases
    for got, want in zip(back.boxes, layout.boxes):
        assert got == pytest.approx(want, abs=1e-12)


def test_a_moved_box_is_where_the_state_says():
    layout = state_to_layout(_state(_box(x=0.5, y=0.25, w=0.25, h=0.5)), "a cat on the grass")
    assert layout.objects[0].box == pytest.approx((0.5, 0.25, 0.75, 0.75))
    assert layout.names == ["cat"]


def test_relabelled_box_gets_its_kind_from_the_phrase_and_plurals_count():
    layout = state_to_layout(_state(_box("a black cat"), _box("a dog", x=0.5, w=0.4)), "two cats and a dog")
    assert layout.names == ["cat", "dog"] and layout.phrases == ["a black cat", "a dog"]


@pytest.mark.parametrize(
    ("prompt", "state", "needle"),
    [
        ("   ", _state(_box()), "the text is empty"),
        ("a cat", "{not json", "not JSON"),
        ("a cat", "", "no boxes yet"),
        ("a cat", json.dumps([1, 2]), '{"boxes": [...]}'),
        ("a cat", _state(), "no boxes"),
        ("a cat", _state(_box(w=0.0)), "box 1 'a cat' has zero area"),
        ("a cat and a dog", _state(_box(), _box("a dog", h=-0.1)), "box 2 'a dog' has zero area"),
        ("a cat", _state(_box(x=0.9, w=0.3)), "leaves the canvas"),
        ("a cat", _state(_box(x="left")), "`x` must be a number"),
        ("a cat", _state(_box(y=None)), "`y` must be a number"),
        ("a cat", _state(_box(phrase="  ")), "the label is empty"),
        ("a cat", _state(_box("a giraffe")), "its label 'giraffe' is not in the text"),
        ("a cat", _state(_box(name="dog")), "its label 'dog' is not in the text"),
        ("a cat", _state("cat"), "expected an object"),
    ],
)
def test_bad_box_state_gives_a_message_that_names_the_fix(prompt, state, needle):
    with pytest.raises(EditorError) as info:
        state_to_layout(state, prompt)
    assert needle in str(info.value)


def test_non_finite_coordinate_is_refused():
    with pytest.raises(EditorError, match="`w` is nan"):
        state_to_layout({"boxes": [_box(w=math.nan)]}, "a cat")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_coordinate = st.floats(-0.5, 1.5) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2, 2) | _json
_fuzz_box = st.fixed_dictionaries(
    {"x": _coordinate, "y": _coordinate, "w": _coordinate, "h": _coordinate},
    optional={"phrase": st.sampled_from(["a cat", "a dog", "", "a giraffe", "two cats"]) | st.text(max_size=10),
              "name": st.sampled_from(["cat", "dog", ""]) | _json},  # fmt: skip
)
_states = (
    st.fixed_dictionaries({"boxes": st.lists(_fuzz_box | _json, max_size=4)})
    | _json
    | st.text(max_size=40)
)


@fuzz(300, suppress_health_check=[HealthCheck.too_slow])
@given(state=_states, prompt=st.sampled_from(["a cat and a dog", "two cats", "", "a dog on a sofa"]) | st.text(max_size=20))
def test_any_state_from_the_browser_is_a_valid_layout_or_a_clear_message(state, prompt):
    payload = state if isinstance(state, str) else json.dumps(state)  # the page sends text
    try:
        layout = state_to_layout(payload, prompt)
    except EditorError as err:
        assert str(err) and "Traceback" not in str(err)
        return
    assert isinstance(layout, Layout) and layout.objects
    for obj in layout.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert Layout.parse(layout.to_json()) == layout  # what the page downloads loads back


def test_plan_for_editor_says_what_it_planned_or_how_to_go_on():
    layout, message = plan_for_editor("two cats to the left of a dog", "offline")
    assert layout.names == ["cat", "cat", "dog"] and message.startswith("Planned 3 box(es)")
    empty, message = plan_for_editor("a beautiful sunset", "offline")  # scenery, no objects
    assert not empty.objects and "found no objects" in message and "Add box" in message
    with pytest.raises(EditorError, match="the text is empty"):
        plan_for_editor(" \n ", "offline")


@fuzz(60)
@given(text=st.text(max_size=60) | st.lists(st.sampled_from(["two", "cats", "left of", "a", "dog", "on", "and", "3", "without"]),
                                             max_size=10).map(" ".join))  # fmt: skip
def test_any_typed_text_plans_into_box_state_or_a_clear_message(text):
    try:
        layout, message = plan_for_editor(text, "offline")
    except ValueError as err:  # EditorError or the checker's LayoutError
        assert str(err)
        return
    assert message
    state = json.loads(json.dumps(layout_to_state(layout)))
    if layout.objects:  # what the page then sends back is the same layout
        assert state_to_layout(state, layout.prompt, layout.background, layout.negative).names == layout.names


def test_scores_judge_the_prompts_relation_on_the_detected_boxes():
    from scenewright.eval.detection import Detection
    from scenewright.eval.verify import verify

    prompt = "a red circle to the left of a blue square"
    plan = plan_for_layout(state_to_layout(_state(_box("a red circle", 0.05, 0.3, 0.3, 0.3), _box("a blue square", 0.6, 0.3, 0.3, 0.3)), prompt))
    circle, square = (0.05, 0.3, 0.35, 0.6), (0.6, 0.3, 0.9, 0.6)
    right = [Detection("circle", circle, 0.9, color="red"), Detection("square", square, 0.9, color="blue")]
    swapped = [Detection("circle", square, 0.9, color="red"), Detection("square", (-0.01, 0.3, 0.35, 1.02), 0.9, color="blue")]
    assert verify(plan, right).scores == {"count_acc": 1.0, "spatial_acc": 1.0, "box_iou50": 1.0,
                                           "mean_iou": pytest.approx(1.0)}  # fmt: skip
    wrong = verify(plan, swapped).scores
    assert wrong["count_acc"] == 1.0 and wrong["spatial_acc"] == 0.0 and wrong["box_iou50"] == 0.0
    assert verify(plan, right[:1]).scores["count_acc"] == 0.0


@pytest.fixture(scope="module")
def synthesizer():
    from scenewright.synth import Synthesizer
    from scenewright.synth.testing import get_dummy_pipe

    return Synthesizer.from_pipe(get_dummy_pipe(seed=0))


def test_generate_for_layout_returns_image_overlay_and_scores(synthesizer):
    from scenewright.eval.detection import Detection

    layout = state_to_layout(_state(_box("a red circle", 0.1, 0.1, 0.4, 0.4)), "a red circle")
    seen = {}

    def detector(image, names):  # a detector that finds exactly the planned circle
        seen["size"], seen["names"] = image.size, list(names)
        return [Detection(name="circle", box=(0.12, 0.1, 0.52, 0.5), score=0.9, color="red")]

    image, overlay, scores = generate_for_layout(layout, synthesizer, seed=1, steps=2, detector=detector, **TINY_OPTIONS)
    assert seen == {"size": (64, 64), "names": ["circle"]} and image.size == (64, 64)
    assert overlay.size == (512, 512)
    left_edges = {overlay.getpixel((x, 150)) for x in range(48, 68)}
    assert {(20, 170, 60), (230, 30, 30)} <= left_edges  # the planned box's edge in green, the detection's in red
    assert scores["count_acc"] == 1.0 and scores["box_iou50"] == 1.0 and scores["spatial_acc"] is None  # no relation
    assert scores["mean_iou"] == pytest.approx(0.38 / 0.42)
    assert scores["detections"] == [{"name": "circle", "box": [0.12, 0.1, 0.52, 0.5], "score": 0.9}]
    _, _, missed = generate_for_layout(layout, synthesizer, methods=(), seed=1, steps=2, detector=lambda i, n: [])
    assert missed["count_acc"] == 0.0 and missed["mean_iou"] == 0.0


def test_generate_uses_the_run_loops_attempts_and_remedies_and_shows_a_readable_verdict(synthesizer):
    from scenewright.agent.web import shown_on_canvas, verdict_markdown

    layout = state_to_layout(_state(_box("a red circle", 0.1, 0.1, 0.4, 0.4)), "a red circle")
    drawn = []

    def detector(image, names):  # finds nothing: every attempt fails, so the loop's remedies run
        drawn.append(image)
        return []

    image, _, scores = generate_for_layout(layout, synthesizer, methods=(), seed=1, steps=1, detector=detector, attempts=2)
    assert scores["attempts"] == 2 and scores["passed"] is False and len(drawn) == 2
    assert image is drawn[0]  # ties go to the first attempt
    keys = [r["key"] for r in scores["requirements"]]
    assert keys == ["count:circle", "color:circle:red", "box:0", "mean_iou"]
    page = verdict_markdown(scores)
    assert page.startswith("**Not passed** (best of 2 attempt(s))")
    assert "- ✘ expected 1 x 'a red circle' (circle), the image has 0 — 0.00" in page
    assert page.endswith("count_acc 0.00, spatial_acc n/a, box_iou50 0.00, mean_iou 0.00")
    shown = shown_on_canvas(image)
    assert shown.size == (512, 512)
    assert shown.getpixel((0, 0)) == shown.getpixel((7, 7)) == image.getpixel((0, 0))  # nearest: 8x8 blocks of one pixel


def test_generate_for_layout_is_the_synthesizers_image(synthesizer):
    import numpy as np

    layout = state_to_layout(_state(_box(), _box("a dog", x=0.55)), "a cat and a dog")
    image, _, _ = generate_for_layout(layout, synthesizer, methods=(), seed=3, steps=2)  # no methods: plain SD
    expected = synthesizer.generate(layout, methods=["none"], num_inference_steps=2, seed=3)
    assert np.array_equal(np.asarray(image), np.asarray(expected.images[0]))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--port", "0"], "--port must lie in 1..65535"),
        (["serve", "--detector", "yolo"], "unknown detector 'yolo'"),
        (["serve", "--planner-model", "x"], "--planner-model is only used"),
        (["serve", "--option", "nonsense"], "is not KEY=VALUE"),
    ],
)
def test_serve_refuses_bad_flags_before_starting(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_downloaded_layout_files_share_one_folder_that_is_removed_at_exit(monkeypatch):
    import atexit
    from pathlib import Path

    import scenewright.agent.web
    at_exit = []
    monkeypatch.setattr(scenewright.agent.web, "_DOWNLOADS", [])  # a fresh process's state
    monkeypatch.setattr(atexit, "register", lambda func, *args, **kwargs: at_exit.append((func, args, kwargs)))
    layout = Layout.parse(
        {"prompt": "a red circle", "objects": [{"name": "circle", "phrase": "a red circle", "box": [0.1, 0.1, 0.5, 0.5]}]}
    )
    first, second = Path(scenewright.agent.web._write_layout_file(layout)), Path(scenewright.agent.web._write_layout_file(layout))
    assert first != second and first.name == second.name == "layout.json"
    assert first.parent.parent == second.parent.parent == scenewright.agent.web._DOWNLOADS[0]
    assert Layout.load(first).to_dict() == layout.to_dict()
    assert len(at_exit) == 1  # one clean-up for the process, not one per file
    func, args, kwargs = at_exit[0]
    func(*args, **kwargs)  # what the interpreter does on exit
    assert not scenewright.agent.web._DOWNLOADS[0].exists()


def test_generate_on_the_page_parses_its_text_once_and_verifies_against_that_spec(synthesizer, monkeypatch):
    from scenewright.agent import web
    from scenewright.eval.detection import Detection
    from scenewright.layout import plan as plan_module

    parsed = []
    real_parse = web.parse_prompt
    for module in (web, plan_module):
        monkeypatch.setattr(module, "parse_prompt", lambda text: parsed.append(text) or real_parse(text))
    found = [Detection(name="circle", box=(0.1, 0.1, 0.5, 0.5), score=0.9, color="red")]
    app = web.build_app(synthesizer=synthesizer, detector=lambda image, names: found,
                        method_options={"max_refinement_steps": 1})  # fmt: skip
    on_generate = next(f.fn for f in app.fns.values() if f.fn.__name__ == "on_generate")
    outputs = on_generate("a red circle", _state(_box("a red circle", 0.1, 0.1, 0.4, 0.4)), [], 1, 1, 1)
    assert parsed == ["a red circle"]
    assert outputs[0] is not None and "✔ expected 1 x 'a red circle' (circle), the image has 1" in outputs[2]
