"""Jinja2 templates that prompt an LLM for layouts (shipped as package data).

``layout_system.j2`` holds the instructions (the JSON answer schema, normalized boxes) and renders the
in-context examples from ``layout_examples.j2``; ``layout_user.j2`` asks for one caption (with the agent's feedback on an earlier image, when given);
``layout_retry.j2`` feeds a validation error back. :func:`template_hash` covers every template, so a
wording change invalidates cached LLM answers.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources

import jinja2

#: Every template the layout planners render; all of them enter :func:`template_hash`.
TEMPLATE_NAMES = ("layout_system.j2", "layout_examples.j2", "layout_user.j2", "layout_retry.j2")


def _source(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


class _PackageLoader(jinja2.BaseLoader):
    """Loads templates through importlib.resources, so zipped and non-editable installs work."""

    def get_source(self, environment, template):
        if template not in TEMPLATE_NAMES:
            raise jinja2.TemplateNotFound(template)
        return _source(template), None, lambda: True


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The jinja2 environment: strict undefined variables and a ``json`` filter that keeps text readable."""
    env = jinja2.Environment(
        loader=_PackageLoader(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # plain text for an LLM, never HTML
    )
    # jinja's own `tojson` escapes quotes and '<' for HTML; the model should read plain JSON.
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def load_template(name: str) -> jinja2.Template:
    """One of :data:`TEMPLATE_NAMES` as a jinja2 template."""
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATE_NAMES)}")
    return environment().get_template(name)


@lru_cache(maxsize=1)
def template_hash() -> str:
    """sha256 (first 16 hex digits) over every template's name and text: part of the LLM cache key."""
    digest = hashlib.sha256()
    for name in TEMPLATE_NAMES:
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(_source(name).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def in_context_examples() -> list[dict]:
    """The worked examples: ``[{"caption": str, "answer": {"objects": [...], "background": str, "negative": str}}]``."""
    return list(load_template("layout_examples.j2").module.examples)


def layout_messages(prompt: str, feedback: str | None = None) -> list[dict[str, str]]:
    """The chat messages asking for ``prompt``'s layout: system instructions with examples, then the caption.

    ``feedback`` (the agent's words for what an image drawn from an earlier layout got wrong) joins the
    caption's turn, so that chat templates that demand alternating roles still accept the messages.
    """
    system = load_template("layout_system.j2").render().strip()
    user = load_template("layout_user.j2").render(caption=prompt, feedback=(feedback or "").strip()).strip()
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def retry_message(error: str) -> dict[str, str]:
    """The user turn that feeds a rejected answer's validation error back to the model."""
    return {"role": "user", "content": load_template("layout_retry.j2").render(error=error).strip()}


__all__ = ["TEMPLATE_NAMES", "in_context_examples", "layout_messages", "load_template", "retry_message", "template_hash"]
