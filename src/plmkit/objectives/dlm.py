"""ERNIE's dialogue language model (Sun et al. 2019, section 3.3, Figure 3): multi-turn
query / response input whose dialogue roles take the place of the segment embedding (query 0,
response 1, alternating), masked-LM over the dialogue, and a real / fake classification on the
pooled [CLS]: half the dialogues have one query or response replaced by a random turn of another
dialogue (label 1).

The dialogues come from the corpus's text files (`data/dialogue.py`: one turn a line, a blank
line between dialogues); masks are drawn afresh every epoch, whole Latin words and single
characters as units (`data/masking.py` `mask_units`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from plmkit.data.batches import Batches
from plmkit.data.bert import BertInstanceConfig, BertVocab, Instance, pad_instance
from plmkit.data.dialogue import read_dialogues
from plmkit.data.masking import MaskingSpec, mask_units, max_predictions, word_starts
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.objectives.mlm import Batch
from plmkit.objectives.nsp import mlm_and_sentence_loss
from plmkit.objectives.protocols import SentencePairModel

FAKE_PROB = 0.5  # half real, half fake dialogues
FIELDS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
          "masked_lm_weights", "next_sentence_labels")  # the label: 0 real, 1 fake


class DialogueStream:
    """An endless, seeded, resumable stream of DLM instances, one per dialogue per epoch; each
    instance is a pure function of (seed, epoch, dialogue)."""

    def __init__(self, dialogues: list[list[np.ndarray]], vocab: BertVocab, seq_len: int,
                 spec: MaskingSpec, seed: int = 0) -> None:
        self.dialogues, self.vocab, self.spec, self.seed = dialogues, vocab, spec, seed
        self.layout = BertInstanceConfig(max_seq_length=seq_len,
                                         max_predictions_per_seq=spec.max_predictions)
        self._epoch = self._offset = 0

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self._epoch, "offset": self._offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self._epoch, self._offset = state["seed"], state["epoch"], state["offset"]

    def __iter__(self) -> Iterator[Instance]:
        while True:
            order = np.random.default_rng([self.seed, 0, self._epoch]).permutation(
                len(self.dialogues))
            while self._offset < len(order):
                self._offset += 1
                yield self.instance(self._epoch, int(order[self._offset - 1]))
            self._epoch, self._offset = self._epoch + 1, 0

    def instance(self, epoch: int, index: int) -> Instance:
        """Dialogue `index` from a random turn on, as many whole turns as fit (at least two,
        each cut to fit), made fake with `FAKE_PROB`, then masked."""
        rng = np.random.default_rng([self.seed, 1, epoch, index])
        turns = self.dialogues[index]
        first = int(rng.integers(len(turns) - 1))
        window = self._fit(turns[first:])
        fake = bool(rng.random() < FAKE_PROB)
        if fake:  # the replacement may use the room the window left
            k = int(rng.integers(len(window)))
            room = self.layout.max_seq_length - 1 - sum(len(t) + 1 for t in window)
            window[k] = self._random_turn(index, rng)[: len(window[k]) + room]
        ids, roles = self._join(window, first)
        masked = mask_units(ids, word_starts(ids, self.vocab.is_continuation), rng, self.spec)
        return pad_instance(ids, roles, masked, fake, self.vocab, self.layout)

    def _fit(self, turns: list[np.ndarray]) -> list[np.ndarray]:
        """Whole turns while [CLS] t1 [SEP] t2 [SEP] ... fits, the first two cut if need be."""
        room = self.layout.max_seq_length - 1
        half = room // 2 - 1
        window = [t[:half] for t in turns[:2]]
        room -= sum(len(t) + 1 for t in window)
        for turn in turns[2:]:
            if len(turn) + 1 > room:
                break
            window.append(turn)
            room -= len(turn) + 1
        return window

    def _random_turn(self, index: int, rng: np.random.Generator) -> np.ndarray:
        other = (index + 1 + int(rng.integers(len(self.dialogues) - 1))) % len(self.dialogues)
        turns = self.dialogues[other]
        return turns[int(rng.integers(len(turns)))]

    def _join(self, window: list[np.ndarray], first: int) -> tuple[np.ndarray, np.ndarray]:
        """(L,) ids [CLS] t1 [SEP] t2 [SEP] ... and (L,) roles: turn i of the dialogue is a
        query (0) when i is even, a response (1) when odd; [CLS] takes the first turn's."""
        ids, roles = [np.array([self.vocab.cls_id])], [np.array([first % 2])]
        for i, turn in enumerate(window, start=first):
            ids.append(np.append(turn, self.vocab.sep_id))
            roles.append(np.full(len(turn) + 1, i % 2))
        return np.concatenate(ids).astype(np.int64), np.concatenate(roles).astype(np.int64)

    def collate(self, instances: list[Instance]) -> dict[str, Tensor]:
        """The (B, ...) fields; int64 except float32 weights."""
        return {k: torch.from_numpy(np.stack([x[k] for x in instances])) for k in FIELDS}


def dialogue_batches(texts: list[list[str]], vocab: BertVocab, options: DataOptions,
                     seq_len: int, seed: int, batch_size: int) -> Batches:
    """Batches of `batch_size` DLM instances of the dialogues `texts` (lists of turns)."""
    encoded = iter(vocab.encode_batch([t for d in texts for t in d]))  # type: ignore
    dialogues = [[np.array(next(encoded), dtype=np.int64) for _ in d] for d in texts]
    spec = MaskingSpec.from_vocab(vocab, mask_prob=options.mask_prob,
                                  max_predictions=max_predictions(seq_len, options.mask_prob))
    return Batches(DialogueStream(dialogues, vocab, seq_len, spec, seed), batch_size)


class DialogueLM:
    """The `dlm` objective: masked-LM over the dialogue + real / fake dialogue."""

    name = "dlm"

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Dialogues of the corpus's source files, tokenized by `vocab`."""
        texts = read_dialogues([s["path"] for s in corpus.meta["sources"]])
        return dialogue_batches(texts, vocab, options, seq_len, seed, options.batch_size)

    def __call__(self, model: SentencePairModel, batch: Batch
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        return mlm_and_sentence_loss(model, batch, "dlm")
