"""ERNIE 1.0 knowledge masking (Sun et al. 2019, section 3.2): masked-LM whose masked units grow
in three stages (`stages`): basic (a Chinese character or an English word), phrase (a whole
segmented word or phrase) and entity (a whole person, place or organization name). Each stage
keeps BERT's 15% budget; 80/10/10 is drawn once per unit (`data/masking.py` `mask_units`). As the
released ERNIE 1.0 pretraining, next-sentence prediction is trained alongside (`sentence_loss`).

The units come from the corpus text (`data/ernie.py`); instances are BERT's segment pairs.

`ernie+dlm` trains the dialogue language model (section 3.3, `objectives/dlm.py`) together with
knowledge masking, as the paper does: every batch holds `DIALOGUE_SHARE` dialogues beside the
corpus's segment pairs, the MLM loss over both, and the sentence head answers next sentence on
the pairs and real / fake on the dialogues (one head, label 1: random or fake)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.data.batches import Batches
from plmkit.data.bert import (
    BertInstanceConfig,
    BertPretrainingStream,
    BertVocab,
    Instance,
    Pair,
    pad_instance,
    pair_ids,
)
from plmkit.data.dialogue import chatterbot_dialogues, read_dialogues
from plmkit.data.ernie import AnnotatedCorpus, read_entities, split_flags, unit_flags
from plmkit.data.masking import LEVELS, Level, mask_units, unit_starts, word_starts
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.errors import UserError
from plmkit.objectives.dlm import dialogue_batches
from plmkit.objectives.mlm import Batch, encode, mlm_loss
from plmkit.objectives.nsp import mlm_and_sentence_loss
from plmkit.objectives.protocols import SentencePairModel

# The dialogues' share of each `ernie+dlm` batch: Baidu Tieba's share of ERNIE's pretraining
# sentences (section 4.1: 54M of 21M + 51M + 47M + 54M; the paper gives no other ratio).
DIALOGUE_SHARE = 54 / 173


class KnowledgeMaskingStream(BertPretrainingStream):
    """BERT's instance stream over an `AnnotatedCorpus`, masked by units of one `level`."""

    def __init__(self, corpus: AnnotatedCorpus, vocab: BertVocab, config: BertInstanceConfig,
                 level: Level, seed: int = 0) -> None:
        if not config.static_masking:
            raise UserError("the ernie objective masks statically (per dupe copy); "
                            "drop --masking dynamic")
        if level not in LEVELS:
            raise UserError(f"unknown masking level {level!r}; choose from {', '.join(LEVELS)}")
        super().__init__(corpus, vocab, config, seed=seed)  # type: ignore[arg-type]
        self.level = level

    def build(self, pair: Pair, mask_rng: np.random.Generator | None) -> Instance:
        """[CLS] A [SEP] B [SEP] masked by `level` units (``pair`` carries the unit flags)."""
        assert mask_rng is not None  # static masking only
        combined, segment = pair_ids(pair, self.vocab, self.config)  # (L,) ids | flags << 32
        ids, flags = split_flags(combined)
        starts = unit_starts(flags, word_starts(ids, self.vocab.is_continuation), self.level)
        masked = mask_units(ids, starts, mask_rng, self.spec)
        return pad_instance(ids, segment, masked, pair[2], self.vocab, self.config)


class KnowledgeMasking:
    """The `ernie` objective: knowledge-masked LM + next-sentence prediction, in three stages
    of equal length (the pipeline splits the steps by `stages`)."""

    name = "ernie"
    stages = tuple({"unit_level": level} for level in LEVELS)

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Segment pairs masked at `options.unit_level`."""
        flags = unit_flags(corpus, vocab, read_entities(options.entities))
        config = BertInstanceConfig.from_options(options, seq_len, nsp=True)
        stream = KnowledgeMaskingStream(AnnotatedCorpus(corpus, flags), vocab, config,
                                        options.unit_level, seed)
        return Batches(stream, options.batch_size)

    def __call__(self, model: SentencePairModel, batch: Batch
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        return mlm_and_sentence_loss(model, batch, "nsp")


class MixedBatches:
    """Batches of `text` rows, then `dialogues` rows, from two batch sources side by side;
    `dialogue` (B,) bool marks the dialogue rows. Both positions are saved."""

    def __init__(self, text: Batches, dialogues: Batches):
        self.text, self.dialogues = text, dialogues

    def __iter__(self) -> Iterator[Batch]:
        for a, b in zip(self.text, self.dialogues, strict=True):
            kinds = torch.arange(len(a["input_ids"]) + len(b["input_ids"])) >= len(a["input_ids"])
            yield {**{k: torch.cat([a[k], b[k]]) for k in a}, "dialogue": kinds}

    def state_dict(self) -> dict[str, Any]:
        return {"text": self.text.state_dict(), "dialogues": self.dialogues.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.text.load_state_dict(state["text"])
        self.dialogues.load_state_dict(state["dialogues"])


class KnowledgeMaskingWithDialogues(KnowledgeMasking):
    """The `ernie+dlm` objective: knowledge masking + NSP on the corpus and the dialogue LM on
    `options.dialogues` (chatterbot-corpus's Chinese conversations by default), in one batch."""

    name = "ernie+dlm"

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> MixedBatches:
        """`batch_size` rows: round(`DIALOGUE_SHARE` x batch_size) of them dialogues."""
        size = options.batch_size
        if size < 2:
            raise UserError(f"ernie+dlm needs a batch size of at least 2 (pairs and dialogues), "
                            f"not {size}")
        talk = min(size - 1, max(1, round(size * DIALOGUE_SHARE)))
        texts = (read_dialogues([options.dialogues]) if options.dialogues
                 else chatterbot_dialogues(("chinese",)))
        text = super().batches(corpus, vocab, dataclasses.replace(options, batch_size=size - talk),
                               seq_len, seed)
        return MixedBatches(text, dialogue_batches(texts, vocab, options, seq_len, seed, talk))

    def __call__(self, model: SentencePairModel, batch: Batch
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        out = encode(model, batch)
        mlm, metrics = mlm_loss(model, out.last_hidden_state, batch)
        logits = model.sentence_logits(out.pooler_output)  # (B, 2)
        labels = batch["next_sentence_labels"]  # (B,)
        nll = F.cross_entropy(logits.float(), labels, reduction="none")  # (B,)
        right = (logits.detach().argmax(-1) == labels).float()  # (B,)
        talk = batch["dialogue"].float()  # (B,)
        for task, rows in (("nsp", 1.0 - talk), ("dlm", talk)):
            count = rows.sum().clamp(min=1.0)
            metrics[f"{task}_loss"] = (nll.detach() * rows).sum() / count
            metrics[f"{task}_accuracy"] = (right * rows).sum() / count
        return mlm + nll.mean(), metrics
