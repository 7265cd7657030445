"""Tokenizers: train / load WordPiece (BERT), byte-level BPE (RoBERTa), Unigram (ALBERT),
characters (BERT-Chinese, ERNIE).

Built on the Hugging Face `tokenizers` library; saved directories load in `transformers`.
"""

from __future__ import annotations

from plmkit.tokenizers.base import Tokenizer
from plmkit.tokenizers.pipeline import KINDS
from plmkit.tokenizers.train import train_tokenizer

__all__ = ["KINDS", "Tokenizer", "train_tokenizer"]
