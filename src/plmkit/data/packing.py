"""RoBERTa's input formats without NSP (Liu et al. 2019, section 4.2):

- FULL-SENTENCES: each input is packed with full sentences taken contiguously from one or more
  documents, up to the length; going on into the next document adds an extra separator token.
- DOC-SENTENCES: the same, but an input never crosses a document, so inputs near a document's
  end may be shorter; batches then grow so that tokens per batch stay about constant
  (`TokenBudgetBatches`).

An input is ``<s> x </s>`` with the tokenizer's cls / sep ids (``<s>`` / ``</s>`` in the byte-level
BPE vocabulary), one segment, built and masked by `data/bert.py`'s `build_instance` and
`collate`: static masking (one mask per dupe copy) or dynamic (a fresh mask each time a sequence
is fed, section 4.1). The fields are BERT's, so the `mlm` objective reads them unchanged.
A sentence longer than an input is cut into input-sized pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
import torch

from plmkit.data.batches import Batches
from plmkit.data.bert import (
    BertInstanceConfig,
    BertVocab,
    Documents,
    Instance,
    WindowStream,
    build_instance,
)
from plmkit.data.options import DataOptions

Format = Literal["full-sentences", "doc-sentences"]
FORMATS = ("full-sentences", "doc-sentences")

# Tags that keep the random streams derived from one seed apart (as `data/bert.py`'s).
_MASKS, _WINDOW = 2, 3


class _Packer:
    """Greedily fills sequences of at most `room` tokens with pieces that are never split."""

    def __init__(self, room: int):
        self.room = room
        self.parts: list[np.ndarray] = []
        self.length = 0
        self.sequences: list[np.ndarray] = []

    def add(self, piece: np.ndarray) -> None:
        if self.length + len(piece) > self.room:
            self.flush()
        self.parts.append(piece)
        self.length += len(piece)

    def separate(self, sep_id: int, next_length: int) -> None:
        """A document separator, when the next piece still fits after it."""
        if self.parts and self.length + 1 + next_length <= self.room:
            self.add(np.array([sep_id], dtype=np.int64))

    def flush(self) -> None:
        if self.parts:
            self.sequences.append(np.concatenate(self.parts).astype(np.int64))
        self.parts, self.length = [], 0


def pack_sentences(documents: Iterable[list[np.ndarray]], room: int, sep_id: int,
                   cross_documents: bool) -> list[np.ndarray]:
    """Sequences of at most `room` tokens of whole, contiguous sentences.

    With `cross_documents` (FULL-SENTENCES) a sequence goes on into the next document after a
    `sep_id`; without (DOC-SENTENCES) each document ends its last sequence.
    """
    packer = _Packer(room)
    for document in documents:
        if not cross_documents:
            packer.flush()
        for j, sentence in enumerate(document):
            for k in range(0, len(sentence), room):
                piece = sentence[k : k + room]
                if j == k == 0:
                    packer.separate(sep_id, len(piece))
                packer.add(piece)
    packer.flush()
    return packer.sequences


class PackedStream(WindowStream):
    """Packed, masked MLM sequences (a `WindowStream`).

    Epoch ``e`` uses dupe copy ``c = e % dupe_factor``: the documents in the copy's seeded order,
    packed a window of ``window`` documents at a time (a sequence never spans two windows), so
    the sequences and their static masks repeat with the copy; the sequences of a window are
    shuffled anew each epoch.
    """

    def __init__(self, corpus: Documents, vocab: BertVocab, config: BertInstanceConfig,
                 input_format: Format, seed: int = 0, window: int = 256) -> None:
        if config.nsp:
            raise ValueError("packed sentences have one segment: use a config with nsp=False")
        if input_format not in FORMATS:
            raise ValueError(f"input_format must be one of {FORMATS}, not {input_format!r}")
        super().__init__(corpus, vocab, config, seed, window)
        self.input_format = input_format

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "format": self.input_format}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["format"] != self.input_format:
            raise ValueError(f"the saved stream used the input format {state['format']!r}")
        super().load_state_dict(state)

    def window_sequences(self, copy: int, block: int) -> list[np.ndarray]:
        """The unmasked token sequences (no <s> / </s>) of one window of one dupe copy."""
        docs = self.document_order(copy)[block * self.window : (block + 1) * self.window]
        return pack_sentences((self.corpus.document(int(d)) for d in docs),
                              self.config.max_num_tokens, self.vocab.sep_id,
                              cross_documents=self.input_format == "full-sentences")

    def window_instances(self, epoch: int, block: int) -> list[Instance]:
        """The instances of one window in one epoch, shuffled (a pure function of the position)."""
        copy = epoch % self.config.dupe_factor
        empty = np.zeros(0, dtype=np.int64)
        instances = []
        for j, tokens in enumerate(self.window_sequences(copy, block)):
            pair = (tokens, empty, False)
            if self.config.static_masking:
                rng = np.random.default_rng([self.seed, _MASKS, copy, block, j])
                instances.append(build_instance(pair, self.vocab, self.config, self.spec, rng))
            else:
                instance = build_instance(pair, self.vocab, self.config, self.spec, None)
                entropy = np.random.SeedSequence([self.seed, _MASKS, epoch, block, j])
                instance["mask_seed"] = entropy.generate_state(1, np.uint64)
                instances.append(instance)
        rng = np.random.default_rng([self.seed, _WINDOW, epoch, block])
        return [instances[k] for k in rng.permutation(len(instances))]


class TokenBudgetBatches:
    """DOC-SENTENCES batching: sequences are taken until they hold at least `tokens` real
    tokens (so a batch of short sequences has more of them). Nothing is read ahead, so the
    stream's position resumes exactly between batches."""

    def __init__(self, stream: PackedStream, tokens: int):
        self.stream = stream
        self.tokens = tokens

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        chunk: list[Instance] = []
        count = 0
        for instance in self.stream:
            chunk.append(instance)
            count += int(instance["input_mask"].sum())
            if count >= self.tokens:
                yield self.stream.collate(chunk)
                chunk, count = [], 0

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def packed_batches(corpus: Documents, vocab: BertVocab, options: DataOptions, seq_len: int,
                   seed: int) -> Batches | TokenBudgetBatches:
    """`options.batch_size` packed sequences per batch (FULL-SENTENCES), or about
    `batch_size * seq_len` tokens per batch (DOC-SENTENCES)."""
    config = BertInstanceConfig.from_options(options, seq_len, nsp=False)
    stream = PackedStream(corpus, vocab, config, options.input_format, seed)
    if options.input_format == "doc-sentences":
        return TokenBudgetBatches(stream, options.batch_size * seq_len)
    return Batches(stream, options.batch_size)
