"""Sequence-to-sequence training ("Attention Is All You Need", Vaswani et al. 2017, section 5.4):
teacher-forced cross entropy with label smoothing eps_ls = 0.1, over batches of sentence pairs
grouped by length and sized by token count (`plmkit.data.parallel`). Its corpus is one of
sentence pairs (`corpus = "pairs"`), read as they are: the tokenizer encodes them as batches
are made.

Label smoothing as in the reference tensor2tensor code: the target distribution puts 1 - eps on
the gold token and eps / (V - 1) on each other token; the loss is the cross entropy with it,
averaged over the target tokens. Metrics: the plain per-token negative log-likelihood
(`nll`, whose exp is the perplexity) and the token accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.data.options import DataOptions
from plmkit.data.parallel import IGNORE, Pair, TokenBatches, encode_pairs
from plmkit.objectives.mlm import top1
from plmkit.tokenizers import Tokenizer

Batch = dict[str, Tensor]
LABEL_SMOOTHING = 0.1


def label_smoothed_loss(logits: Tensor, labels: Tensor, eps: float = LABEL_SMOOTHING
                        ) -> tuple[Tensor, Tensor]:
    """logits: (B, T, V), labels: (B, T) with -100 ignored -> (smoothed loss, nll), each the
    mean over the labelled tokens (computed without a host sync)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    keep = (labels != IGNORE).float()  # (B, T)
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)
    others = eps / (logp.shape[-1] - 1)
    smooth = -logp.sum(-1)  # (B, T): -sum_v log p_v
    loss = (1.0 - eps - others) * nll + others * smooth  # -sum_v q_v log p_v
    count = keep.sum().clamp(min=1.0)
    return (loss * keep).sum() / count, (nll * keep).sum() / count


class Seq2Seq:
    """The `seq2seq` objective: label-smoothed cross entropy of the target given the source."""

    name = "seq2seq"
    corpus = "pairs"  # `batches` reads (source, target) pairs (`read_pairs`), not token shards

    def batches(self, corpus: Sequence[Pair], vocab: Tokenizer, options: DataOptions,
                seq_len: int, seed: int) -> TokenBatches:
        """Token-count batches of `corpus` pairs: `options.batch_size` x `seq_len` tokens at
        most; pairs with a side over `seq_len` tokens are left out."""
        examples, dropped = encode_pairs(corpus, vocab, seq_len)
        if dropped:
            print(f"left out {dropped} of {len(corpus)} pairs longer than {seq_len} tokens")
        return TokenBatches(examples, options.batch_size * seq_len, pad_id=vocab.pad_id,
                            bos_id=vocab.cls_id, seed=seed)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(batch["input_ids"], batch["attention_mask"],
                    decoder_input_ids=batch["decoder_input_ids"])
        labels = batch["labels"]  # (B, T)
        loss, nll = label_smoothed_loss(out.logits, labels)
        with torch.no_grad():
            keep = labels != IGNORE
            correct = (top1(out.logits) == labels) & keep
            accuracy = correct.sum() / keep.sum().clamp(min=1)
        return loss, {"nll": nll.detach(), "accuracy": accuracy}
