"""Next-sentence prediction (BERT section 3.1, task #2): is segment B the text that follows A
(label 0) or a segment from a random document (label 1)? Classified from the pooled [CLS] by
the model's sentence head, which every BERT-layout model has (ALBERT's SOP trains the same
head: `objectives/sop.py`), so NSP and SOP can be compared on one architecture."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from plmkit.data.batches import Batches
from plmkit.data.bert import BertVocab
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.errors import UserError
from plmkit.objectives.mlm import Batch, bert_batches, encode, mlm_loss
from plmkit.objectives.protocols import SentencePairModel

# What a segment-pair objective needs of the model config: a second segment type and the
# sentence head (RoBERTa's config lacks both by default); the pipeline sets the fields a
# config has, before the user's own overrides.
PAIR_MODEL = {"type_vocab_size": 2, "sentence_head": True}


def check_sentence_head(model: object, objective: str) -> None:
    """A one-line UserError unless `model` has a sentence head (ELECTRA, XLNet have none)."""
    if not isinstance(model, SentencePairModel):
        family = getattr(getattr(model, "config", None), "family", type(model).__name__)
        raise UserError(f"{family} models have no sentence head; {objective} trains bert, "
                        "roberta, albert and ernie models")


def sentence_loss(model: SentencePairModel, pooled: Tensor, labels: Tensor, task: str
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross entropy of the two-way sentence head on pooled (B, H) against labels (B,), and
    its accuracy, as `{task}_loss` / `{task}_accuracy`."""
    logits = model.sentence_logits(pooled)  # (B, 2)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {f"{task}_loss": loss.detach(), f"{task}_accuracy": accuracy.detach()}


def mlm_and_sentence_loss(model: SentencePairModel, batch: Batch, task: str
                          ) -> tuple[Tensor, dict[str, Tensor]]:
    """The masked-LM loss plus the sentence head's on the pooled [CLS] against the batch's
    `next_sentence_labels` (NSP, SOP, ERNIE's real / fake dialogue: `task`)."""
    out = encode(model, batch)
    mlm, m1 = mlm_loss(model, out.last_hidden_state, batch)
    pair, m2 = sentence_loss(model, out.pooler_output, batch["next_sentence_labels"], task)
    return mlm + pair, {**m1, **m2}


class MaskedLMWithNSP:
    """The `mlm+nsp` objective, BERT's default: the sum of the two losses."""

    name = "mlm+nsp"
    task = "nsp"
    model_needs = PAIR_MODEL

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Segment pairs, half of them with a random second segment."""
        return bert_batches(corpus, vocab, options, seq_len, seed, nsp=True)

    def __call__(self, model: SentencePairModel, batch: Batch
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        check_sentence_head(model, self.name)
        return mlm_and_sentence_loss(model, batch, self.task)
