"""ALBERT's sentence-order prediction: pairs of consecutive segments, half swapped, on real text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import plmkit.objectives as objectives
from plmkit.data.bert import BertInstanceConfig, document_pairs
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus, prepare_corpus
from plmkit.models.albert import Albert, AlbertConfig
from plmkit.tokenizers import Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory,
             tweets: list[str]) -> tuple[ShardedCorpus, Tokenizer]:
    """Real tweets in documents of 8, with a WordPiece vocabulary (the pairs do not care)."""
    root = tmp_path_factory.mktemp("sop")
    path = root / "train.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 800, 8)) + "\n")
    tok = train_tokenizer("wordpiece", tweets[:800], 1000)
    return prepare_corpus([path], tok, root / "shards", fingerprint="wp-1000"), tok


def text(tokens: np.ndarray) -> str:
    return " " + " ".join(map(str, tokens.tolist())) + " "


def test_pairs_are_consecutive_segments_of_one_document_half_swapped(prepared) -> None:
    corpus, _ = prepared
    config = BertInstanceConfig(max_seq_length=64, nsp=True, sentence_order=True)
    rng = np.random.default_rng(0)
    labels = []
    for d in range(corpus.num_documents):
        document = text(np.concatenate(corpus.document(d)))
        for a, b, swapped in document_pairs(corpus, d, config, rng):
            first, second = (b, a) if swapped else (a, b)
            assert len(a) and len(b) and len(a) + len(b) <= config.max_num_tokens
            i = document.find(text(first))
            assert i >= 0 and document.find(text(second), i + 1) > i  # in this order, this doc
            labels.append(swapped)
    n = len(labels)
    assert n > 200 and abs(np.mean(labels) - 0.5) < 3 * np.sqrt(0.25 / n)  # balanced


def test_mlm_sop_objective_on_a_batch(prepared) -> None:
    corpus, tok = prepared
    objective = objectives.get_objective("mlm+sop")
    options = DataOptions(batch_size=8, whole_word=True, max_ngram=3)
    batch = next(iter(objective.batches(corpus, tok, options, 64, seed=0)))
    assert set(batch["next_sentence_labels"].tolist()) <= {0, 1}
    assert (batch["segment_ids"].amax(1) == 1).all()  # two segments in every row
    model = Albert(AlbertConfig(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32,
                                num_layers=2, num_heads=2, intermediate_size=64))
    loss, metrics = objective(model, batch)
    assert torch.isfinite(loss) and {"mlm_loss", "sop_loss", "sop_accuracy"} <= set(metrics)
    loss.backward()
    assert model.sop.weight.grad is not None and model.sop.weight.grad.abs().sum() > 0


def test_resume_is_exact_with_sop_and_ngrams(prepared) -> None:
    corpus, tok = prepared
    objective = objectives.get_objective("mlm+sop")
    options = DataOptions(batch_size=4, masking="dynamic", whole_word=True, max_ngram=3)
    first = objective.batches(corpus, tok, options, 64, seed=2)
    it = iter(first)
    next(it)
    state = first.state_dict()
    expected = list(itertools.islice(it, 2))
    again = objective.batches(corpus, tok, options, 64, seed=2)
    again.load_state_dict(state)
    for got, want in zip(again, expected, strict=False):
        assert all(torch.equal(got[k], want[k]) for k in want)
