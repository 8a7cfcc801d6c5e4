"""The local transformers planner, loaded through the real `from_pretrained(folder)` path from a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from scenewright import prompts
from scenewright.layout.local import LocalPlanner
from scenewright.layout.planners import get_planner
from scenewright.layout.schema import LayoutError
from scenewright.errors import ModelNotAvailableError

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"


def _save_tiny_model(folder, chat_template: str | None) -> None:
    """A 1-layer GPT-2 with a word-level tokenizer over the planner's own prompt words, saved like a hub checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = set()
    for message in prompts.layout_messages("a cat") + [prompts.retry_message("x")]:
        words.update(word for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(message["content"]))
    vocab = {tok: i for i, tok in enumerate(["[UNK]", "[PAD]", "[EOS]", *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=4096, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=2, eos_token_id=2, pad_token_id=1)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)


@pytest.fixture(scope="module", params=[CHAT_TEMPLATE, None], ids=["chat-template", "plain"])
def tiny_model_folder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-lm")
    _save_tiny_model(folder, request.param)
    return folder


def test_random_model_ends_in_a_clear_error_after_bounded_retries(tiny_model_folder):
    planner = get_planner("local", model=str(tiny_model_folder), max_new_tokens=6, max_retries=2)
    assert isinstance(planner, LocalPlanner)
    seen: list[list[dict]] = []
    complete = planner.complete
    planner.complete = lambda messages, seed=0: seen.append(messages) or complete(messages, seed=seed)
    with pytest.raises(LayoutError, match=r"no usable layout for 'two cats' in 3 attempts; last error: "):
        planner.plan("two cats")
    assert [len(m) for m in seen] == [2, 4, 6]  # each retry carries the answer and its error
    assert seen[1][-1]["content"].startswith("Your answer could not be used:")


def test_prompt_uses_the_chat_template_when_the_tokenizer_has_one(tiny_model_folder):
    planner = LocalPlanner.from_pretrained(tiny_model_folder, max_new_tokens=4)
    text = planner.render(prompts.layout_messages("a cat"))
    if planner.tokenizer.chat_template:
        assert text.startswith("<|system|> ") and text.endswith("<|assistant|> ")
    else:
        assert text.startswith("system: ") and text.endswith("\n\nassistant:")
    assert "Caption: a cat" in text


def test_completion_is_only_the_new_tokens_and_seeded(tiny_model_folder):
    planner = LocalPlanner.from_pretrained(tiny_model_folder, max_new_tokens=5, temperature=1.0)
    messages = prompts.layout_messages("a cat")
    first = planner.complete(messages, seed=3)
    assert first == planner.complete(messages, seed=3)  # same seed, same sample
    assert "Caption" not in first and len(first.split()) <= 5
    state = torch.random.get_rng_state()
    planner.complete(messages, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's generator is untouched


def test_a_valid_answer_goes_through_the_shared_parser(tiny_model_folder):
    planner = LocalPlanner.from_pretrained(tiny_model_folder, max_new_tokens=4)
    answer = json.dumps({"objects": [{"name": "cat", "phrase": "a cat", "box": [0.2, 0.2, 0.7, 0.8]}], "background": "", "negative": ""})
    planner.complete = lambda messages, seed=0: answer
    assert planner.plan("a cat").boxes == [(0.2, 0.2, 0.7, 0.8)]


def test_missing_model_says_to_download_elsewhere_and_pass_a_folder(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="download it on a connected machine") as info:
        LocalPlanner.from_pretrained(tmp_path / "nope")
    assert "--model <folder>" in str(info.value)
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE is set"):
        LocalPlanner.from_pretrained("nobody/no-such-model-scenewright")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match="empty"):
        LocalPlanner.from_pretrained(tmp_path / "empty")


def test_bad_options_name_the_field(tiny_model_folder):
    with pytest.raises(ValueError, match="max_new_tokens"):
        LocalPlanner.from_pretrained(tiny_model_folder, max_new_tokens=0)
    with pytest.raises(ValueError, match="needs `model`"):
        get_planner("local")
