"""Sentence embeddings of a model directory: `plmkit.tasks.embed.embed` with the directory's
model, tokenizer and sentence-transformers setup."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from plmkit.interop.native import load, tokenizer_dir
from plmkit.tasks.embed import embed, embedding_setup
from plmkit.tokenizers import Tokenizer


def embed_dir(model_dir: str | Path, texts: Sequence[str], pooling: str | None = None,
              normalize: bool | None = None, max_seq_len: int | None = None,
              batch_size: int = 32) -> np.ndarray:
    """`embed` with the model and tokenizer of `model_dir`, its sentence-transformers setup
    (if any) unless `pooling` / `normalize` / `max_seq_len` say otherwise."""
    setup = embedding_setup(model_dir).given(pooling, normalize, max_seq_len)
    model = load(model_dir)
    return embed(model, Tokenizer.load(tokenizer_dir(Path(model_dir))), texts, setup,
                 batch_size)
