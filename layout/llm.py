"""The LLM planner: a layout from any OpenAI-compatible chat server, through the ``openai`` client.

Hosted OpenAI or a local server (vLLM, Ollama, llama.cpp's ``llama-server``):

- ``base_url`` (or ``OPENAI_BASE_URL``) selects the server, e.g. ``http://localhost:8000/v1``;
- ``api_key`` (or ``OPENAI_API_KEY``) is the key; when a ``base_url`` is given and no key is, the
  placeholder ``"EMPTY"`` is sent, since local servers usually ignore the key but the client needs one;
- ``model`` (or ``SCENEWRIGHT_LLM_MODEL``) names the model; it defaults to :data:`DEFAULT_MODEL` on
  hosted OpenAI and must be given for other servers, whose model names differ.

The prompt is rendered from the jinja2 templates in :mod:`prompts` (instructions for the JSON answer with
normalized boxes and in-context examples in the style of LMD, Lian et al. 2023). The request asks for
structured output (``response_format`` ``json_schema`` built from :class:`LayoutAnswer`); a server that
rejects it with a 400 naming the format is asked for ``json_object``, then for plain text, and the planner
remembers what worked. Answers are accepted as that JSON, or in the LMD or Attention Refocusing text formats
(:mod:`scenewright.layout.peer_formats`). An answer that cannot be used is sent back with its validation error,
at most ``max_retries`` times (:func:`plan_with_retries`, shared with :mod:`scenewright.layout.local`).

Accepted answers are cached on disk (:mod:`scenewright.layout.cache`); a cache hit makes no request.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from scenewright.errors import InputError
from scenewright import prompts
from scenewright.layout.cache import AnswerCache, cache_key
from scenewright.layout.geometry import clip_to_canvas
from scenewright.layout.parse import name_of_phrase
from scenewright.layout.peer_formats import parse_peer_answer
from scenewright.layout.schema import Layout, LayoutError, LayoutObject

logger = logging.getLogger(__name__)

#: Model used on hosted OpenAI when neither ``model`` nor ``SCENEWRIGHT_LLM_MODEL`` is given.
DEFAULT_MODEL = "gpt-4o-mini"
def redact_url(url: str | None) -> str | None:
    """``url`` with any credentials in it hidden: ``http://user:pw@host/v1`` -> ``http://***@host/v1``.

    Base URLs are printed by ``scenewright config``, in error messages and in reports; a password written
    into one must not follow it there.
    """
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


#: Key sent to a server given by ``base_url`` when no key is configured (local servers ignore it).
PLACEHOLDER_API_KEY = "EMPTY"
#: ``response_format`` modes, most to least constrained; a 400 moves to the next.
RESPONSE_MODES = ("json_schema", "json_object", "text")

Messages = list[dict[str, str]]
#: What a 400 says when the server cannot do the requested ``response_format`` (vLLM, Ollama, llama.cpp,
#: OpenAI wordings); any other 400 (e.g. the context is too long) is an error, not a reason to fall back.
_REJECTED_FORMAT_RE = re.compile(r"response_format|json_schema|json_object|schema|structured|grammar|not supported|unsupported", re.I)


class LLMServerError(RuntimeError):
    """The LLM server could not be used; the message says what to check (never the key)."""


# ------------------------------------------------------------------ answer schema
class AnswerObject(BaseModel):
    """One object instance as the model writes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=LayoutObject.model_fields["name"].description)
    phrase: str = Field(description=LayoutObject.model_fields["phrase"].description)
    box: list[float] = Field(min_length=4, max_length=4, description=LayoutObject.model_fields["box"].description)


class LayoutAnswer(BaseModel):
    """The JSON a model answers with: a :class:`~scenewright.layout.schema.Layout` without the prompt, which we know."""

    model_config = ConfigDict(extra="forbid")

    objects: list[AnswerObject] = Field(description="One entry per object instance.")
    background: str = Field(description="The scene without the objects ('A beach'); 'A realistic scene' if none.")
    negative: str = Field(description="Comma-separated things the caption excludes; '' if none.")


