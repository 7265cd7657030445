"""Property tests (hypothesis): any text through the tokenizers, any token sequence through
the masking, any documents through BERT's pair building: valid instances out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plmkit.data.bert import BertInstanceConfig, build_instance, document_pairs
from plmkit.data.masking import MaskingSpec, mask_tokens, num_to_predict
from plmkit.tokenizers import Tokenizer, train_tokenizer

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KINDS = ["wordpiece", "bpe", "unigram"]


@pytest.fixture(scope="module")
def tokenizers(tweets: list[str]) -> dict[str, Tokenizer]:
    return {kind: train_tokenizer(kind, iter(tweets[:300]), 400) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(text=st.text(max_size=200), pair=st.one_of(st.none(), st.text(max_size=100)),
       max_length=st.integers(8, 64))
def test_any_text_encodes_to_valid_inputs(tokenizers: dict[str, Tokenizer], kind: str,
                                          text: str, pair: str | None, max_length: int) -> None:
    tok = tokenizers[kind]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    tok.decode(ids)
    out = tok(text, pair, max_length=max_length)
    row, types = out["input_ids"][0].tolist(), out["token_type_ids"][0].tolist()
    assert len(row) <= max_length and out["attention_mask"][0].tolist() == [1] * len(row)
    assert row[0] == tok.cls_id and row[-1] == tok.sep_id
    assert row.count(tok.sep_id) >= (2 if pair is not None else 1)
    assert types == sorted(types) and set(types) <= ({0, 1} if pair is not None else {0})


SPECIALS = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask
VOCAB = 50


@FAST
@given(body=st.lists(st.integers(0, VOCAB - 1), max_size=60), seed=st.integers(0, 2**32 - 1),
       whole_word=st.booleans(), max_ngram=st.integers(1, 3), max_predictions=st.integers(1, 20))
def test_masking_keeps_the_invariants(body: list[int], seed: int, whole_word: bool,
                                      max_ngram: int, max_predictions: int) -> None:
    is_continuation = np.arange(VOCAB) % 3 == 0  # every third id continues a word
    spec = MaskingSpec(VOCAB, 4, frozenset(SPECIALS), is_continuation,
                       max_predictions=max_predictions, whole_word=whole_word,
                       max_ngram=max_ngram)
    ids = np.array([2, *body, 3], dtype=np.int64)  # [CLS] ... [SEP]
    masked = mask_tokens(ids, np.random.default_rng(seed), spec)
    positions = masked.positions
    assert np.all(np.diff(positions) > 0)  # sorted, no position twice
    assert len(positions) <= num_to_predict(len(ids), spec.mask_prob, max_predictions)
    assert not np.isin(ids[positions], SPECIALS).any()  # never a special token
    assert np.array_equal(masked.labels, ids[positions])
    untouched = np.ones(len(ids), dtype=bool)
    untouched[positions] = False
    assert np.array_equal(masked.ids[untouched], ids[untouched])
    replaced = masked.ids[positions]
    assert np.all((replaced == 4) | ~np.isin(replaced, SPECIALS))  # [MASK] or a real token
    candidates = int((~np.isin(ids, SPECIALS)).sum())
    if candidates and not whole_word and max_ngram == 1:
        assert len(positions) == min(candidates, num_to_predict(len(ids), spec.mask_prob,
                                                                max_predictions))


class Vocab:
    vocab_size, pad_id, unk_id, cls_id, sep_id, mask_id = VOCAB, 0, 1, 2, 3, 4
    special_ids = frozenset(SPECIALS)
    is_continuation = np.zeros(VOCAB, dtype=bool)


class Docs:
    def __init__(self, docs: list[list[list[int]]]) -> None:
        self.docs = [[np.array(s, dtype=np.int64) for s in d] for d in docs]

    @property
    def num_documents(self) -> int:
        return len(self.docs)

    def document(self, i: int) -> list[np.ndarray]:
        return self.docs[i]


sentence = st.lists(st.integers(5, VOCAB - 1), min_size=1, max_size=30)


@FAST
@given(docs=st.lists(st.lists(sentence, min_size=1, max_size=6), min_size=2, max_size=5),
       seq_len=st.integers(8, 64), task=st.sampled_from(["mlm", "nsp", "sop"]),
       seed=st.integers(0, 2**32 - 1))
def test_pair_building_makes_valid_instances(docs: list[list[list[int]]], seq_len: int,
                                             task: str, seed: int) -> None:
    config = BertInstanceConfig(max_seq_length=seq_len, nsp=task != "mlm",
                                sentence_order=task == "sop")
    vocab = Vocab()
    spec = config.masking(vocab)
    rng = np.random.default_rng(seed)
    corpus = Docs(docs)
    for index in range(corpus.num_documents):
        for pair in document_pairs(corpus, index, config, rng):
            instance = build_instance(pair, vocab, config, spec, rng)
            ids, mask = instance["input_ids"], instance["input_mask"]
            n = int(mask.sum())
            assert len(ids) == seq_len and np.all(mask[:n] == 1) and np.all(mask[n:] == 0)
            assert np.all(ids[n:] == vocab.pad_id) and ids[0] == vocab.cls_id
            real = ids[:n]
            seps = np.flatnonzero(instance["segment_ids"][:n] == 0)
            assert real[seps[-1]] == vocab.sep_id and real[-1] == vocab.sep_id
            assert (ids[:n] == vocab.sep_id).sum() <= (2 if config.nsp else 1)
            segments = instance["segment_ids"][:n]
            assert np.all(np.diff(segments) >= 0) and set(segments) <= {0, 1}
            weights = instance["masked_lm_weights"]
            k = int(weights.sum())
            assert 1 <= k <= config.max_predictions_per_seq
            positions = instance["masked_lm_positions"][:k]
            assert np.all(positions < n) and np.all(np.diff(positions) > 0)
            assert int(instance["next_sentence_labels"]) in (0, 1)
