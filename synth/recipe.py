"""How to draw a plan: a validated :class:`Recipe`, the one parser of the CLI's method syntax, and the one
place where option precedence is resolved.

A recipe names the guidance methods, their and the engine's options, the loop variations (LMD's latent
composition, box-confined spatial-temporal control), the seed, the steps and the CFG scale; :meth:`Recipe.generate_kwargs`
turns it into :meth:`scenewright.synth.Synthesizer.generate`'s keyword arguments. Every command spells recipes the
same way:

- ``scenewright generate --method car,sar --option scale_factor=10`` -> :func:`parse_method_names`, :func:`parse_options`;
- ``scenewright bench --methods none,compose+car+sar,spatial_temporal:0.5`` -> :func:`parse_recipes`, one recipe per
  combination, and :func:`split_options` gives each the ``--option``\\ s its methods take.

:func:`resolve_methods` is the precedence rule the engine applies (user > the first method listed that sets an
option > Attend-and-Excite's defaults, :data:`ENGINE_DEFAULTS`); the agent's "stronger guidance" reads it too
(:meth:`Recipe.engine_options`), so it boosts exactly the scale the engine would have used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from scenewright.errors import CLIError, InputError

from .methods import METHODS, GuidanceMethod, get_method

#: Engine options, with Attend-and-Excite's names and defaults (diffusers' A&E pipeline) so users can move over.
ENGINE_DEFAULTS: dict[str, Any] = {
    "max_iter_to_alter": 25,  # guide only the first steps: the layout is decided early
    "thresholds": {0: 0.05, 10: 0.5, 20: 0.8},  # step -> refine until loss <= 1 - threshold
    "scale_factor": 20.0,
    "max_refinement_steps": 20,
    # "attend_excite": the schedule above; "attention_refocusing": Phung et al.'s official one
    # (synth.methods.RefocusingSchedule), whose loss scale is multiplied by plain_sd_loss_scale off GLIGEN.
    "schedule": "attend_excite",
    "plain_sd_loss_scale": 1.0,
    # recompute the guided forward's activations in its backward pass (less memory, ~1 more forward of time)
    "gradient_checkpointing": False,
    # FLUX.1 / SD3: indices of the joint-attention blocks whose maps guidance reads (execution order); None: the
    # backbone's `guidance_blocks` (synth.backbones). A UNet's layers are picked by the methods' `*_res` options.
    "mmdit_blocks": None,
}
SCHEDULES = ("attend_excite", "attention_refocusing")
#: The bench's loop variations, spelled as combination members: ``compose+car+sar``, ``spatial_temporal:3``.
COMPOSE, SPATIAL_TEMPORAL = "compose", "spatial_temporal"


# ----------------------------------------------------------------------------- precedence
@dataclass
class ActiveMethod:
    """A guidance method switched on for one call: its name, registry entry and resolved options."""

    name: str
    method: GuidanceMethod
    options: dict[str, Any]  # the method's defaults, then its own options, then the user's keywords


def resolve_methods(
    methods: str | Sequence[str] | Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]
) -> tuple[list[ActiveMethod], dict[str, Any]]:
    """Method names -> the :class:`ActiveMethod` s (those with losses), and the engine options.

    Precedence: ``options`` (the user's keywords, each sent to every method that has it) > a method's own
    options (``methods={"car": {...}}``) > its defaults; engine options: user > the first method listed that sets
    one > :data:`ENGINE_DEFAULTS`. An option nothing takes raises, naming the valid ones.
    """
    if isinstance(methods, str):
        methods = [methods]
    per_method = dict(methods) if isinstance(methods, Mapping) else {name: {} for name in methods}
    active: list[ActiveMethod] = []
    known = set(ENGINE_DEFAULTS)
    for name, own in per_method.items():
        if name == "none":
            continue
        method = get_method(name)  # raises naming the known methods
        known |= set(method.defaults)
        if not method.losses:  # "none"
            continue
        opts = dict(method.defaults)
        opts.update({k: v for k, v in options.items() if k in method.defaults})
        unknown = set(own) - set(method.defaults) - set(ENGINE_DEFAULTS)
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)} for method {name!r}; it takes {sorted(method.defaults)}")
        opts.update(own)
        active.append(ActiveMethod(name, method, opts))
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for methods {list(per_method)}; valid: {sorted(known)}")
    engine = dict(ENGINE_DEFAULTS)
    for key in ENGINE_DEFAULTS:
        for entry in reversed(active):  # the first method listed that sets an engine option wins
            if key in entry.options:
                engine[key] = entry.options[key]
        if key in options:
            engine[key] = options[key]
    return active, check_engine_options(engine)


def check_engine_options(engine: dict[str, Any]) -> dict[str, Any]:
    """Validate the schedule options; thresholds become ``{step: float}``."""
    for key in ("max_iter_to_alter", "max_refinement_steps"):
        value = engine[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"`{key}` must be an int >= 0, got {value!r}")
    scale = engine["scale_factor"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not np.isfinite(scale) or scale < 0:
        raise InputError(f"`scale_factor` must be a finite number >= 0 (A&E uses 20), got {scale!r}")
    if engine["schedule"] not in SCHEDULES:
        raise InputError(f"`schedule` must be one of {SCHEDULES}, got {engine['schedule']!r}")
    plain = engine["plain_sd_loss_scale"]
    if isinstance(plain, bool) or not isinstance(plain, (int, float, np.number)) or not np.isfinite(plain) or plain <= 0:
        raise InputError(f"`plain_sd_loss_scale` must be a finite number > 0, got {plain!r}")
    if not isinstance(engine["gradient_checkpointing"], (bool, np.bool_)):
        raise InputError(f"`gradient_checkpointing` must be True or False, got {engine['gradient_checkpointing']!r}")
    thresholds = engine["thresholds"] or {}
    if not isinstance(thresholds, Mapping):
        raise InputError(
            f"`thresholds` must map step -> max-attention threshold, e.g. {{0: 0.05, 10: 0.5}}, got {thresholds!r}"
        )
    checked = {}
    for step, value in thresholds.items():
        try:
            checked[int(step)] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"`thresholds` must map int steps to numbers, got {step!r}: {value!r}") from None
        if not 0.0 <= checked[int(step)] <= 1.0:
            raise InputError(
                f"`thresholds[{step}]` must lie in [0, 1] (the target is loss <= 1 - threshold), got {value!r}"
            )
    blocks = engine["mmdit_blocks"]
    if blocks is not None:
        if isinstance(blocks, (str, bytes, Mapping)) or not isinstance(blocks, Sequence) or not blocks or any(
            isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0 for b in blocks
        ):
            raise ValueError(f"`mmdit_blocks` must be a non-empty list of block indices >= 0, e.g. [0, 1, 2], got {blocks!r}")
        blocks = tuple(int(b) for b in blocks)
    return {**engine, "thresholds": checked, "gradient_checkpointing": bool(engine["gradient_checkpointing"]),
            "mmdit_blocks": blocks}  # fmt: skip


# ----------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class Recipe:
    """How to draw one plan: guidance methods and options, loop variations, seed, steps and CFG scale."""

    methods: tuple[str, ...] = ("none",)  # registry names (synth.methods.METHODS); ("none",): plain SD
    options: Mapping[str, Any] = field(default_factory=dict)  # method and engine options, as generate's keywords
    compose: bool = False  # draw each object alone and compose it into its box first (LMD, synth.composition)
    spatial_temporal: float | None = None  # box-confined spatial-temporal control's local weight; None: off
    seed: int = 0
    steps: int = 50  # denoising steps
    guidance_scale: float | None = None  # classifier-free guidance; None: the model's declared default
    name: str = ""  # the CLI spelling, e.g. "compose+car+sar"; "" spells it from the fields

    def __post_init__(self):
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        object.__setattr__(self, "methods", methods or ("none",))
        object.__setattr__(self, "options", dict(self.options))
        if "none" in self.methods and len(self.methods) > 1:
            raise InputError(f"`methods` {list(self.methods)}: 'none' (plain Stable Diffusion) cannot be combined with others")
        if self.spatial_temporal is not None and not (math.isfinite(self.spatial_temporal) and self.spatial_temporal >= 0):
            raise InputError(f"`spatial_temporal` must be a finite number >= 0 (1.0 by default), got {self.spatial_temporal}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InputError(f"`steps` must be an int >= 1, got {self.steps!r}")
        if not self.name:
            variations = [COMPOSE] * self.compose + ([] if self.spatial_temporal is None else [SPATIAL_TEMPORAL])
            shown = [] if variations and self.methods == ("none",) else list(self.methods)
            object.__setattr__(self, "name", "+".join(variations + shown))

    @property
    def guided(self) -> bool:
        """Whether anything steers the image towards the layout (a method or a loop variation)."""
        return self.methods != ("none",) or self.compose or self.spatial_temporal is not None

    def engine_options(self) -> dict[str, Any]:
        """The engine options this recipe draws with, after precedence (:func:`resolve_methods`)."""
        return resolve_methods(list(self.methods), self.options)[1]

    def generate_kwargs(self, composition=None) -> dict[str, Any]:
        """:meth:`scenewright.synth.Synthesizer.generate`'s keywords; ``composition`` replaces ``True`` for composed recipes
        (a :class:`scenewright.synth.composition.CompositionOptions`, e.g. with the verifier's detector as segmenter)."""
        from .spatial_temporal import SpatialTemporalControl  # torch-heavy: the CLI parses recipes before loading it

        return {
            "methods": list(self.methods),
            "composition": (composition or True) if self.compose else None,
            "spatial_temporal": None if self.spatial_temporal is None else SpatialTemporalControl(local_weight=self.spatial_temporal),
            "seed": self.seed,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            **self.options,
        }

    def with_options(self, **options: Any) -> Recipe:
        """This recipe with ``options`` over its own."""
        return replace(self, options={**self.options, **options})


# ----------------------------------------------------------------------------- the CLI syntax
def parse_method_names(text: str) -> list[str]:
    """``"car, sar"`` -> ``["car", "sar"]`` (``--method``), every name checked against the registry."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CLIError("--method is empty; give e.g. --method car,sar or --method none")
    unknown = [name for name in names if name != "none" and name not in METHODS]
    if unknown:
        raise CLIError(f"--method: unknown method(s) {', '.join(unknown)}; choose from {', '.join(['none', *METHODS])}")
    if "none" in names and len(names) > 1:
        raise CLIError("--method: 'none' (plain Stable Diffusion) cannot be combined with other methods")
    return names


def parse_options(pairs: Sequence[str]) -> dict:
    """``["max_iter_to_alter=10", "attn_res=[16,16]"]`` -> ``{"max_iter_to_alter": 10, "attn_res": [16, 16]}``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--option {pair!r} is not KEY=VALUE; e.g. --option max_iter_to_alter=10")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value  # a bare string, e.g. --option loss_type=soft
    return options


def _spatial_temporal_weight(token: str, part: str) -> float:
    """``"spatial_temporal"`` -> 1.0, ``"spatial_temporal:3"`` -> 3.0; a bad weight names the combination."""
    _, _, text = token.partition(":")
    try:
        weight = float(text) if text else 1.0
    except ValueError:
        weight = -1.0  # not a number: the same error as a negative one
    if not (math.isfinite(weight) and weight >= 0):
        raise InputError(f"--methods {part!r}: spatial_temporal's local weight must be a number >= 0, "
                         f"e.g. spatial_temporal:3, got {text!r}")  # fmt: skip
    return weight


def parse_recipes(text: str, **common: Any) -> list[Recipe]:
    """``"none,attend_excite,compose+car+sar"`` -> three :class:`Recipe` (``--methods``), each name checked.

    ``compose`` and ``spatial_temporal`` (or ``spatial_temporal:W``) join a combination as loop variations, not
    losses. ``common`` (``seed``, ``steps``, ``guidance_scale``, ``options``) goes to every recipe.
    """
    recipes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        tokens = [t.strip() for t in part.split("+")]
        compose = COMPOSE in tokens
        regional = [t for t in tokens if t.partition(":")[0] == SPATIAL_TEMPORAL]
        if len(regional) > 1:
            raise InputError(f"--methods {part!r} names spatial_temporal twice; give it once, e.g. compose+spatial_temporal:3")
        weight = _spatial_temporal_weight(regional[0], part) if regional else None
        rest = [t for t in tokens if t != COMPOSE and t not in regional] or ["none"]
        methods = parse_method_names(",".join(rest))  # CLIError (a ValueError) names the unknown method
        variations = ([COMPOSE] if compose else []) + regional
        shown = [] if variations and methods == ["none"] else methods
        recipes.append(Recipe(tuple(methods), compose=compose, spatial_temporal=weight, name="+".join(variations + shown), **common))
    if not recipes:
        raise InputError("--methods is empty; give e.g. --methods none,attend_excite,car+sar")
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise InputError(f"--methods lists a combination twice: {text!r}")
    return recipes


def split_options(recipes: Sequence[Recipe], options: Mapping[str, Any]) -> dict[str, dict]:
    """Per recipe name, the ``--option``\\ s its methods (or the engine) take; an option none takes is an error.

    ``--option car_res=[16,16]`` with ``--methods none,car+sar`` goes to car+sar only: plain SD
    rejects method options, and one flag list serves every combination of the run.
    """
    known = {r.name: set(ENGINE_DEFAULTS).union(*(METHODS[m].defaults for m in r.methods if m in METHODS)) for r in recipes}
    unused = sorted(set(options) - set().union(*known.values()))
    if unused:
        valid = sorted(set().union(*known.values()))
        raise InputError(f"--option {', '.join(unused)}: no method of --methods takes it; valid: {', '.join(valid)}")
    return {r.name: {k: v for k, v in options.items() if k in known[r.name]} for r in recipes}


__all__ = [
    "ENGINE_DEFAULTS", "SCHEDULES", "Recipe", "check_engine_options", "parse_method_names", "parse_options",
    "parse_recipes", "resolve_methods", "split_options",
]  # fmt: skip
