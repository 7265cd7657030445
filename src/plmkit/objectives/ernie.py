"""ERNIE 1.0 knowledge masking (Sun et al. 2019, section 3.2): masked-LM whose masked units grow
in three stages (`stages`): basic (a Chinese character or an English word), phrase (a whole
segmented word or phrase) and entity (a whole person, place or organization name). Each stage
keeps BERT's 15% budget; 80/10/10 is drawn once per unit (`masking.mask_units`). As the
released ERNIE 1.0 pretraining, next-sentence prediction is trained alongside (`sentence_loss`).

The units come from the corpus text (`data/ernie.py`); instances are BERT's segment pairs."""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

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
from plmkit.data.ernie import AnnotatedCorpus, read_entities, split_flags, unit_flags
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.errors import UserError
from plmkit.objectives.masking import LEVELS, Level, mask_units, unit_starts, word_starts
from plmkit.objectives.mlm import Batch, encode, mlm_loss
from plmkit.objectives.nsp import sentence_loss


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

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = encode(model, batch)
        mlm, m1 = mlm_loss(model, out.last_hidden_state, batch)
        nsp, m2 = sentence_loss(model, out.pooler_output, batch["next_sentence_labels"], "nsp")
        return mlm + nsp, {**m1, **m2}
