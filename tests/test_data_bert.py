"""BERT pretraining instances against Google BERT's create_pretraining_data.py."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.data.bert import (
    FIELDS,
    BertInstanceConfig,
    BertPretrainingStream,
    document_pairs,
    truncate_seq_pair,
)
from plmkit.data.masking import candidates, num_to_predict, word_starts, word_units
from plmkit.data.shards import ShardedCorpus, prepare_corpus
from plmkit.errors import UserError
from test_data_common import FakeTokenizer, tweet_documents, tweets, write_documents

S, P = 128, 20


@pytest.fixture(scope="module")
def tok() -> FakeTokenizer:
    return FakeTokenizer(tweets())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tok: FakeTokenizer) -> ShardedCorpus:
    d = tmp_path_factory.mktemp("bert")
    path = write_documents(d / "tweets.txt", tweet_documents(150, per_doc=6))
    return prepare_corpus([path], tok, d / "prep", fingerprint="fake")


def take(stream: BertPretrainingStream, n: int) -> list[dict[str, np.ndarray]]:
    return list(islice(iter(stream), n))


def unmasked(x: dict[str, np.ndarray]) -> np.ndarray:
    """The instance's ids before masking."""
    ids = x["input_ids"].copy()
    real = x["masked_lm_weights"] > 0
    ids[x["masked_lm_positions"][real]] = x["masked_lm_ids"][real]
    return ids


