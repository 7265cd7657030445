"""Next-sentence prediction (BERT section 3.1, task #2): is segment B the text that follows A
(label 0) or a segment from a random document (label 1)? Classified from the pooled [CLS]."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.data.batches import Batches
from plmkit.data.bert import BertVocab
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.objectives.mlm import Batch, bert_batches, encode, mlm_loss


def nsp_loss(model: nn.Module, pooled: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross entropy of the two-way [CLS] classifier and its accuracy."""
    logits = model.nsp_logits(pooled)  # (B, 2)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {"nsp_loss": loss.detach(), "nsp_accuracy": accuracy.detach()}


class MaskedLMWithNSP:
    """The `mlm+nsp` objective, BERT's default: the sum of the two losses."""

    name = "mlm+nsp"

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Segment pairs, half of them with a random second segment."""
        return bert_batches(corpus, vocab, options, seq_len, seed, nsp=True)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = encode(model, batch)
        mlm, m1 = mlm_loss(model, out.last_hidden_state, batch)
        nsp, m2 = nsp_loss(model, out.pooler_output, batch["next_sentence_labels"])
        return mlm + nsp, {**m1, **m2}
