"""Stable Diffusion's CLIP tokenizer, built offline from the BPE file that open_clip ships; a T5-style tokenizer.

SD1.x uses OpenAI CLIP ViT-L/14's tokenizer (49408 tokens: 256 bytes, 256 bytes + ``</w>``,
48894 merges, ``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407). Its vocabulary and merges
are fully determined by ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI's CLIP repo, copied by open_clip),
so tests and offline machines get the real tokenizer without the hub.

FLUX.1 and SD3 read their prompt through T5's SentencePiece Unigram tokenizer (``google/t5-v1_1-xxl``).
:func:`build_t5_tokenizer` builds one of the same kind offline, for tiny test models: the same special
tokens and ids (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2), ``▁``-prefixed word pieces, no BOS token and
``</s>`` appended; its vocabulary is the words of the prompt sets shipped under ``eval/data``, not T5's 32k.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import re
import string
from collections import Counter
from collections.abc import Iterable
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


T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2, as in T5's spiece.model
T5_MODEL_MAX_LENGTH = 512  # FLUX.1-dev reads 512 T5 tokens (schnell 256); SD3 reads 256
WORD_PIECE = "\u2581"  # "▁": SentencePiece's mark of a word start (a space before it)
# Prompt sets whose words make the T5 vocabulary: plain-text prompts, one per line (see eval/data/README.md).
T5_WORD_SOURCES = ("t2i_compbench/spatial_val.txt", "t2i_compbench/numeracy_val.txt", "drawbench/drawbench.csv")
EVAL_DATA = Path(__file__).resolve().parent.parent / "eval" / "data"
CHARACTER_SCORE = -20.0  # log-probability of a single-character piece: far below any word, so words win


def shipped_prompt_words(sources: Iterable[str] = T5_WORD_SOURCES) -> Counter[str]:
    """Word counts (case kept, as T5's vocabulary) in the prompt sets shipped under ``eval/data``."""
    counts: Counter[str] = Counter()
    for source in sources:
        counts.update(re.findall(r"[A-Za-z]+|[0-9]", (EVAL_DATA / source).read_text(encoding="utf-8")))
    return counts


def t5_unigram_vocab(word_counts: Counter[str]) -> list[tuple[str, float]]:
    """T5-ordered Unigram pieces with log-probability scores: specials, ``▁word`` pieces, then single characters.

    Words score their log frequency (Kudo 2018, SentencePiece's Unigram LM); every printable ASCII character,
    alone and after ``▁``, scores :data:`CHARACTER_SCORE`, so any ASCII text segments without ``<unk>``.
    """
    total = sum(word_counts.values())
    words = sorted(word_counts, key=lambda word: (-word_counts[word], word))
    pieces = [(WORD_PIECE + word, math.log(word_counts[word] / total)) for word in words]
    known = {piece for piece, _ in pieces}
    characters = [c for c in string.printable if not c.isspace()]
    for piece in [WORD_PIECE] + [WORD_PIECE + c for c in characters] + characters:
        if piece not in known:
            pieces.append((piece, CHARACTER_SCORE))
            known.add(piece)
    return [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0)] + pieces


def build_t5_tokenizer(word_counts: Counter[str] | None = None, model_max_length: int = T5_MODEL_MAX_LENGTH):
    """A T5-style ``T5TokenizerFast`` (a ``tokenizers`` Unigram model) over the shipped prompts' words, offline.

    As ``google/t5-v1_1-xxl``'s tokenizer: Metaspace pre-tokenization (``"a cat"`` -> ``▁a ▁cat``), ``</s>``
    appended and no BOS token, ``<pad>`` = 0 pads, unknown characters -> ``<unk>`` = 2. No sentinel
    (``<extra_id_*>``) tokens: the text encoders of FLUX and SD3 never see them. ``word_counts`` (word -> count)
    replaces the shipped prompts' words.
    """
    from transformers import T5TokenizerFast  # heavy: only tests and loading build tokenizers

    vocab = t5_unigram_vocab(word_counts if word_counts is not None else shipped_prompt_words())
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


__all__ = [
    "build_clip_tokenizer",
    "build_t5_tokenizer",
    "clip_bpe_path",
    "clip_vocab_and_merges",
    "shipped_prompt_words",
    "t5_unigram_vocab",
]
