"""The agent's configuration: one pydantic settings object read from flags, the environment and a TOML file.

Precedence, highest first: command-line flags (or :func:`scenewright.agent.run` keyword arguments) >
``SCENEWRIGHT_*`` environment variables > a TOML file (``--config FILE``) > the defaults below.

    # scenewright.toml: the same names as the fields, flat
    planner = "llm"
    planner_model = "gpt-4o-mini"
    methods = ["car", "sar"]
    attempts = 4
    [options]
    max_refinement_steps = 5

Environment variables are the field names upper-cased after ``SCENEWRIGHT_`` (``SCENEWRIGHT_ATTEMPTS=2``,
``SCENEWRIGHT_METHODS=car,sar``, ``SCENEWRIGHT_OPTIONS='{"scale_factor": 30}'``); the LLM server's
key and address keep the names every OpenAI client reads, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``.
The key is a :class:`~pydantic.SecretStr`: it prints as ``**********`` everywhere (repr, JSON, reports).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, NoDecode, SettingsConfigDict

from scenewright.cli_checks import check_finite_options
from scenewright.layout.llm import redact_url
from scenewright.layout.planners import PLANNER_NAMES
from scenewright.synth.loading import DEFAULT_MODEL

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "SCENEWRIGHT_"
#: What `scenewright config` and reports print in place of a secret.
REDACTED = "**********"

# The TOML file's contents for the settings object being built (see `AgentSettings.settings_customise_sources`).
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("_FILE_VALUES", default={})


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the field, where it came from and the fix."""


def _split_names(value: Any) -> Any:
    """``"car, sar"`` or ``'["car", "sar"]'`` (a flag or an environment variable) -> ``["car", "sar"]``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{value!r} is not a JSON list; write car,sar or [\"car\", \"sar\"]") from None
        return [name.strip() for name in text.split(",") if name.strip()]
    return value


class AgentSettings(BaseSettings):
    """Everything `scenewright run` and :func:`scenewright.agent.run` can be told (see the module docstring for the sources)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="forbid", populate_by_name=True, validate_default=True,
        allow_inf_nan=False,  # NaN passes no bound silently: say "finite number", not "less than or equal to 100"
    )

    # -- planning
    planner: Literal["offline", "llm", "local"] = Field("offline", description="layout planner: " + ", ".join(PLANNER_NAMES))
    planner_model: str | None = Field(None, description="llm: the model name; local: a folder or hub id")
    llm_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("llm_base_url", "OPENAI_BASE_URL"),
        description="llm: an OpenAI-compatible server, e.g. http://localhost:8000/v1 (default hosted OpenAI)",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY"),
        description="llm: the server's API key (never printed)",
    )
    # -- synthesis
    model: str = Field(DEFAULT_MODEL, description="diffusers Stable Diffusion folder, hub id, or embedded name")
    methods: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["car", "sar"], description="guidance methods (synth.methods.METHODS) or ['none']"
    )
    # NoDecode: our validator reads the environment's JSON, so a bad value is a one-line error, not pydantic-settings'
    options: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict, description="method/engine options for Synthesizer.generate")
    steps: int = Field(50, ge=1, le=1000, description="denoising steps")
    guidance_scale: float | None = Field(
        None, ge=0, le=100, description="classifier-free guidance scale (None: the model's, 7.5 for SD, 2.0 for shapes)"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="initial-noise seed of the first attempt")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu)")
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(None, description="weights dtype")
    # -- verification and retries
    detector: str = Field("shapes", description="detector name (eval.detect.DETECTORS)")
    attempts: int = Field(4, ge=1, le=50, description="attempt budget: the first try and its remedies")
    guidance_boost: float = Field(2.0, gt=1, le=100, description="'stronger guidance' multiplies scale_factor by this")
    extra_methods: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="methods 'stronger guidance' adds to the active ones"
    )
    compose: bool = Field(
        False, description="compose each object, drawn alone, into its box from the first attempt (else a remedy)"
    )
    compose_spatial_temporal: float = Field(
        1.0, ge=0, le=100, description="on composed attempts, blend each object's phrase into its box with this "
        "local weight (spatial-temporal control: the caption's steps then keep each object's color); 0: off",
    )
    min_mean_iou: float = Field(0.3, ge=0, le=1, description="an image passes with exact counts, relations and this box IoU")

    @field_validator("methods", "extra_methods", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _split_names(value)

    @field_validator("methods", "extra_methods")
    @classmethod
    def _known_methods(cls, names: list[str], info) -> list[str]:
        from scenewright.synth.methods import METHODS  # torch: `scenewright --help` and `config` need it only here

        names = [name.strip() for name in names if name.strip()]
        unknown = [name for name in names if name != "none" and name not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(['none', *METHODS])}")
        if info.field_name == "methods":
            if not names:
                raise ValueError("no method given; write e.g. car,sar, or none for plain Stable Diffusion")
            if "none" in names and len(names) > 1:
                raise ValueError("'none' (plain Stable Diffusion) cannot be combined with other methods")
        elif "none" in names:
            raise ValueError("'none' is not a method to add; list guidance methods such as attend_excite")
        return names

    @field_validator("options", mode="before")
    @classmethod
    def _options_json(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON object, e.g. {"scale_factor": 30}') from None
        return value

    @field_validator("options")
    @classmethod
    def _finite_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        check_finite_options(options, flag="")
        return options

    @field_validator("model", "detector")
    @classmethod
    def _non_empty(cls, value: str, info) -> str:
        if not value.strip():
            raise ValueError(f"is empty; give a {info.field_name} name")
        return value.strip()

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, name: str) -> str:
        from scenewright.eval.detect import DETECTORS  # torch and transformers: only when a detector is named

        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}")
        return name

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # flags (init) > environment > the TOML file; no .env or secrets dir is read implicitly.
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get())

    # ------------------------------------------------------------------ views
    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-ready values, secrets shown as :data:`REDACTED` (None stays None)."""
        data = self.model_dump(mode="json")
        data["openai_api_key"] = REDACTED if self.openai_api_key is not None else None
        data["llm_base_url"] = redact_url(self.llm_base_url)  # http://user:pw@host -> http://***@host
        return data

    def planner_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`scenewright.layout.planners.get_planner` ``(self.planner, ...)``."""
        if self.planner == "offline":
            return {}
        if self.planner == "local":
            return {"model": self.planner_model}
        options: dict[str, Any] = {"model": self.planner_model, "base_url": self.llm_base_url}
        if self.openai_api_key is not None:
            options["api_key"] = self.openai_api_key.get_secret_value()
        return options


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML config file's table; raises :class:`ConfigError` naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; write it as TOML") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return data


