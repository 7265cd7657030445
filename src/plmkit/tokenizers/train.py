"""`train_tokenizer`: learn a WordPiece, byte-level BPE or Unigram vocabulary from texts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from tokenizers.pre_tokenizers import ByteLevel

from plmkit.errors import UserError
from plmkit.tokenizers.base import Tokenizer
from plmkit.tokenizers.pipeline import (
    KINDS,
    SPECIALS,
    empty_backend,
    set_post_processor,
    trainer,
)


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a ``kind`` tokenizer ("wordpiece", "bpe", "unigram" or "char") of at most
    ``vocab_size``.

    The special tokens take ids 0..4 (see `plmkit.tokenizers.pipeline.SPECIALS`).
    ``min_frequency`` applies to WordPiece and BPE merges; Unigram prunes by likelihood instead.
    """
    if kind not in KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r} (choose from {', '.join(KINDS)})")
    minimum = len(SPECIALS[kind].order) + (len(ByteLevel.alphabet()) if kind == "bpe" else 1)
    if vocab_size < minimum:
        raise UserError(f"vocab_size {vocab_size} is too small for {kind} (at least {minimum})")
    backend = empty_backend(kind, lowercase)
    try:
        backend.train_from_iterator(_non_empty(texts), trainer(kind, vocab_size, min_frequency))
    except Exception as e:  # Unigram raises a bare Exception when the alphabet does not fit
        if "not large enough" not in str(e):
            raise
        raise UserError(_too_small(kind, vocab_size)) from None
    if backend.get_vocab_size(with_added_tokens=True) > vocab_size:  # WordPiece keeps all chars
        raise UserError(_too_small(kind, vocab_size))
    set_post_processor(backend, kind, SPECIALS[kind])
    return Tokenizer(backend, kind, SPECIALS[kind], lowercase)


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    """``texts`` without blank ones; a `UserError` if none is left."""
    filled = (t for t in texts if t.strip())
    first = next(filled, None)
    if first is None:
        raise UserError("no text to train on (the corpus is empty or blank)")
    return itertools.chain([first], filled)


def _too_small(kind: str, vocab_size: int) -> str:
    return (
        f"vocab_size {vocab_size} is too small for the {kind} special tokens and the "
        "characters of the corpus; raise --vocab-size"
    )
