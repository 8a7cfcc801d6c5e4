"""`scenewright bench` end to end on a tiny saved model: files, summary, resume, failures, the report in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from scenewright.agent.cli import main
from scenewright.eval.bench import SUMMARY_METRICS, run_bench, score_image, summarize
from scenewright.synth.recipe import parse_recipes
from scenewright.eval.suites import SUITE_NAMES, BenchItem, load_prompt_file, load_suite
from scenewright.layout.plan import plan_for_layout
from scenewright.layout.schema import Layout, LayoutObject

PROMPTS = ["a cat to the left of a dog", "two red apples"]
# The tiny UNet attends at 16x16 only; one refinement step keeps the guided run short.
TINY = ["--steps", "2", "--option", "car_res=[16,16]", "--option", "sar_res=[16,16]", "--option", "max_refinement_steps=1"]


@pytest.fixture(scope="module")
def run(model_dir, tmp_path_factory):
    """One bench run: 2 prompts x {none, car+sar} x 1 seed, scored by the shapes detector."""
    folder = tmp_path_factory.mktemp("bench")
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    out = folder / "run"
    argv = ["bench", "--prompts", str(prompts), "--model", str(model_dir), "--methods", "none,car+sar",
            "--seeds", "1", "--detector", "shapes", "--out", str(out), "--quiet", *TINY,
            "--option", "scale_factor=2000"]  # a strong step: the guided image differs far above float noise  # fmt: skip
    from scenewright.synth.pipeline import Synthesizer as Engine

    float_images, original = {}, Engine.generate

    def generate_and_keep_floats(self, layout, *a, **k):
        # The saved PNGs are uint8; the float images show a guided change that rounding could hide.
        methods = "+".join(k.get("methods") or ["none"])
        prompt = layout if isinstance(layout, str) else layout.prompt
        float_images[(methods, prompt)] = original(self, layout, *a, **{**k, "output_type": "np"}).images[0]
        return original(self, layout, *a, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "generate", generate_and_keep_floats)
        assert main(argv) == 0
    return {"out": out, "argv": argv, "float_images": float_images}


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*/*.json"))]


class CountingGenerate:
    """Wraps Synthesizer.generate, counting calls and raising for prompts that contain ``fail_on``."""

    def __init__(self, original, fail_on: str | None = None):
        self.original, self.fail_on, self.calls = original, fail_on, 0

    def __call__(self, synthesizer, layout_or_prompt, **kwargs):
        self.calls += 1
        prompt = layout_or_prompt if isinstance(layout_or_prompt, str) else layout_or_prompt.prompt
        if self.fail_on and self.fail_on in prompt:
            raise RuntimeError("injected failure")
        return self.original(synthesizer, layout_or_prompt, **kwargs)


def test_run_writes_images_records_layouts_and_summary(run):
    out = run["out"]
    records = _records(out)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert {(r["method"], r["prompt"]) for r in records} == {(m, p) for m in ("none", "car+sar") for p in PROMPTS}
    for r in records:
        with Image.open(out / r["image"]) as image:
            assert image.size == (64, 64)
        assert r["layout"]["objects"] and r["layout_source"] == "planner:offline"
        assert set(SUMMARY_METRICS) <= set(r["scores"]) and isinstance(r["detections"], list)
    # plain SD and the guided combination really produced different images
    none, guided = (run["float_images"][(m, PROMPTS[0])] for m in ("none", "car+sar"))
    assert np.abs(none - guided).max() > 5e-3  # ~3e-2 at scale_factor 2000; float noise ~1e-6
    assert sorted(p.name for p in (out / "layouts").iterdir()) == ["prompts-00000.json", "prompts-00001.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["none", "car+sar"]
    for entry in summary.values():
        assert set(entry) == {"n", *SUMMARY_METRICS} and entry["n"] == 2
        # the shapes detector judges counts and background on any image; a cat is never a shape
        assert entry["count_acc"] == 0.0 and 0.0 <= entry["background_clean"] <= 1.0


def test_rerun_skips_finished_images_without_generating(run, monkeypatch, capsys):
    from scenewright.synth.pipeline import Synthesizer

    counter = CountingGenerate(Synthesizer.generate)
    monkeypatch.setattr(Synthesizer, "generate", lambda self, *a, **k: counter(self, *a, **k))
    before = (run["out"] / "summary.json").read_text()
    capsys.readouterr()
    assert main(run["argv"]) == 0
    assert counter.calls == 0
    assert "0 generated, 4 already done, 0 failed" in capsys.readouterr().out
    assert (run["out"] / "summary.json").read_text() == before


def test_failing_item_is_recorded_and_the_rest_finish(model_dir, tmp_path, monkeypatch):
    from scenewright.synth import Synthesizer
    from scenewright.synth.pipeline import Synthesizer as Engine

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\nBOOM a blue square\na green star\n", encoding="utf-8")
    items = load_prompt_file(prompts)
    synthesizer = Synthesizer.from_pretrained(str(model_dir))
    counter = CountingGenerate(Engine.generate, fail_on="BOOM")
    monkeypatch.setattr(Engine, "generate", lambda self, *a, **k: counter(self, *a, **k))
    specs = parse_recipes("none")
    options = {"num_inference_steps": 1}
    counts = run_bench(items, synthesizer, specs, out=tmp_path / "run", generate_options=options, progress=False, report=False)
    assert counts == {"done": 2, "skipped": 0, "failed": 1} and counter.calls == 3
    by_key = {r["key"]: r for r in _records(tmp_path / "run")}
    assert by_key["prompts-00001"]["status"] == "error" and "injected failure" in by_key["prompts-00001"]["error"]
    assert by_key["prompts-00000"]["status"] == by_key["prompts-00002"]["status"] == "ok"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["none"]["n"] == 2
    # Resuming retries only the failed unit.
    counter.fail_on = None
    counts = run_bench(items, synthesizer, specs, out=tmp_path / "run", generate_options=options, progress=False, report=False)
    assert counts == {"done": 1, "skipped": 2, "failed": 0} and counter.calls == 4


def test_shapes_scores_a_true_image_as_right_and_a_color_flood_as_dirty():
    from scenewright.eval.detect import get_detector
    from scenewright.synth.shapes.world import PALETTE

    from scenewright.synth.shapes.world import sample_scene
    from scenewright.eval.suites import SHAPES_SEED

    item = load_suite("shapes", limit=1)[0]
    scene = sample_scene(np.random.default_rng(SHAPES_SEED))
    assert scene.caption.text == item.prompt  # the suite is the world's grammar at the fixed seed
    scene_image = Image.fromarray(scene.render())
    planned = plan_for_layout(item.layout)
    detections, scores, _ = score_image(item, scene_image, planned, get_detector("shapes"))
    assert len(detections) == len(item.layout.objects)
    assert scores["count_acc"] == 1.0 and scores["box_iou50"] == 1.0 and scores["background_clean"] == 1.0
    flooded = scene.render()
    flooded[:, :16] = PALETTE["red"]  # a band of color that is no shape
    _, dirty, _ = score_image(item, Image.fromarray(flooded), planned, get_detector("shapes"))
    assert dirty["background_clean"] < 0.9


def test_every_suite_loads_prompts_with_categories():
    for name in SUITE_NAMES:
        items = load_suite(name, limit=3)
        assert len(items) == 3 and all(i.prompt and i.category for i in items), name
    hrs = load_suite("hrs-spatial", limit=2)
    assert hrs[0].layout is not None and hrs[0].layout.names == ["horse", "car"]  # Attention Refocusing's GPT-4 boxes
    assert load_suite("hrs-counting", limit=1)[0].info["expected"] == {"cup": 2}


def test_summary_is_null_where_no_image_could_judge():
    ok = {"status": "ok", "method": "a", "scores": {"count_acc": 1.0, "spatial_acc": None, "box_iou50": 0.5, "background_clean": None}}
    failed = {"status": "error", "method": "a", "error": "x"}
    summary = summarize([ok, dict(ok, scores={**ok["scores"], "count_acc": 0.0}), failed], ["a", "b"])
    assert summary["a"] == {"n": 2, "count_acc": 0.5, "spatial_acc": None, "box_iou50": 0.5, "background_clean": None}
    assert summary["b"] == {"n": 0, **{m: None for m in SUMMARY_METRICS}}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--methods", "car+teleport"], "unknown method(s) teleport"),
        (["--methods", "none+car"], "cannot be combined"),
        (["--option", "warp=1"], "--option warp: no method of --methods takes it"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--detector", None], "--detector is required"),
        (["--prompts", "/nonexistent/p.txt"], "cannot read it"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(model_dir, tmp_path, capsys, extra, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    argv = ["bench", "--prompts", str(prompts), "--model", str(model_dir), "--out", str(tmp_path / "o"), "--detector", "shapes"]
    if extra[-1] is None:  # drop a flag
        argv = argv[: argv.index(extra[0])] + argv[argv.index(extra[0]) + 2 :]
    elif extra[0] == "--prompts":
        argv[argv.index("--prompts") + 1] = extra[1]
    else:
        argv += extra
    assert main([*argv, "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "o").exists()


def test_embedded_shapes_model_missing_gives_the_export_instruction(tmp_path, capsys, monkeypatch):
    from scenewright.synth import loading

    monkeypatch.setitem(loading.EMBEDDED_MODELS, "shapes", tmp_path / "not-built")  # a build without it
    assert main(["bench", "--suite", "shapes", "--model", "shapes", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "embedded 'shapes' model is not in this build" in err and "--export" in err


@fuzz(60)
@given(st.text(max_size=40))
def test_methods_flag_fuzz_parses_or_says_why(text):
    try:
        specs = parse_recipes(text)
    except ValueError as err:
        assert "method" in str(err)
    else:
        for s in specs:
            variations = s.name.split("+")[: int(s.compose) + int(s.spatial_temporal is not None)]
            shown = [] if variations and s.methods == ("none",) else list(s.methods)
            assert s.methods and "+".join(variations + shown) == s.name
            assert s.spatial_temporal is None or 0 <= s.spatial_temporal < float("inf")


def test_compose_joins_a_combination_as_a_loop_variation():
    specs = parse_recipes("none,compose,compose+car+sar")
    assert [(s.name, s.methods, s.compose, s.guided) for s in specs] == [
        ("none", ("none",), False, False), ("compose", ("none",), True, True),
        ("compose+car+sar", ("car", "sar"), True, True)]  # fmt: skip


def test_spatial_temporal_joins_a_combination_with_its_weight_and_reaches_generate(model_dir, tmp_path, monkeypatch):
    from scenewright.synth import Synthesizer
    from scenewright.synth.pipeline import Synthesizer as Engine

    specs = parse_recipes("compose+spatial_temporal,spatial_temporal:3+car")
    assert [(s.name, s.methods, s.compose, s.spatial_temporal) for s in specs] == [
        ("compose+spatial_temporal", ("none",), True, 1.0), ("spatial_temporal:3+car", ("car",), False, 3.0)]  # fmt: skip
    for bad, says in (("spatial_temporal:x", "local weight must be a number >= 0"), ("spatial_temporal+spatial_temporal:2", "twice")):
        with pytest.raises(ValueError, match=says):
            parse_recipes(bad)
    seen, float_images = [], []
    original = Engine.generate

    def generate_and_keep_floats(self, *a, **k):
        # The bench saves uint8 PNGs; compare the float images, which do not round away a small change.
        seen.append(k.get("spatial_temporal"))
        float_images.append(original(self, *a, **{**k, "output_type": "np"}).images[0])
        return original(self, *a, **k)

    monkeypatch.setattr(Engine, "generate", generate_and_keep_floats)
    # The object's phrase must differ from the prompt: a phrase equal to the prompt blends the prompt's
    # own attention output into its box, which moves the image only by float noise (~1e-6).
    layout = Layout(prompt="a red circle", objects=[LayoutObject(name="square", phrase="a large blue square",
                                                                 box=(0.1, 0.1, 0.9, 0.9))])  # fmt: skip
    items = [BenchItem(suite="prompts", index=0, prompt="a red circle", category="", layout=layout, layout_source="test")]
    counts = run_bench(items, Synthesizer.from_pretrained(str(model_dir)), parse_recipes("none,spatial_temporal:3"),
                       out=tmp_path / "run", generate_options={"num_inference_steps": 4}, progress=False, report=False)  # fmt: skip
    assert counts["done"] == 2 and seen[0] is None and seen[1].local_weight == 3.0
    records = {r["method"]: r for r in _records(tmp_path / "run")}
    assert records["spatial_temporal:3"]["guided"] is True
    # The phrase blended into its box (64% of the image) at weight 3 moves the tiny model's image by ~7e-3;
    # float noise between CPUs is ~1e-6 (a phrase equal to the prompt moves it by 7e-7), so 1e-3 is a margin.
    assert np.abs(float_images[0] - float_images[1]).max() > 1e-3


@fuzz(40)
@given(st.text(max_size=200))
def test_prompt_file_fuzz_reads_lines_or_says_why(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "p.txt"
    path.write_bytes(text.encode("utf-8", "replace"))  # lone surrogates become '?'; any other text as written
    try:
        items = load_prompt_file(path)
    except ValueError as err:
        assert "--prompts" in str(err)
    else:
        assert all(isinstance(i, BenchItem) and i.prompt == i.prompt.strip() and i.prompt for i in items)


# ----------------------------------------------------------------------------- the report in a browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the report test: {CHROMIUM} / {CHROMEDRIVER} missing (.ci/run installs them)")
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), profile


@pytest.fixture()
def served(run, tmp_path):
    """The run folder (plus a copy of the report with one broken image) on a 127.0.0.1 http.server."""
    html = (run["out"] / "report.html").read_text(encoding="utf-8")
    (run["out"] / "broken.html").write_text(html.replace("</body>", '<img id="broken" src="images/missing.png"></body>'))
    handler = partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(run["out"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


_IMAGES_JS = "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"


def test_report_in_headless_chromium_shows_tables_and_every_image_loads(served):
    from selenium.webdriver.common.by import By

    driver, profile = _browser()
    try:
        driver.get(f"{served}/report.html")
        tables = driver.find_elements(By.CSS_SELECTOR, "table.scores")
        assert len(tables) == 2  # per suite, per category
        suite_text = tables[0].text
        assert "count acc" in suite_text and "background clean" in suite_text
        assert "none" in suite_text and "car+sar" in suite_text
        images = driver.execute_script(_IMAGES_JS)
        srcs = [src for src, _, _ in images]
        assert sum(s.startswith("annotated/") for s in srcs) == 4 and "plots/metrics.png" in srcs
        assert all(complete and width > 0 for _, complete, width in images), images
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        # The same checks catch a broken image: they can fail.
        driver.get(f"{served}/broken.html")
        broken = {src: width for src, _, width in driver.execute_script(_IMAGES_JS)}
        assert broken["images/missing.png"] == 0
        assert any("missing.png" in e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _det(name, box, score=0.95):
    from scenewright.eval.detection import Detection

    return Detection(name=name, box=box, score=score)


TOP, BOTTOM = (0.3, 0.05, 0.7, 0.4), (0.3, 0.6, 0.7, 0.95)
LEFT, RIGHT = (0.05, 0.3, 0.4, 0.7), (0.6, 0.3, 0.95, 0.7)


@pytest.mark.parametrize(
    "suite, index, right, wrong, key, scores",
    [
        # "a horse below a car."
        ("hrs-spatial", 0, [_det("horse", BOTTOM), _det("car", TOP)], [_det("horse", TOP), _det("car", BOTTOM)], "hrs_spatial", (1.0, 0.0)),
        # "two cups filled with steaming hot coffee ...": TP = min(gt, pred)
        ("hrs-counting", 0, [_det("cup", LEFT), _det("cup", RIGHT)], [_det("cup", LEFT)], "hrs_fn", (0, 1)),
        # "a photo of two backpacks": exactly two at high confidence
        ("geneval", 180, [_det("backpack", LEFT), _det("backpack", RIGHT)], [_det("backpack", LEFT), _det("backpack", RIGHT), _det("backpack", TOP)], "geneval", (1.0, 0.0)),
        # "A realistic photo of a scene with two backpacks"
        ("lmd", 120, [_det("backpack", LEFT), _det("backpack", RIGHT)], [_det("backpack", LEFT)], "lmd", (1.0, 0.0)),
        # "a couch on the right of a chicken": 0.25 x 0.95 per found object + position / 2; < 0.5 -> 0
        ("t2i-spatial", 60, [_det("couch", RIGHT), _det("chicken", LEFT)], [_det("couch", LEFT), _det("chicken", RIGHT)], "t2i_spatial", (0.975, 0.0)),
    ],
)
def test_each_suite_is_also_scored_by_its_own_benchmark_rule(suite, index, right, wrong, key, scores):
    from scenewright.layout.plan import plan_layout

    item = load_suite(suite, limit=index + 1)[index]
    layout = item.layout or plan_layout(item.prompt, "offline")[0]
    image = Image.new("RGB", (512, 512), "white")
    got = [score_image(item, image, plan_for_layout(layout), lambda _image, _names, d=d: d)[1][key] for d in (right, wrong)]
    assert got[0] == pytest.approx(scores[0]) and got[1] == pytest.approx(scores[1])


def test_resuming_with_another_planner_is_refused_not_mixed(tmp_path):
    from scenewright.eval.bench import LayoutSource
    from scenewright.layout.schema import Layout

    class OtherPlanner:
        name = "llm"

        def plan(self, prompt, *, seed=0):
            return Layout.parse({"prompt": prompt, "objects": [{"name": "cat", "phrase": "a cat", "box": [0, 0, 1, 1]}]})

    item = load_prompt_file_from_text(tmp_path, "a cat to the left of a dog")[0]
    layout, source = LayoutSource(tmp_path)(item)
    assert source == "planner:offline" and layout.names == ["cat", "dog"]
    assert LayoutSource(tmp_path)(item)[0] == layout  # resumed from disk
    with pytest.raises(ValueError, match="made by planner:offline, this run asks for planner:llm; use a new --out"):
        LayoutSource(tmp_path, OtherPlanner())(item)
    shapes = load_suite("shapes", limit=1)[0]
    assert LayoutSource(tmp_path, OtherPlanner())(shapes) == (shapes.layout, "world")  # shipped layouts win by default


def test_planned_layouts_are_fitted_to_the_models_object_sizes_and_shipped_ones_are_not(tmp_path):
    from scenewright.eval.bench import LayoutSource

    item = load_prompt_file_from_text(tmp_path, "a purple star")[0]
    planned, _ = LayoutSource(tmp_path / "plain")(item)
    fitted, source = LayoutSource(tmp_path / "fit", object_sides=(0.2, 0.4), object_gap=0.05)(item)
    assert source == "planner:offline, fitted to object sides 0.2-0.4, gap 0.05"
    assert max(planned.objects[0].width, planned.objects[0].height) > 0.5
    assert max(fitted.objects[0].width, fitted.objects[0].height) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="use a new --out"):  # the unfitted cache is not mixed in
        LayoutSource(tmp_path / "plain", object_sides=(0.2, 0.4))(item)
    shapes = load_suite("shapes", limit=1)[0]
    assert LayoutSource(tmp_path / "fit", object_sides=(0.01, 0.02))(shapes) == (shapes.layout, "world")


def load_prompt_file_from_text(folder, text):
    path = folder / "prompts.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return load_prompt_file(path)


def test_guided_combination_without_boxes_draws_the_layout_unguided_with_its_negative(model_dir, tmp_path, monkeypatch):
    from scenewright.eval.bench import LayoutSource, run_unit
    from scenewright.synth import Synthesizer
    from scenewright.synth.pipeline import Synthesizer as Engine

    item = load_suite("lmd", limit=1)[0]  # "... without backpacks": GPT-4 planned no box, negative "backpacks"
    assert item.layout is not None and not item.layout.objects and item.layout.negative == "backpacks"
    calls = []
    original = Engine.generate
    monkeypatch.setattr(Engine, "generate", lambda self, target, **k: calls.append((target, k["methods"])) or original(self, target, **k))
    spec = parse_recipes("car+sar")[0]
    record = run_unit(Synthesizer.from_pretrained(str(model_dir)), item, spec, 0, out=tmp_path, layouts=LayoutSource(tmp_path),
                      detector=None, generate_options={"num_inference_steps": 1}, method_options={"car_res": [16, 16]})  # fmt: skip
    assert record["status"] == "ok" and record["guided"] is False
    assert calls == [(item.layout, ["none"])]  # the layout (so its negative prompt) drawn by plain SD


def test_compose_runs_through_the_bench_with_a_detector_as_segmenter(model_dir, tmp_path, monkeypatch):
    from scenewright.synth.composition import CompositionOptions
    from scenewright.synth.pipeline import Synthesizer

    seen = []
    original = Synthesizer.generate

    def spy(self, layout_or_prompt, **kwargs):
        if kwargs.get("composition") is not None:
            seen.append(kwargs["composition"])
        return original(self, layout_or_prompt, **kwargs)

    monkeypatch.setattr(Synthesizer, "generate", spy)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle to the left of a blue square\n", encoding="utf-8")
    out = tmp_path / "run"
    argv = ["bench", "--prompts", str(prompts), "--model", str(model_dir), "--methods", "none,compose", "--detector",
            "shapes", "--compose-segmenter", "shapes", "--out", str(out), "--quiet", "--steps", "2"]  # fmt: skip
    assert main(argv) == 0
    records = {r["method"]: r for r in _records(out)}
    assert records["compose"]["status"] == "ok" and records["compose"]["guided"]
    assert records["none"]["status"] == "ok"
    assert len(seen) == 1 and isinstance(seen[0], CompositionOptions) and seen[0].segmenter is not None


# ----------------------------------------------------------------------------- durable files
def test_durable_write_fsyncs_the_file_then_renames_then_fsyncs_the_folder(tmp_path, monkeypatch):
    import stat

    from scenewright import durable

    calls, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", lambda src, dst: calls.append("replace") or real_replace(src, dst))
    path = durable.write_text_atomic(tmp_path / "a" / "r.json", "new\n")
    assert path.read_text() == "new\n" and list(path.parent.iterdir()) == [path]
    assert calls == ["fsync file", "replace"] + (["fsync folder"] if os.name == "posix" else [])
    # A write that fails before the rename keeps the old file and leaves no temp file behind.
    monkeypatch.setattr(durable.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError, match="No space left"):
        durable.write_text_atomic(path, "newer\n")
    assert path.read_text() == "new\n" and list(path.parent.iterdir()) == [path]


DAMAGED = {
    "truncated": '{"prompt": "a purple star", "source": "planner:off',
    "not an object": "[1, 2]\n",
    "no source": '{"prompt": "a purple star", "layout": {}}\n',
    "invalid layout": '{"prompt": "a purple star", "source": "planner:offline", "layout": {"objects": 3}}\n',
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_damaged_layout_file_is_remade_with_a_warning_naming_it(tmp_path, caplog, damage):
    from scenewright.eval.bench import LayoutSource

    item = load_prompt_file_from_text(tmp_path, "a purple star")[0]
    layout, _ = LayoutSource(tmp_path)(item)
    path = tmp_path / "layouts" / f"{item.key}.json"
    good = path.read_text()
    path.write_text(DAMAGED[damage])
    with caplog.at_level("WARNING"):
        assert LayoutSource(tmp_path)(item) == (layout, "planner:offline")  # before: a JSONDecodeError on every run
    assert str(path) in caplog.text and "planned and written again" in caplog.text
    assert path.read_text() == good  # healed: the next run reads it without a warning
    caplog.clear()
    with caplog.at_level("WARNING"):
        LayoutSource(tmp_path)(item)
    assert caplog.text == ""


def test_damaged_record_reruns_its_unit_and_stale_temp_files_are_removed(model_dir, tmp_path, caplog, monkeypatch):
    from scenewright.synth import Synthesizer
    from scenewright.synth.pipeline import Synthesizer as Engine

    items = load_prompt_file_from_text(tmp_path, "a red circle\na blue square")
    synthesizer = Synthesizer.from_pretrained(str(model_dir))
    counter = CountingGenerate(Engine.generate)
    monkeypatch.setattr(Engine, "generate", lambda self, *a, **k: counter(self, *a, **k))
    bench = partial(run_bench, items, synthesizer, parse_recipes("none"), out=tmp_path / "run",
                    generate_options={"num_inference_steps": 1}, progress=False, report=False)  # fmt: skip
    assert bench() == {"done": 2, "skipped": 0, "failed": 0}
    records = tmp_path / "run" / "records" / "none"
    damaged = records / "prompts-00001-s0.json"
    damaged.write_text(damaged.read_text()[:40])  # a record torn by a crash of a filesystem without fsync
    # Temp files: one left by a killed run (an hour old), one younger than this run (another writer's, in flight).
    stale, in_flight = records / ".prompts-00000-s0.json.k1ll3d.tmp", tmp_path / "run" / ".report.html.n0w.tmp"
    stale.write_text("{")
    os.utime(stale, (time.time() - 3600,) * 2)
    in_flight.write_text("<")
    os.utime(in_flight, (time.time() + 60,) * 2)
    with caplog.at_level("WARNING"):
        assert bench() == {"done": 1, "skipped": 1, "failed": 0}
    assert counter.calls == 3 and str(damaged) in caplog.text
    assert json.loads(damaged.read_text())["status"] == "ok"  # re-made
    assert not stale.exists() and in_flight.exists() and "1 stale temporary file" in caplog.text


def test_model_shapes_implies_the_shapes_detector(tmp_path):
    from scenewright.agent.cli import build_parser
    from scenewright.eval.cli import _bench_setup

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    argv = ["bench", "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    assert _bench_setup(build_parser().parse_args([*argv, "--model", "shapes"]))[3] == "shapes"
    assert _bench_setup(build_parser().parse_args([*argv, "--model", "shapes", "--detector", "none"]))[3] == "none"
    with pytest.raises(ValueError, match="--detector is required outside the shapes suite and model"):
        _bench_setup(build_parser().parse_args([*argv, "--model", "some/sd-model"]))
