"""Transformer-XL and XLNet batches: the corpus as one token stream cut into `batch_size` rows
(the reference's `batchify`), each row read segment after segment, so that row b of batch t + 1
continues row b of batch t and the model can attend to batch t's cached hidden states.

`LMStream` (Transformer-XL, Dai et al. 2019): inputs are `seq_len` consecutive tokens, targets
the same shifted by one. `XLNetStream` (Yang et al. 2019, reference `data_utils.py`): a segment
is `reuse_len` tokens (the part cached for the next segment, which starts right after it), then
two segments A [SEP] B [SEP] [CLS] with [CLS] at the END; half the time B continues A, else B
is taken from elsewhere in the row. Segment ids are 0 for the reused part, A and its [SEP],
1 for B and its [SEP], 2 for [CLS].

Both are pure functions of (seed, epoch, step, row), so `state_dict` is just the position.
Every batch carries `mem_key` = (stream, epoch, step): an objective carries memory from one
batch to the next only when they are consecutive batches of the same stream.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from plmkit.data.shards import ShardedCorpus
from plmkit.errors import UserError

Instance = dict[str, Any]
_STREAM_IDS = itertools.count()


class XLNetVocab(Protocol):
    cls_id: int
    sep_id: int


def token_rows(corpus: ShardedCorpus, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """All tokens in corpus order cut into `rows` equal rows (rows, L) int64, and each token's
    sentence number (rows, L) (sentences end at document ends too)."""
    sentences = [corpus.sentence(j) for j in range(corpus.num_sentences)]
    tokens = np.concatenate(sentences).astype(np.int64)  # (N,)
    ids = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])  # (N,)
    width = len(tokens) // rows
    return tokens[: rows * width].reshape(rows, width), ids[: rows * width].reshape(rows, width)


class _RowStream(abc.ABC):
    """Rows read `stride` tokens at a time, `span` tokens per segment; yields row after row of
    each step, so `Batches(stream, rows)` makes one batch per step."""

    def __init__(self, corpus: ShardedCorpus, rows: int, span: int, stride: int, seed: int):
        self.tokens, self.sentences = token_rows(corpus, rows)
        self.rows, self.span, self.stride, self.seed = rows, span, stride, seed
        self.steps = (self.tokens.shape[1] - span) // stride + 1 if rows else 0
        if self.tokens.shape[1] < span:
            raise UserError(f"{corpus.name}: {corpus.num_tokens} tokens are too few for "
                            f"{rows} rows of {span} tokens; use a smaller --batch-size or "
                            "--seq-len")
        self.stream_id = next(_STREAM_IDS)
        self._epoch = self._step = self._row = 0

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self._epoch, "step": self._step, "row": self._row,
                "stream_id": self.stream_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state["seed"]
        self._epoch, self._step, self._row = state["epoch"], state["step"], state["row"]
        self.stream_id = state.get("stream_id", self.stream_id)  # the memory's key, on resume

    def __iter__(self) -> Iterator[Instance]:
        while True:
            instance = self.instance(self._epoch, self._step, self._row)
            instance["mem_key"] = np.array([self.stream_id, self._epoch, self._step])
            self._row += 1
            if self._row == self.rows:
                self._row, self._step = 0, self._step + 1
            if self._step == self.steps:
                self._step, self._epoch = 0, self._epoch + 1
            yield instance

    @abc.abstractmethod
    def instance(self, epoch: int, step: int, row: int) -> Instance:
        """Row `row` of step `step` of epoch `epoch` (a pure function of them and the seed)."""

    def collate(self, instances: list[Instance]) -> dict[str, torch.Tensor]:
        """Stack the instances' arrays; `input_mask` is all ones (segments are never padded)."""
        batch = {k: torch.from_numpy(np.stack([x[k] for x in instances])) for k in instances[0]}
        batch["mem_key"] = batch["mem_key"][0]  # (3,): one step of the stream
        batch["input_mask"] = torch.ones_like(batch["input_ids"])
        return batch