def test_fields_shapes_and_padding(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    for x in take(BertPretrainingStream(corpus, tok, seed=0), 500):
        assert tuple(x) == FIELDS
        assert x["input_ids"].shape == x["input_mask"].shape == x["segment_ids"].shape == (S,)
        assert x["masked_lm_positions"].shape == x["masked_lm_ids"].shape == (P,)
        assert x["masked_lm_weights"].dtype == np.float32 and x["input_ids"].dtype == np.int64
        n = int(x["input_mask"].sum())
        assert np.array_equal(x["input_mask"], np.arange(S) < n)  # 1s then 0s
        assert (x["input_ids"][n:] == tok.pad_id).all() and (x["segment_ids"][n:] == 0).all()
        k = int(x["masked_lm_weights"].sum())
        assert np.array_equal(x["masked_lm_weights"], (np.arange(P) < k).astype(np.float32))
        assert (x["masked_lm_positions"][k:] == 0).all() and (x["masked_lm_ids"][k:] == 0).all()
        assert x["next_sentence_labels"].shape == () and x["next_sentence_labels"] in (0, 1)


def test_cls_sep_and_segment_ids(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    for x in take(BertPretrainingStream(corpus, tok, seed=1), 500):
        ids, n = unmasked(x), int(x["input_mask"].sum())
        seps = np.flatnonzero(ids[:n] == tok.sep_id)
        assert ids[0] == tok.cls_id and len(seps) == 2 and seps[1] == n - 1
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B are not empty
        assert np.array_equal(x["segment_ids"][:n], np.arange(n) > seps[0])
        assert x["input_ids"][0] == tok.cls_id and (x["input_ids"][seps] == tok.sep_id).all()


def test_masking_budget_and_80_10_10(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    outcome = np.zeros(3)  # [MASK], kept, random
    masked = total = 0
    for x in take(BertPretrainingStream(corpus, tok, seed=2), 3000):
        n = int(x["input_mask"].sum())
        k = int(x["masked_lm_weights"].sum())
        assert k == num_to_predict(n, 0.15, P)
        pos, labels = x["masked_lm_positions"][:k], x["masked_lm_ids"][:k]
        assert np.all(np.diff(pos) > 0) and np.all(pos < n)
        assert not np.isin(labels, list(tok.special_ids)).any()  # never [CLS], [SEP], [PAD]
        new = x["input_ids"][pos]
        outcome += [(new == tok.mask_id).sum(), (new == labels).sum(),
                    ((new != tok.mask_id) & (new != labels)).sum()]
        masked, total = masked + k, total + n
    assert outcome / outcome.sum() == pytest.approx([0.8, 0.1, 0.1], abs=0.015)
    assert masked / total == pytest.approx(0.15, abs=0.01)


def test_masking_is_capped_by_max_predictions(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    config = BertInstanceConfig(max_seq_length=256, max_predictions_per_seq=10)
    counts = [int(x["masked_lm_weights"].sum())
              for x in take(BertPretrainingStream(corpus, tok, config, seed=3), 300)]
    assert max(counts) == 10 and counts.count(10) > 150


def test_next_sentence_labels(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    labels = [int(x["next_sentence_labels"])
              for x in take(BertPretrainingStream(corpus, tok, seed=4), 3000)]
    # 50% random, plus the one-sentence chunks that the reference always pairs at random
    assert 0.47 < np.mean(labels) < 0.6


def test_pairs_true_next_follows_random_next_comes_from_another_document(
    corpus: ShardedCorpus,
) -> None:
    config = BertInstanceConfig(max_seq_length=512)  # long enough that nothing is truncated
    docs = [np.concatenate(corpus.document(i)) for i in range(corpus.num_documents)]
    for index in range(40):
        pairs = document_pairs(corpus, index, config, np.random.default_rng(index))
        covered = 0
        for a, b, is_random_next in pairs:
            if is_random_next:
                assert any(contains(docs[j], b) for j in range(len(docs)) if j != index)
                covered += len(a)
            else:
                assert contains(docs[index], np.concatenate([a, b]))
                covered += len(a) + len(b)
        assert covered == len(docs[index])  # unused sentences are put back, none is lost


def contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    if len(needle) > len(haystack):
        return False
    windows = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
    return bool((windows == needle).all(1).any())


def test_truncate_seq_pair_as_the_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        la, lb, limit = (int(v) for v in rng.integers(1, 80, size=3))
        a, b = np.arange(la), np.arange(100, 100 + lb)
        ta, tb = truncate_seq_pair(a, b, limit, rng)
        ra, rb = la, lb  # the reference: one token at a time off the longer side, B on a tie
        while ra + rb > limit:
            ra, rb = (ra - 1, rb) if ra > rb else (ra, rb - 1)
        assert (len(ta), len(tb)) == (ra, rb)
        assert contains(a, ta) and contains(b, tb)


def test_whole_word_masking(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    config = BertInstanceConfig(whole_word=True)
    split_words = 0
    for x in take(BertPretrainingStream(corpus, tok, config, seed=5), 500):
        ids = unmasked(x)
        chosen = np.zeros(S, dtype=bool)
        chosen[x["masked_lm_positions"][x["masked_lm_weights"] > 0]] = True
        real = x["input_mask"].astype(bool)
        for start, end in word_units(candidates(ids, tok.special_ids) & real,
                                     word_starts(ids, tok.is_continuation)):
            assert chosen[start:end].all() or not chosen[start:end].any()
            split_words += bool(end - start > 1 and chosen[start])
    assert split_words > 100


def test_mlm_only_instances(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    config = BertInstanceConfig(nsp=False)
    lengths = []
    for x in take(BertPretrainingStream(corpus, tok, config, seed=6), 300):
        ids, n = unmasked(x), int(x["input_mask"].sum())
        assert ids[0] == tok.cls_id and np.flatnonzero(ids == tok.sep_id).tolist() == [n - 1]
        assert (x["segment_ids"] == 0).all() and x["next_sentence_labels"] == 0
        lengths.append(n)
    assert max(lengths) == S


def test_static_masks_repeat_per_dupe(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    stream = BertPretrainingStream(corpus, tok, BertInstanceConfig(dupe_factor=3), seed=7)
    for doc in range(20):
        first = stream.document_instances(0, doc)
        assert same(first, stream.document_instances(0, doc))
        assert same(first, stream.document_instances(3, doc))  # the same dupe copy
    assert not all(same(stream.document_instances(0, d), stream.document_instances(1, d))
                   for d in range(20))


def same(xs: list[dict[str, np.ndarray]], ys: list[dict[str, np.ndarray]]) -> bool:
    return len(xs) == len(ys) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(xs, ys, strict=True)
    )


def test_dynamic_masks_are_fresh_each_epoch(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    config = BertInstanceConfig(static_masking=False, dupe_factor=2)
    stream = BertPretrainingStream(corpus, tok, config, seed=8)
    epoch0 = [x for d in range(10) for x in stream.document_instances(0, d)]
    epoch2 = [x for d in range(10) for x in stream.document_instances(2, d)]
    assert "masked_lm_positions" not in epoch0[0]
    a, b = stream.collate(epoch0), stream.collate(epoch2)
    assert set(a) == set(FIELDS) and a["masked_lm_positions"].shape == (len(epoch0), P)
    assert torch.equal(a["segment_ids"], b["segment_ids"])  # the same pairs (dupe copy 0)...
    assert not torch.equal(a["masked_lm_positions"], b["masked_lm_positions"])  # ...new masks
    assert all(torch.equal(a[k], v) for k, v in stream.collate(epoch0).items())  # reproducible
    n = a["input_mask"].sum(1).tolist()
    assert a["masked_lm_weights"].sum(1).long().tolist() == [num_to_predict(k, 0.15, P) for k in n]


def test_an_epoch_visits_every_document(corpus: ShardedCorpus, tok: FakeTokenizer) -> None:
    stream = BertPretrainingStream(corpus, tok, seed=9, window=32)
    expected = sum(len(stream.document_instances(0, d)) for d in range(corpus.num_documents))
    count = 0
    for _ in iter(stream):
        if stream.state_dict()["epoch"] > 0:
            break
        count += 1
    assert count == expected


@pytest.mark.parametrize("static", [True, False])
def test_resume_reproduces_the_stream(
    corpus: ShardedCorpus, tok: FakeTokenizer, static: bool
) -> None:
    config = BertInstanceConfig(static_masking=static, dupe_factor=2)
    loader_args = {"batch_size": 16, "num_workers": 0}

    def batches(stream: BertPretrainingStream, n: int) -> list[dict[str, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(stream, collate_fn=stream.collate, **loader_args)
        return list(islice(iter(loader), n))

    stream = BertPretrainingStream(corpus, tok, config, seed=10, window=16)
    batches(stream, 37)
    state = json.loads(json.dumps(stream.state_dict()))  # plain data, storable in a checkpoint
    following = batches(stream, 120)  # crosses windows and an epoch
    assert stream.state_dict()["epoch"] > state["epoch"]
    resumed = BertPretrainingStream(corpus, tok, config, seed=0, window=16)
    resumed.load_state_dict(state)
    for x, y in zip(following, batches(resumed, 120), strict=True):
        assert all(torch.equal(x[k], y[k]) for k in FIELDS)
    with pytest.raises(ValueError, match="another BertInstanceConfig"):
        BertPretrainingStream(corpus, tok, BertInstanceConfig(), seed=10).load_state_dict(state)


def test_corpus_too_short_for_nsp(tmp_path: Path, tok: FakeTokenizer) -> None:
    one_doc = write_documents(tmp_path / "one.txt", tweet_documents(1, per_doc=20))
    one_line = write_documents(tmp_path / "lines.txt", [[f"tweet number {i}"] for i in range(50)])
    for path in (one_doc, one_line):
        corpus = prepare_corpus([path], tok, tmp_path / path.stem, fingerprint="f")
        with pytest.raises(UserError, match=rf"{path.name}: documents too short for next-sentence"
                                            r" prediction .*use --objective mlm"):
            BertPretrainingStream(corpus, tok)
        mlm = BertPretrainingStream(corpus, tok, BertInstanceConfig(nsp=False))
        assert len(take(mlm, 5)) == 5
