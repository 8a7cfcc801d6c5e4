"""`scenewright serve`: a local web layout editor (Gradio) from text to a grounded image.

Type text -> the planner's checked layout appears as draggable, resizable boxes -> edit, add, remove,
relabel -> generate -> the image, an overlay of planned and detected boxes, the scores, and the
layout JSON to download.

    scenewright serve                                  # http://127.0.0.1:7860, embedded shapes model
    scenewright serve --model ./sd15 --port 8000 --planner llm

Gradio has no box editor, so the canvas is a ``gr.HTML`` with a small script (``agent/static/box_editor.js``)
that keeps the boxes in a hidden textbox as JSON, the *box state*::

    {"boxes": [{"name": "cat", "phrase": "a cat", "x": 0.1, "y": 0.3, "w": 0.35, "h": 0.4}, ...]}

with ``x, y, w, h`` normalized to the canvas (origin top-left, y down). :func:`layout_to_state` and
:func:`state_to_layout` convert between it and the one schema (:class:`scenewright.layout.schema.Layout`); the
latter turns anything a browser can send into a valid layout or an :class:`EditorError` whose
message names the box and the fix. Every handler shows errors as a message in the page, never a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scenewright.agent.config import AgentSettings
from scenewright.agent.loop import run
from scenewright.cli_checks import check_finite_options
from scenewright.errors import CLIError, InputError, ModelNotAvailableError
from scenewright.eval.detect import get_detector
from scenewright.eval.verify import SCORE_KEYS
from scenewright.layout.llm import LLMServerError
from scenewright.layout.plan import Plan, plan, plan_for_layout
from scenewright.layout.parse import name_of_phrase, parse_prompt
from scenewright.layout.planners import PLANNER_NAMES, get_planner
from scenewright.layout.schema import GLIGEN_MAX_OBJECTS, Layout, LayoutError
from scenewright.layout.spec import PromptSpec
from scenewright.synth.loading import DEFAULT_MODEL
from scenewright.synth.methods import METHODS
from scenewright.synth.recipe import parse_options

# Gradio reads this switch when it starts, for its launch-time analytics that `analytics_enabled=False` on the
# Blocks does not cover: a local tool sends nothing to an outside host. Set before gradio is first imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Denoising steps the page starts with (the embedded shapes model is small; SD wants ~50).
DEFAULT_STEPS = 25
#: The attempts budget the page starts with: `scenewright run`'s.
DEFAULT_ATTEMPTS = AgentSettings.model_fields["attempts"].default
#: Side in px of the canvas the image is shown on (box_editor.css: max-width 512px).
CANVAS_SIDE = 512
#: The longest box state read from the page: 30 boxes take ~5,000 characters; more is not a layout.
MAX_STATE_CHARS = 100_000
#: Float slack on the canvas edges (a box dragged to the edge may land at 1.0000001).
_EDGE = 1e-6


class EditorError(ValueError):
    """Input from the page that cannot be used; the message names the box or field and the fix."""


# ------------------------------------------------------------------ box state <-> layout
def layout_to_state(layout: Layout) -> dict:
    """The editor's box state of ``layout``: one ``{name, phrase, x, y, w, h}`` per object."""
    boxes = []
    for obj in layout.objects:
        x0, y0, x1, y1 = obj.box
        boxes.append({"name": obj.name, "phrase": obj.phrase, "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
    return {"boxes": boxes}


def _label(index: int, item: Any) -> str:
    phrase = item.get("phrase") if isinstance(item, dict) else None
    return f"box {index + 1}" + (f" {phrase.strip()!r}" if isinstance(phrase, str) and phrase.strip() else "")


def _number(item: dict, key: str, where: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EditorError(f"{where}: `{key}` must be a number in [0, 1], got {value!r}; re-plan or redraw the box")
    try:
        number = float(value)  # a JSON integer past the float range overflows here
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number):
        raise EditorError(f"{where}: `{key}` is {value if isinstance(value, float) else number}; re-plan or redraw the box")
    return number


def _in_text(name: str, prompt: str, prompt_names: set[str]) -> bool:
    """Whether the object kind ``name`` is one the text mentions (the parser's kinds, or each word, plural allowed)."""
    if name in prompt_names:
        return True
    text = prompt.lower()
    return all(re.search(rf"\b{re.escape(word)}(s|es)?\b", text) for word in name.lower().split())


def state_to_layout(
    state: str | dict | None, prompt: str, background: str = "", negative: str = "", spec: PromptSpec | None = None
) -> Layout:
    """The :class:`Layout` the page's box state draws for ``prompt``; raises :class:`EditorError` saying what to fix.

    ``spec`` is ``prompt`` already parsed (Generate parses once and hands the same spec to the verifier); else it is
    parsed here.

    Rejects an empty prompt, a state that is not ``{"boxes": [...]}``, a box without a phrase, of zero
    area or off the canvas, and a box whose label (its kind, from ``name`` or the phrase) the text
    does not mention -- the image would be guided towards an object the prompt never asks for.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise EditorError("the text is empty; type what the image should show, e.g. 'a cat to the left of a dog'")
    if isinstance(state, (str, bytes)):
        if len(state) > MAX_STATE_CHARS:
            raise EditorError(f"the box state is longer than any layout ({MAX_STATE_CHARS:,} characters); press 'Plan layout'")
        try:
            state = json.loads(state) if state.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EditorError("the box state from the page is not JSON; press 'Plan layout' to start again") from None
        except RecursionError:  # [[[[...: nested deeper than Python's parser goes
            raise EditorError("the box state is nested too deeply to be boxes; press 'Plan layout' to start again") from None
    if state is None:
        raise EditorError("there are no boxes yet; press 'Plan layout' or 'Add box'")
    if not isinstance(state, dict) or not isinstance(state.get("boxes"), list):
        raise EditorError('the box state must be {"boxes": [...]}; press \'Plan layout\' to start again')
    if not state["boxes"]:
        raise EditorError("the canvas has no boxes; press 'Plan layout' or 'Add box'")
    if len(state["boxes"]) > GLIGEN_MAX_OBJECTS:
        raise EditorError(
            f"the canvas has {len(state['boxes'])} boxes, more than a layout holds ({GLIGEN_MAX_OBJECTS}, as the planner); "
            "remove some, or merge a crowd into one box"
        )
    prompt_names = {o.name for o in (spec if spec is not None else parse_prompt(prompt)).objects}
    objects = []
    for i, item in enumerate(state["boxes"]):
        where = _label(i, item)
        if not isinstance(item, dict):
            raise EditorError(f"{where}: expected an object with phrase, x, y, w, h, got {item!r}")
        phrase = item.get("phrase")
        if not isinstance(phrase, str) or not phrase.strip():
            raise EditorError(f"{where}: the label is empty; select the box and type what it shows, e.g. 'a cat'")
        x, y, w, h = (_number(item, key, where) for key in ("x", "y", "w", "h"))
        if w <= 0 or h <= 0:
            raise EditorError(
                f"{where} has zero area ({max(w, 0):.3f} wide, {max(h, 0):.3f} high); "
                "drag its corner handle to give it a size, or remove it"
            )
        if x < -_EDGE or y < -_EDGE or x + w > 1 + _EDGE or y + h > 1 + _EDGE:
            raise EditorError(f"{where} leaves the canvas; drag it back inside")
        name = item.get("name")
        name = name if isinstance(name, str) and name.strip() else name_of_phrase(phrase)
        if not _in_text(name, prompt, prompt_names):
            raise EditorError(
                f"{where}: its label {name!r} is not in the text {prompt.strip()!r}; "
                "relabel the box with an object the text names, remove it, or add the object to the text"
            )
        box = [min(1.0, max(0.0, v)) for v in (x, y, x + w, y + h)]
        objects.append({"name": name, "phrase": phrase, "box": box})
    try:
        return Layout.parse({"prompt": prompt, "background": background, "negative": negative, "objects": objects})
    except LayoutError as err:
        raise EditorError(str(err)) from None


def _field_bounds(name: str) -> tuple[int, int]:
    """``(ge, le)`` of an :class:`AgentSettings` field: the page allows what `scenewright run` allows."""
    metadata = AgentSettings.model_fields[name].metadata
    low = next(m.ge for m in metadata if hasattr(m, "ge"))
    high = next(m.le for m in metadata if hasattr(m, "le"))
    return low, high


#: The page's number fields and their bounds (a million steps would hold the one-job queue for everyone).
RUN_NUMBER_BOUNDS = {name: _field_bounds(name) for name in ("seed", "steps", "attempts")}


def run_numbers(seed: Any, steps: Any, attempts: Any) -> tuple[int, int, int]:
    """The page's seed, steps and attempts as whole numbers within :data:`RUN_NUMBER_BOUNDS`, else :class:`EditorError`."""
    numbers = []
    for name, value in (("seed", seed), ("steps", steps), ("attempts", attempts)):
        low, high = RUN_NUMBER_BOUNDS[name]
        whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        if isinstance(value, bool) or not whole or not low <= value <= high:
            raise EditorError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        numbers.append(int(value))
    return numbers[0], numbers[1], numbers[2]


# ------------------------------------------------------------------ planning and generation
def plan_for_editor(text: str, planner) -> tuple[Layout, str]:
    """``text`` planned and geometry-checked by ``planner`` (a name or planner), and the page's message about it.

    Raises :class:`EditorError` for an empty text and :class:`~scenewright.layout.schema.LayoutError` for a plan the
    checker cannot repair. A plan without objects is returned with a message saying how to add some.
    """
    if not isinstance(text, str) or not text.strip():
        raise EditorError("the text is empty; type what the image should show, e.g. 'a cat to the left of a dog'")
    planned = plan(text, planner)
    layout, changes = planned.layout, planned.notes
    name = planner if isinstance(planner, str) else getattr(planner, "name", "the")
    if not layout.objects:
        return layout, f"The {name} planner found no objects in the text; add boxes with 'Add box' or name objects in the text."
    notes = "".join(f"\n- repaired: {change}" for change in changes)
    return layout, f"Planned {len(layout.objects)} box(es): drag to move, drag a corner to resize.{notes}"


def generate_for_layout(
    layout: Layout | Plan,
    synthesizer,
    methods: Sequence[str] = ("car", "sar"),
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    detector: str | Any = "shapes",
    attempts: int = 1,
    planner: str | Any = "offline",
    **method_options: Any,
):
    """Draw ``layout`` (or a :class:`~scenewright.layout.plan.Plan` around it, whose spec the verifier reads) with
    ``synthesizer`` (a :class:`scenewright.synth.Synthesizer`), detect and verify, and within
    ``attempts`` apply the remedies of `scenewright run` (:func:`scenewright.agent.loop.run`, started on this layout).

    Returns ``(image, overlay, scores)`` of the best attempt: the PIL image, the image with planned (green) and
    detected (red) boxes, and ``{"count_acc", "spatial_acc", "box_iou50", "mean_iou", "passed", "attempts",
    "requirements", "detections"}`` (``requirements``: the verdict, :mod:`scenewright.eval.verify`). ``detector`` is a
    name for :func:`scenewright.eval.detect.get_detector` or a detector; ``planner`` re-plans (the last remedy).
    ``methods`` empty means plain Stable Diffusion. Raises RuntimeError when no attempt drew an image.
    """
    find = get_detector(detector) if isinstance(detector, str) else detector
    start = layout if isinstance(layout, Plan) else plan_for_layout(layout)
    result = run(start.prompt, synthesizer=synthesizer, detector=find, planner=planner, start=start,
                 methods=list(methods) or ["none"], seed=seed, steps=steps, attempts=attempts, options=method_options)  # fmt: skip
    best = result.best
    if best is None:
        raise RuntimeError("no attempt drew an image: " + "; ".join(a.error or "" for a in result.attempts))
    scores: dict[str, Any] = dict(best.scores or {})
    scores["passed"], scores["attempts"] = best.passed, len(result.attempts)
    scores["requirements"] = [{"key": r.key, "passed": r.passed, "figure": r.figure, "sentence": r.sentence}
                              for r in (best.verdict.requirements if best.verdict is not None else ())]  # fmt: skip
    scores["detections"] = [{"name": d.name, "box": [round(v, 3) for v in d.box], "score": round(d.score, 3)}
                            for d in best.detections]  # fmt: skip
    return best.image, result.overlay(), scores


def verdict_markdown(scores: dict) -> str:
    """The verdict as a readable list: a mark (✔/✘), each requirement's sentence and figure, then the summary figures."""
    lines = [f"**{'Passed' if scores.get('passed') else 'Not passed'}** (best of {scores.get('attempts', 1)} attempt(s))", ""]
    for r in scores.get("requirements", []):
        figure = "" if r["figure"] is None else f" — {r['figure']:.2f}"
        lines.append(f"- {'✔' if r['passed'] else '✘'} {r['sentence']}{figure}")
    figures = ", ".join(f"{key} {'n/a' if scores.get(key) is None else format(scores[key], '.2f')}" for key in SCORE_KEYS)
    return "\n".join([*lines, "", figures])


def shown_on_canvas(image, side: int = CANVAS_SIDE):
    """``image`` scaled up to the canvas with nearest-neighbour, so a small model's pixels stay crisp."""
    from PIL import Image

    if image.width >= side:
        return image
    return image.resize((side, round(side * image.height / image.width)), Image.Resampling.NEAREST)


# ------------------------------------------------------------------ the app
class _LazySynthesizer:
    """Loads the model on the first generation (so the page opens at once) and keeps it; thread-safe."""

    def __init__(self, model: str, synthesizer=None):
        self.model, self._synthesizer, self._lock = model, synthesizer, threading.Lock()

    def get(self):
        with self._lock:
            if self._synthesizer is None:
                import torch

                from scenewright.synth import Synthesizer  # diffusers: loaded at the first generation, not at start

                cuda = torch.cuda.is_available()
                self._synthesizer = Synthesizer.from_pretrained(
                    self.model, torch_dtype=torch.float16 if cuda else torch.float32, device="cuda" if cuda else "cpu"
                )
            return self._synthesizer


_DOWNLOADS: list[Path] = []  # one temporary folder per process for the layout files offered as downloads


def _write_layout_file(layout: Layout) -> str:
    """The layout as a JSON file to offer for download; the folder is removed when the process exits."""
    if not _DOWNLOADS:
        _DOWNLOADS.append(Path(tempfile.mkdtemp(prefix="scenewright-layouts-")))
        atexit.register(shutil.rmtree, _DOWNLOADS[0], ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=_DOWNLOADS[0]))  # own subfolder: every download keeps the name layout.json
    path = folder / "layout.json"
    path.write_text(layout.to_json(indent=2) + "\n", encoding="utf-8")
    return str(path)


def _exit_on_sigterm(signum: int, frame) -> None:
    """SIGTERM (``kill``, a service manager) ends the server as Ctrl-C does, so the ``atexit`` cleanups run."""
    raise SystemExit(128 + signum)


def _error(err: BaseException) -> str:
    return f"**Error:** {err}"


def build_app(
    model: str | None = None,
    planner: str = "offline",
    *,
    synthesizer=None,
    detector: str | Any = "shapes",
    planner_options: dict | None = None,
    method_options: dict | None = None,
):
    """The Gradio ``Blocks`` of the editor. ``synthesizer`` (a :class:`scenewright.synth.Synthesizer`) overrides ``model``.

    Gradio's queue runs one generation at a time (its default ``concurrency_limit=1`` per event), so
    the shared pipeline never has two runs installing attention processors at once.
    """
    import gradio as gr  # optional and slow to import: only `serve` needs it

    model = model or DEFAULT_MODEL
    models = _LazySynthesizer(model, synthesizer)
    method_options = dict(method_options or {})
    planners: dict[str, Any] = {}

    def page_planner():
        """The planner, set up at the first use; its set-up errors (a missing model, package) become an EditorError."""
        if "planner" not in planners:
            try:
                planners["planner"] = get_planner(planner, **(planner_options or {}))
            except (InputError, OSError, ImportError) as err:
                raise EditorError(f"the {planner} planner cannot be set up: {err}") from None
        return planners["planner"]

    def on_plan(text: str):
        try:
            layout, message = plan_for_editor(text, page_planner())
        except (EditorError, LayoutError, LLMServerError) as err:  # the text, the plan, the planner's server
            return gr.update(), _error(err), gr.update()
        return json.dumps(layout_to_state(layout)), message, _write_layout_file(layout) if layout.objects else None

    def on_save(text: str, state: str):
        try:
            layout = state_to_layout(state, text)
        except EditorError as err:
            return gr.update(), _error(err)
        return _write_layout_file(layout), "Layout saved: download it below."

    def on_generate(text: str, state: str, chosen: list[str], seed: float, steps: float, attempts: float):
        nothing = (None, None, None, gr.update())
        try:
            spec = parse_prompt(text) if isinstance(text, str) and text.strip() else None  # once per Generate
            layout = state_to_layout(state, text, spec=spec)
            seed, steps, attempts = run_numbers(seed, steps, attempts)
            chosen_planner = page_planner()
            synth = models.get()
            image, overlay, scores = generate_for_layout(
                plan_for_layout(layout, spec), synth, methods=chosen or (), seed=seed, steps=steps, detector=detector,
                attempts=attempts, planner=chosen_planner, **method_options,
            )  # fmt: skip
        except (EditorError, ModelNotAvailableError) as err:
            return (*nothing, _error(err))
        except (InputError, LayoutError) as err:  # bad options for this model, sizes: the user's to fix
            return (*nothing, _error(f"generation failed: {err}"))
        except Exception as err:  # noqa: BLE001 -- the page shows one line; the server log keeps the traceback
            logger.exception("generation failed")
            return (*nothing, _error(f"generation failed ({type(err).__name__}: {err}); see the server log"))
        outcome = "passed" if scores["passed"] else "not passed, the best shown"
        return (shown_on_canvas(image), overlay, verdict_markdown(scores), _write_layout_file(layout),
                f"Generated with {', '.join(chosen or ['none'])}, seed {seed}: {scores['attempts']} attempt(s), {outcome}.")  # fmt: skip

    editor = (STATIC / "box_editor.js").read_text(encoding="utf-8")
    # delete_cache: Gradio's own copies of served files (images, layout.json) go after an hour, checked hourly.
    with gr.Blocks(title="scenewright layout editor", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("## scenewright: text → layout → image")
        with gr.Row():
            text = gr.Textbox(label="Text", placeholder="two cats to the left of a dog", elem_id="sw-text", scale=4)
            plan_button = gr.Button("Plan layout", variant="primary", elem_id="sw-plan", scale=1)
        message = gr.Markdown("Type a text and press 'Plan layout'.", elem_id="sw-message")
        with gr.Row():
            with gr.Column():
                gr.HTML(
                    html_template=(
                        "<div class='sw-tools'><input class='sw-label' placeholder='label, e.g. a cat'>"
                        "<button class='sw-add'>Add box</button><button class='sw-remove'>Remove box</button></div>"
                        "<div class='sw-canvas' id='sw-canvas'></div>"
                    ),
                    css_template=(STATIC / "box_editor.css").read_text(encoding="utf-8"),
                    js_on_load=editor,
                    apply_default_css=False,
                )
                state = gr.Textbox(value='{"boxes": []}', elem_id="sw-state", visible="hidden", label="box state")
                with gr.Row():
                    methods = gr.CheckboxGroup(list(METHODS), value=["car", "sar"], label="Guidance methods")
                with gr.Row():
                    (seed_low, seed_high), (steps_low, steps_high), (attempts_low, attempts_high) = RUN_NUMBER_BOUNDS.values()
                    seed = gr.Number(value=0, precision=0, minimum=seed_low, maximum=seed_high, label="Seed", elem_id="sw-seed")
                    steps = gr.Number(value=DEFAULT_STEPS, precision=0, minimum=steps_low, maximum=steps_high,
                                      label="Steps", elem_id="sw-steps")  # fmt: skip
                    attempts = gr.Number(value=DEFAULT_ATTEMPTS, precision=0, minimum=attempts_low, maximum=attempts_high,
                                         label="Attempts", elem_id="sw-attempts")  # fmt: skip
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="sw-generate")
                    save = gr.Button("Save layout JSON", elem_id="sw-save")
                download = gr.File(label="Layout JSON", elem_id="sw-download", interactive=False)
            with gr.Column():
                image = gr.Image(label="Image", type="pil", elem_id="sw-image", interactive=False)
                overlay = gr.Image(label="Planned (green) and detected (red) boxes", type="pil", elem_id="sw-overlay",
                                   interactive=False)  # fmt: skip
                scores = gr.Markdown("", label="Verdict", elem_id="sw-scores")
        plan_button.click(on_plan, inputs=[text], outputs=[state, message, download])
        text.submit(on_plan, inputs=[text], outputs=[state, message, download])
        save.click(on_save, inputs=[text, state], outputs=[download, message])
        generate.click(on_generate, inputs=[text, state, methods, seed, steps, attempts],
                       outputs=[image, overlay, scores, download, message])  # fmt: skip
    return app


# ------------------------------------------------------------------ the command
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the `scenewright` parser."""
    parser = subparsers.add_parser(
        "serve",
        help="start the local web layout editor (Gradio)",
        description="Start a local web app: text -> editable layout boxes -> image, overlay and scores.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--model", default=None, help="diffusers Stable Diffusion folder or hub id (default: embedded 'shapes')")
    parser.add_argument("--planner", choices=PLANNER_NAMES, default="offline", help="layout planner (default offline)")
    parser.add_argument("--planner-model", default=None, help="llm/local planner: the model name or folder")
    parser.add_argument("--detector", default="shapes", help="detector that checks the image (default shapes)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a method/engine option, VALUE as JSON, e.g. --option max_iter_to_alter=10 (repeatable)",
    )  # fmt: skip
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print(f"error: --port must lie in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    if args.planner == "offline" and args.planner_model:
        print("error: --planner-model is only used by --planner llm or local", file=sys.stderr)
        return 2
    try:
        options = parse_options(args.option)
        check_finite_options(options)
        get_detector(args.detector)  # an unknown detector fails now, not at the first generation
    except (CLIError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    planner_options = {"model": args.planner_model} if args.planner_model else {}
    app = build_app(args.model, args.planner, detector=args.detector, planner_options=planner_options,
                    method_options=options)  # fmt: skip
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # the layout downloads' temporary folder goes on `kill` too
    app.launch(server_name=args.host, server_port=args.port, share=False, show_error=False)
    return 0


__all__ = ["EditorError", "build_app", "generate_for_layout", "layout_to_state", "plan_for_editor", "register", "shown_on_canvas",
           "state_to_layout", "verdict_markdown"]
