"""Sentence-order prediction (ALBERT section 4.1 / 3.2): two consecutive segments of one
document, in order (label 0) or swapped (label 1), classified from the pooled [CLS]. NSP's
negatives come from another document, so NSP can be solved by topic alone; SOP's cannot.

The pairs are BERT's (`data/bert.py` `document_pairs` with `sentence_order=True`); the label
travels in the reference field `next_sentence_labels`, as in ALBERT's own data files."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.data.batches import Batches
from plmkit.data.bert import BertVocab
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.objectives.mlm import Batch, bert_batches, encode, mlm_loss


def sop_loss(model: nn.Module, pooled: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross entropy of the two-way order classifier and its accuracy."""
    logits = model.sop_logits(pooled)  # (B, 2)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {"sop_loss": loss.detach(), "sop_accuracy": accuracy.detach()}


class MaskedLMWithSOP:
    """The `mlm+sop` objective, ALBERT's default: the sum of the two losses."""

    name = "mlm+sop"

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Segment pairs of one document, half of them swapped."""
        return bert_batches(corpus, vocab, options, seq_len, seed, nsp=True, sentence_order=True)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = encode(model, batch)
        mlm, m1 = mlm_loss(model, out.last_hidden_state, batch)
        sop, m2 = sop_loss(model, out.pooler_output, batch["next_sentence_labels"])
        return mlm + sop, {**m1, **m2}
