"""Stable Diffusion's CLIP tokenizer, built offline from the BPE file that open_clip ships.

SD1.x uses OpenAI CLIP ViT-L/14's tokenizer (49408 tokens: 256 bytes, 256 bytes + ``</w>``,
48894 merges, ``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407). Its vocabulary and merges
are fully determined by ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI's CLIP repo, copied by open_clip),
so tests and offline machines get the real tokenizer without the hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges (openai/CLIP simple_tokenizer.py)
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77


def clip_bpe_path() -> Path:
    """Path of open_clip's ``bpe_simple_vocab_16e6.txt.gz``, found without importing open_clip (slow)."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"cannot find open_clip's {BPE_FILE} (looked in {locations or 'no open_clip install'}); "
        "install it with `pip install open_clip_torch`"
    )


def clip_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's token -> id table and ranked merges, built exactly as openai/CLIP's ``SimpleTokenizer``."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lines = gzip.open(bpe_path or clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(save_dir: str | Path | None = None):
    """transformers' ``CLIPTokenizer`` equal to SD1.x's (``openai/clip-vit-large-patch14``), built offline.

    Pads with ``<|endoftext|>`` and truncates at 77 tokens, as SD's ``tokenizer/`` folder does.
    With ``save_dir``, also writes CLIP's ``vocab.json`` + ``merges.txt`` and the tokenizer config there,
    so ``CLIPTokenizer.from_pretrained(save_dir)`` (and a pipeline's ``tokenizer/`` folder) loads it.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
    )
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        # merges.txt in the hub's format: a version header, then one "left right" pair per line.
        (save_dir / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
        )
        tokenizer.save_pretrained(save_dir)
    return tokenizer


__all__ = ["build_clip_tokenizer", "clip_bpe_path", "clip_vocab_and_merges"]