def load_settings(flags: Mapping[str, Any] | None = None, config_file: str | Path | None = None) -> AgentSettings:
    """The effective settings: ``flags`` (None values are "not given") > environment > ``config_file`` > defaults."""
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    file_values = read_config_file(config_file) if config_file is not None else {}
    token = _FILE_VALUES.set(file_values)
    try:
        return AgentSettings(**given)
    except ValidationError as err:
        raise ConfigError(_describe(err, given, file_values, config_file)) from None
    finally:
        _FILE_VALUES.reset(token)


def _env_names(field: str) -> list[str]:
    """The environment variables a field is read from."""
    alias = AgentSettings.model_fields[field].validation_alias if field in AgentSettings.model_fields else None
    if isinstance(alias, AliasChoices):
        return [str(name).upper() for name in alias.choices if str(name) != field]
    return [f"{ENV_PREFIX}{field.upper()}"]


def _describe(err: ValidationError, flags: Mapping[str, Any], file_values: Mapping[str, Any], config_file) -> str:
    """One line per bad field: where its value came from, what is wrong (values of secrets never shown)."""
    lines = []
    for item in err.errors():
        field = str(item["loc"][0]) if item["loc"] else "config"
        detail = ".".join(str(p) for p in item["loc"][1:])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            where = f"config file {config_file}" if field in file_values else "the arguments"
            lines.append(f"{where}: unknown setting {field!r}; known: {', '.join(AgentSettings.model_fields)}")
            continue
        if field in flags:
            where = "--option" if field == "options" else f"--{field.replace('_', '-')}"
        elif any(name.upper() in os.environ for name in _env_names(field)):
            where = f"{field} (environment {' or '.join(_env_names(field))})"
        elif field in file_values:
            where = f"{field} in {config_file}"
        else:
            where = field
        lines.append(f"{where}{'.' + detail if detail else ''}: {message}")
    return "; ".join(lines)


__all__ = ["AgentSettings", "ConfigError", "REDACTED", "load_settings", "read_config_file"]