class LMStream(_RowStream):
    """Transformer-XL training segments: `input_ids` (S,) and `labels` (S,), the next tokens."""

    def __init__(self, corpus: ShardedCorpus, rows: int, seq_len: int, seed: int = 0):
        super().__init__(corpus, rows, seq_len + 1, seq_len, seed)
        self.seq_len = seq_len

    def instance(self, epoch: int, step: int, row: int) -> Instance:
        begin = step * self.seq_len
        window = self.tokens[row, begin: begin + self.seq_len + 1]
        return {"input_ids": window[:-1], "labels": window[1:]}


@dataclass(frozen=True)
class XLNetDataConfig:
    """The reference's defaults: seq_len 512, reuse_len 256 (half)."""

    seq_len: int = 512
    reuse_len: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.reuse_len <= self.seq_len - 5:
            raise UserError(f"reuse_len {self.reuse_len} leaves too little of seq_len "
                            f"{self.seq_len} for two segments")


class XLNetStream(_RowStream):
    """XLNet pretraining segments: `input_ids`, `segment_ids` (S,), `reuse_len` ()."""

    def __init__(self, corpus: ShardedCorpus, vocab: XLNetVocab, rows: int,
                 config: XLNetDataConfig, seed: int = 0):
        stride = config.reuse_len or config.seq_len  # reuse 0: segments do not overlap
        super().__init__(corpus, rows, config.seq_len + 1, stride, seed)
        self.vocab, self.config = vocab, config

    def rng(self, tag: int, epoch: int, step: int, row: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, tag, epoch, step, row])

    def instance(self, epoch: int, step: int, row: int) -> Instance:
        cfg, tokens, sentences = self.config, self.tokens[row], self.sentences[row]
        begin = step * (cfg.reuse_len or cfg.seq_len)
        reused = tokens[begin: begin + cfg.reuse_len]
        a, b = split_a_and_b(tokens, sentences, begin + cfg.reuse_len,
                             cfg.seq_len - cfg.reuse_len - 3, self.rng(0, epoch, step, row))
        sep, cls = [self.vocab.sep_id], [self.vocab.cls_id]
        ids = np.concatenate([reused, a, sep, b, sep, cls]).astype(np.int64)  # (S,)
        segments = np.concatenate([np.zeros(len(reused) + len(a) + 1), np.ones(len(b) + 1),
                                   [2]]).astype(np.int64)
        return {"input_ids": ids, "segment_ids": segments,
                "reuse_len": np.array(cfg.reuse_len)}


def split_a_and_b(tokens: np.ndarray, sentences: np.ndarray, begin: int, total: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Segments A and B of `total` tokens together from `begin` (reference `_split_a_and_b`):
    A is whole sentences from `begin`; half the time (always with no sentence boundary in
    reach) B is a random span of whole sentences of the row, else B continues A. The longer
    segment loses tokens at its end until they fit."""
    end = begin + 1
    cuts = []
    while end < len(tokens):
        if sentences[end] != sentences[end - 1]:
            if end - begin >= total:
                break
            cuts.append(end)
        end += 1
    if not cuts or rng.random() < 0.5:
        a_end = int(rng.choice(cuts)) if cuts else end
        b_len = max(1, total - (a_end - begin))
        b_begin = int(rng.integers(0, len(tokens) - b_len))
        b_end = b_begin + b_len
        while b_begin > 0 and sentences[b_begin - 1] == sentences[b_begin]:
            b_begin -= 1
        while b_end < len(tokens) - 1 and sentences[b_end - 1] == sentences[b_end]:
            b_end += 1
    else:
        a_end = int(rng.choice(cuts))
        b_begin, b_end = a_end, end
    while a_end - begin + b_end - b_begin > total:
        if a_end - begin > b_end - b_begin:
            a_end -= 1
        else:
            b_end -= 1
    return tokens[begin:a_end], tokens[b_begin:b_end]
