"""How pretraining batches are made: the data options an objective's `batches` reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from plmkit.data.masking import MASK_PROB


@dataclass
class DataOptions:
    """Batch size and masking policy (the defaults BERT's; each family's own are in
    `data/masking.py` `FAMILY_MASKING`). `masking`: "static" decides each sequence's mask once per
    dupe copy (BERT, dupe_factor 10); "dynamic" draws a fresh mask every time a sequence is fed
    (RoBERTa section 4.1). `max_ngram` > 1 masks spans of up to that many words, p(n) ∝ 1/n
    (ALBERT). `unit_level` is ERNIE's knowledge-masking level (basic / phrase / entity; the
    `ernie` objective steps through all three) and `entities` a file of extra entity names, one
    a line; `dialogues` is the dialogue file of `ernie+dlm` (None: chatterbot-corpus's Chinese
    conversations). `input_format` is how `mlm` fills a sequence: "segments" as BERT (one
    segment of a document), or RoBERTa's packings of whole sentences (section 4.2,
    `data/packing.py`)."""

    batch_size: int = 32
    masking: Literal["static", "dynamic"] = "static"
    whole_word: bool = False
    mask_prob: float = MASK_PROB
    dupe_factor: int = 10
    max_ngram: int = 1
    input_format: Literal["segments", "full-sentences", "doc-sentences"] = "segments"
    unit_level: Literal["basic", "phrase", "entity"] = "basic"
    entities: str | None = None
    dialogues: str | None = None