def response_format(mode: str) -> dict | None:
    """The ``response_format`` request field for ``mode`` (one of :data:`RESPONSE_MODES`)."""
    if mode == "json_schema":
        schema = LayoutAnswer.model_json_schema()
        return {"type": "json_schema", "json_schema": {"name": "layout", "schema": schema, "strict": True}}
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "text":
        return None
    raise InputError(f"unknown response mode {mode!r}; choose one of {', '.join(RESPONSE_MODES)}")


# ------------------------------------------------------------------ answers -> layouts
_FENCE_RE = re.compile(r"```(?:json|python|text)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def _json_object(text: str) -> dict | list | None:
    """The first JSON object (or list of objects) in ``text``, ignoring prose and code fences around it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        except RecursionError:  # "[[[[..." nested deeper than Python's stack: no layout, say so below
            return None
        if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            return value
    return None


def _layout_from_json(value: dict | list, prompt: str) -> tuple[Layout, list[str]]:
    """A JSON answer (the :class:`LayoutAnswer` shape, normalized boxes) -> ``(layout, changes)``."""
    data = {"objects": value} if isinstance(value, list) else dict(value)
    if "objects" not in data:
        raise LayoutError('the JSON answer has no "objects" list; answer {"objects": [...], "background": ..., "negative": ...}')
    objects = data["objects"]
    if not isinstance(objects, list):
        raise LayoutError(f'"objects" must be a list of {{"name", "phrase", "box"}} objects, got {type(objects).__name__}')
    filled = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise LayoutError(f'objects.{i}: must be an object {{"name", "phrase", "box"}}, got {obj!r}')
        obj = dict(obj)
        if "phrase" not in obj and isinstance(obj.get("name"), str):
            obj["phrase"] = obj["name"]  # a bare kind is its own phrase
        if "name" not in obj and isinstance(obj.get("phrase"), str):
            obj["name"] = name_of_phrase(obj["phrase"])
        filled.append(obj)
    negative = data.get("negative", "")
    if isinstance(negative, list):
        negative = ", ".join(str(v) for v in negative)
    layout_dict = {
        "prompt": prompt,
        "background": data.get("background", "") or "",
        "negative": negative or "",
        "objects": filled,
    }
    layout_dict, changes = clip_to_canvas(layout_dict)
    return Layout.parse(layout_dict), changes


#: Longest answer read: a layout of 30 objects is ~4,000 characters; a model stuck in a loop writes until its
#: token limit, and every retry would parse that again.
MAX_ANSWER_CHARS = 32_000
#: The LLM planner's default ``max_tokens``: room for 30 objects' JSON (~1,500 tokens), not for a loop.
DEFAULT_MAX_TOKENS = 4096


def answer_to_layout(answer: str, prompt: str) -> tuple[Layout, list[str]]:
    """A raw model answer -> ``(layout, changes)``: the JSON schema, else the LMD or Attention Refocusing text format.

    Raises :class:`LayoutError` with a message meant to be fed back to the model.
    """
    if not isinstance(answer, str) or not answer.strip():
        raise LayoutError('the answer is empty; answer with the JSON object {"objects": [...], "background": ..., "negative": ...}')
    if len(answer) > MAX_ANSWER_CHARS:
        raise LayoutError(
            f"the answer is {len(answer):,} characters long, more than any layout needs ({MAX_ANSWER_CHARS:,}); "
            'answer with the JSON object {"objects": [...], "background": ..., "negative": ...} alone'
        )
    fenced = _FENCE_RE.findall(answer)
    texts = [*fenced, answer] if fenced else [answer]
    for text in texts:
        value = _json_object(text)
        if value is not None and (isinstance(value, list) or "objects" in value):
            return _layout_from_json(value, prompt)
    return parse_peer_answer(texts[0], prompt)


def plan_with_retries(
    complete: Callable[[Messages], str], prompt: str, *, max_retries: int = 2, feedback: str | None = None
) -> tuple[Layout, list[str], str]:
    """Ask ``complete(messages) -> answer`` for ``prompt``'s layout, feeding validation errors back.

    ``feedback`` says what an image drawn from an earlier layout got wrong (the agent's re-plan).
    Returns ``(layout, changes, accepted_answer)``; after ``max_retries`` rejected retries raises
    :class:`LayoutError` quoting the last error.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"`max_retries` must be an int >= 0, got {max_retries!r}")
    messages = prompts.layout_messages(prompt, feedback)
    last_error = ""
    for attempt in range(max_retries + 1):
        answer = complete(messages)
        try:
            layout, changes = answer_to_layout(answer, prompt)
            return layout, changes, answer
        except LayoutError as err:
            last_error = str(err)
            logger.info("attempt %d for %r rejected: %s", attempt + 1, prompt, last_error)
            messages = [*messages, {"role": "assistant", "content": answer or ""}, prompts.retry_message(last_error)]
    raise LayoutError(
        f"the model gave no usable layout for {prompt!r} in {max_retries + 1} attempts; last error: {last_error}"
    )


def check_prompt(prompt: object) -> str:
    """``prompt`` stripped; a non-str is a TypeError, an empty one a :class:`LayoutError`."""
    if not isinstance(prompt, str):
        raise TypeError(f"`prompt` must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise LayoutError("`prompt` is empty; give the text the image should show")
    return prompt.strip()


def check_feedback(feedback: object) -> str | None:
    """``feedback`` stripped (None when empty); a non-str is a TypeError."""
    if feedback is None:
        return None
    if not isinstance(feedback, str):
        raise TypeError(f"`feedback` must be a str (what the earlier image got wrong) or None, got {type(feedback).__name__}")
    return feedback.strip() or None


def check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise InputError(f"`temperature` must be a number in [0, 2], got {temperature!r}")
    if not 0 <= temperature <= 2:
        raise InputError(f"`temperature` must be in [0, 2] (0 is deterministic), got {temperature}")
    return float(temperature)


# ------------------------------------------------------------------ the planner
class LLMPlanner:
    """Layouts from an OpenAI-compatible chat server (see the module docstring for the options)."""

    name = "llm"
    #: Its answer's objects are its own reading of the prompt: :func:`scenewright.layout.plan.plan` builds the
    #: plan's spec from them (:mod:`scenewright.layout.answer_spec`), not from the text parser's reading alone.
    own_reading = True

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_retries: int = 2,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        timeout: float = 60.0,
        client_retries: int = 2,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        structured_output: bool = True,
    ):
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        model = model or os.environ.get("SCENEWRIGHT_LLM_MODEL") or (None if self.base_url else DEFAULT_MODEL)
        if not model:
            raise InputError(
                f"no model name for the server at {redact_url(self.base_url)}: pass `model` (--model) or set SCENEWRIGHT_LLM_MODEL "
                "to a model the server serves (e.g. the name `ollama list` or vLLM's --model shows)"
            )
        self.model = model
        self.temperature = check_temperature(temperature)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"`max_retries` must be an int >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        if not timeout > 0:
            raise InputError(f"`timeout` must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.client_retries = int(client_retries)
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InputError(f"`max_tokens` must be a positive int or None, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.cache = AnswerCache(cache_dir) if cache else None
        # Kept private and out of repr, logs and the cache.
        self.__api_key = api_key or os.environ.get("OPENAI_API_KEY") or (PLACEHOLDER_API_KEY if self.base_url else None)
        self._response_mode = RESPONSE_MODES[0] if structured_output else "text"
        self._client = None

    def __repr__(self) -> str:
        return f"LLMPlanner(model={self.model!r}, base_url={redact_url(self.base_url)!r}, temperature={self.temperature})"

    @property
    def server(self) -> str:
        """The server's URL as shown to people: credentials in it are redacted (:func:`redact_url`)."""
        return redact_url(self.base_url) or "https://api.openai.com/v1"

    # -------------------------------------------------------------- planning
    def plan(self, prompt: str, *, seed: int = 0, feedback: str | None = None) -> Layout:
        """The layout for ``prompt``; ``seed`` is the sample index (cache key) and the request's seed.

        ``feedback`` (what an image of an earlier layout got wrong) goes to the model with the caption.
        """
        prompt = check_prompt(prompt)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"`seed` must be an int >= 0, got {seed!r}")
        feedback = check_feedback(feedback)
        key = cache_key(self.model, prompts.template_hash(), prompt, self.temperature, seed, feedback=feedback or "")
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                try:
                    layout, changes = answer_to_layout(cached, prompt)
                except LayoutError as err:  # e.g. written by an older parser: ask again
                    logger.warning("cached answer for %r no longer parses (%s); asking the server", prompt, err)
                else:
                    logger.info("cache hit for %r (%s)", prompt, self.cache.path(key).name)
                    _log_changes(changes)
                    return layout
        layout, changes, answer = plan_with_retries(
            lambda m: self.complete(m, seed=seed), prompt, max_retries=self.max_retries, feedback=feedback
        )
        if self.cache is not None:
            self.cache.put(key, answer)
        _log_changes(changes)
        return layout

    def complete(self, messages: Messages, *, seed: int = 0) -> str:
        """One chat completion; falls back from structured output when the server rejects it."""
        import openai

        client = self._get_client()
        while True:
            request = {"model": self.model, "messages": messages, "temperature": self.temperature, "seed": seed}
            if self.max_tokens is not None:
                request["max_tokens"] = self.max_tokens
            fmt = response_format(self._response_mode)
            if fmt is not None:
                request["response_format"] = fmt
            try:
                response = client.chat.completions.create(**request)
            except openai.BadRequestError as err:
                if self._response_mode == RESPONSE_MODES[-1] or not _REJECTED_FORMAT_RE.search(_error_text(err)):
                    raise self._server_error(err) from None
                following = RESPONSE_MODES[RESPONSE_MODES.index(self._response_mode) + 1]
                logger.warning(
                    "the server at %s rejected response_format %r (%s); retrying with %r",
                    self.server,
                    self._response_mode,
                    self._scrub(_error_text(err)),
                    following,
                )
                self._response_mode = following
                continue
            except openai.OpenAIError as err:
                raise self._server_error(err) from None
            if not response.choices:
                return ""
            return response.choices[0].message.content or ""

    # -------------------------------------------------------------- server plumbing
    def _get_client(self):
        if self._client is None:
            if not self.__api_key:
                raise LLMServerError(
                    "no API key for hosted OpenAI: set OPENAI_API_KEY, or pass --base-url (OPENAI_BASE_URL) to use a "
                    "local OpenAI-compatible server (vLLM, Ollama, llama.cpp), which needs no key"
                )
            import openai

            self._client = openai.OpenAI(
                api_key=self.__api_key, base_url=self.base_url, timeout=self.timeout, max_retries=self.client_retries
            )
        return self._client

    def _scrub(self, text: str) -> str:
        """What the server or client said, without the API key or the base URL's credentials."""
        key = self.__api_key
        if key and key != PLACEHOLDER_API_KEY and len(key) >= 4:
            text = text.replace(key, "***")
        if self.base_url and redact_url(self.base_url) != self.base_url:
            text = text.replace(self.base_url, redact_url(self.base_url))
            userinfo = urlsplit(self.base_url).netloc.rpartition("@")[0]
            text = text.replace(userinfo, "***")
        return text

    def _server_error(self, err: Exception) -> LLMServerError:
        """An actionable error for a failed request (the key is scrubbed from whatever the server said)."""
        import openai

        detail = self._scrub(_error_text(err))
        where = f"the LLM server at {self.server}"
        if isinstance(err, openai.APIConnectionError):
            hint = (
                f"cannot reach {where} ({detail}); check --base-url / OPENAI_BASE_URL (it usually ends in /v1) "
                "and that the server is running"
            )
        elif isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            hint = f"{where} rejected the API key ({err.status_code}: {detail}); check OPENAI_API_KEY"
        elif isinstance(err, openai.NotFoundError):
            hint = (
                f"{where} answered 404 for model {self.model!r} ({detail}); check --model / SCENEWRIGHT_LLM_MODEL "
                "and that --base-url ends in /v1"
            )
        elif isinstance(err, openai.RateLimitError):
            hint = f"{where} is rate limiting requests (429: {detail}); wait, or lower the request rate"
        elif isinstance(err, openai.APIStatusError):
            hint = (
                f"{where} answered {err.status_code} ({detail}); check the server's log, the model name "
                f"{self.model!r} and the base URL"
            )
        else:
            hint = f"request to {where} failed ({detail}); check the base URL, the key and the model name"
        return LLMServerError(hint)


def _error_text(err: Exception) -> str:
    text = str(getattr(err, "message", "") or err).strip()
    return " ".join(text.split())[:300] or type(err).__name__


def _log_changes(changes: list[str]) -> None:
    for change in changes:
        logger.warning("repaired the answer: %s", change)
