"""Sentence-order prediction (ALBERT section 4.1 / 3.2): two consecutive segments of one
document, in order (label 0) or swapped (label 1), classified from the pooled [CLS] by the
model's sentence head (the one NSP trains). NSP's negatives come from another document, so NSP
can be solved by topic alone; SOP's cannot.

The pairs are BERT's (`data/bert.py` `document_pairs` with `sentence_order=True`); the label
travels in the reference field `next_sentence_labels`, as in ALBERT's own data files."""

from __future__ import annotations

from plmkit.data.batches import Batches
from plmkit.data.bert import BertVocab
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.objectives.mlm import bert_batches
from plmkit.objectives.nsp import MaskedLMWithNSP


class MaskedLMWithSOP(MaskedLMWithNSP):
    """The `mlm+sop` objective, ALBERT's default: the sum of the two losses."""

    name = "mlm+sop"
    task = "sop"

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Segment pairs of one document, half of them swapped."""
        return bert_batches(corpus, vocab, options, seq_len, seed, nsp=True, sentence_order=True)
