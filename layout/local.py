"""The local planner: a layout from an in-process transformers causal LM, no server.

Same prompt templates, answer parsing and retry loop as :mod:`scenewright.layout.llm`
(:func:`~scenewright.layout.llm.plan_with_retries`); only "complete these messages" differs. The tokenizer's chat
template is used when it has one, else the messages are joined as ``role: content`` paragraphs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from scenewright.errors import InputError, ModelNotAvailableError
from scenewright.layout.llm import check_feedback, check_prompt, check_temperature, plan_with_retries
from scenewright.layout.schema import Layout

logger = logging.getLogger(__name__)


class LocalPlanner:
    """Layouts from a transformers ``AutoModelForCausalLM`` and its tokenizer."""

    name = "local"
    #: Its answer's objects are its own reading of the prompt: :func:`scenewright.layout.plan.plan` builds the
    #: plan's spec from them (:mod:`scenewright.layout.answer_spec`), not from the text parser's reading alone.
    own_reading = True

    def __init__(
        self,
        model,
        tokenizer,
        *,
        temperature: float = 0.0,
        max_new_tokens: int = 512,
        max_retries: int = 2,
    ):
        if not callable(getattr(model, "generate", None)):
            raise TypeError(f"`model` must be a transformers causal LM with .generate, got {type(model).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"`tokenizer` must be a transformers tokenizer, got {type(tokenizer).__name__}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"`max_new_tokens` must be a positive int, got {max_new_tokens!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"`max_retries` must be an int >= 0, got {max_retries!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.temperature = check_temperature(temperature)
        self.max_new_tokens = max_new_tokens
        self.max_retries = max_retries

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        **planner_options,
    ) -> LocalPlanner:
        """Load the tokenizer and model from a local folder (or a hub id when online) and build the planner."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        name = str(model)
        path = Path(name).expanduser()
        is_local = path.exists()
        if not is_local and (name.startswith((".", "/", "~")) or name.count("/") > 1):
            raise _not_available(name, f"folder {str(path)!r} does not exist")
        source = str(path) if is_local else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            lm = AutoModelForCausalLM.from_pretrained(source, **({"dtype": torch_dtype} if torch_dtype is not None else {}))
        except Exception as err:  # hub / OSError / config errors: one actionable message
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise _not_available(name, f"{type(err).__name__}: {first_line}") from err
        if device is not None:
            lm = lm.to(device)
        return cls(lm, tokenizer, **planner_options)

    def plan(self, prompt: str, *, seed: int = 0, feedback: str | None = None) -> Layout:
        """The layout for ``prompt``; ``seed`` seeds sampling (ignored at temperature 0, which decodes greedily).

        ``feedback`` (what an image of an earlier layout got wrong) goes to the model with the caption.
        """
        prompt = check_prompt(prompt)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"`seed` must be an int >= 0, got {seed!r}")
        layout, changes, _ = plan_with_retries(
            lambda m: self.complete(m, seed=seed), prompt, max_retries=self.max_retries, feedback=check_feedback(feedback)
        )
        for change in changes:
            logger.warning("repaired the answer: %s", change)
        return layout

    def render(self, messages: list[dict[str, str]]) -> str:
        """The text the model reads: the tokenizer's chat template, else ``role: content`` paragraphs."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turns = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n\n".join([*turns, "assistant:"])

    @torch.no_grad()
    def complete(self, messages: list[dict[str, str]], *, seed: int = 0) -> str:
        """Generate the answer to ``messages`` (new tokens only, special tokens removed)."""
        text = self.render(messages)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        device = next(self.model.parameters()).device
        input_ids = inputs["input_ids"].to(device)  # (1, T)
        attention_mask = inputs.get("attention_mask")
        options = {"max_new_tokens": self.max_new_tokens, "do_sample": self.temperature > 0}
        if self.temperature > 0:
            options["temperature"] = self.temperature
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # sampling reads the global generator; restored below so callers are unaffected
        try:
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask.to(device) if attention_mask is not None else None,
                pad_token_id=pad_id,
                **options,
            )  # (1, T + new)
        finally:
            torch.random.set_rng_state(generator_state)
        return self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)


def _not_available(name: str, reason: str) -> OSError:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    return ModelNotAvailableError(
        f"cannot load the local planner's model {name!r} ({reason}{'; HF_HUB_OFFLINE is set' if offline else ''}). "
        f"If this machine has no internet, download it on a connected machine "
        f"(`huggingface-cli download <repo> --local-dir <folder>`), copy the folder here and pass it: "
        "--planner local --model <folder>"
    )
