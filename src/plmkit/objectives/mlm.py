"""Masked language modelling (BERT section 3.1, task #1): predict the original token at the
masked positions. The batch carries the reference fields `masked_lm_positions`,
`masked_lm_ids` and `masked_lm_weights` (P = max_predictions_per_seq, padded, weight 0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.data.batches import Batches
from plmkit.data.bert import BertInstanceConfig, BertPretrainingStream, BertVocab
from plmkit.data.options import DataOptions
from plmkit.data.packing import TokenBudgetBatches, packed_batches
from plmkit.data.shards import ShardedCorpus

Batch = dict[str, Tensor]


def bert_batches(corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions, seq_len: int,
                 seed: int, nsp: bool, sentence_order: bool = False) -> Batches:
    """Batches of BERT instances of `seq_len` tokens: segment pairs for NSP (or ALBERT's SOP),
    else one segment filling the length."""
    config = BertInstanceConfig.from_options(options, seq_len, nsp=nsp,
                                             sentence_order=sentence_order)
    return Batches(BertPretrainingStream(corpus, vocab, config, seed=seed), options.batch_size)


def encode(model: nn.Module, batch: Batch):
    """Run the encoder on the reference input fields."""
    return model(batch["input_ids"], batch["input_mask"], batch.get("segment_ids"))


def top1(logits: Tensor) -> Tensor:
    """The highest-scoring class of each row (..., V) -> (...,): `max(-1).indices`, which
    reduces the rows vectorised (3x `argmax` at 152 x 30522 on a CPU)."""
    return logits.detach().max(-1).indices


def mlm_loss(model: nn.Module, hidden: Tensor, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted cross entropy over the masked positions only, and their accuracy."""
    logits = model.mlm_logits(hidden, batch["masked_lm_positions"])  # (B, P, V)
    labels = batch["masked_lm_ids"].flatten()  # (B*P,)
    weights = batch["masked_lm_weights"].flatten().to(logits.dtype)  # (B*P,)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), labels, reduction="none")  # (B*P,)
    count = weights.sum().clamp(min=1.0)
    loss = (nll * weights).sum() / count
    with torch.no_grad():
        correct = (top1(logits).flatten() == labels).to(weights.dtype)
        accuracy = (correct * weights).sum() / count
    return loss, {"mlm_loss": loss.detach(), "mlm_accuracy": accuracy}


class MaskedLM:
    """The `mlm` objective: masked-LM alone (RoBERTa drops NSP; BERT ablation "No NSP")."""

    name = "mlm"

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches | TokenBudgetBatches:
        """BERT's one-segment instances, or RoBERTa's packed sentences (`input_format`)."""
        if options.input_format != "segments":
            return packed_batches(corpus, vocab, options, seq_len, seed)
        return bert_batches(corpus, vocab, options, seq_len, seed, nsp=False)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return mlm_loss(model, encode(model, batch).last_hidden_state, batch)
