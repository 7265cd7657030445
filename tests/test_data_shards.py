"""Token shards: round trip, dtypes, index, reuse and staleness, atomic writes."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from plmkit.data.corpus import read_documents
from plmkit.data.shards import ShardedCorpus, prepare_corpus
from plmkit.errors import UserError
from test_data_common import FakeTokenizer, raw_tweets, tweet_documents, tweets, write_documents


class CountingTokenizer(FakeTokenizer):
    """Records the size of every batch it encodes."""

    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__(texts)
        self.batches: list[int] = []

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.batches.append(len(texts))
        return super().encode_batch(texts)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def tokenizer() -> CountingTokenizer:
    return CountingTokenizer(tweets())


def test_round_trip_across_shards(tmp_path: Path, tokenizer: CountingTokenizer) -> None:
    a = write_documents(tmp_path / "a.txt", tweet_documents(120, per_doc=5))
    b = write_documents(tmp_path / "b.txt", tweet_documents(80, per_doc=3, start=600))
    corpus = prepare_corpus([a, b], tokenizer, tmp_path / "prep", fingerprint="fake-1",
                            shard_tokens=3000, batch_docs=16)
    expected = [[np.array(ids) for ids in tokenizer.encode_batch(doc) if ids]
                for doc in read_documents([a, b])]
    assert corpus.num_documents == len(expected) == 200
    assert corpus.num_sentences == sum(map(len, expected))
    assert corpus.num_tokens == sum(len(s) for doc in expected for s in doc)
    assert len(corpus.meta["shards"]) > 5
    assert all(0 < s["tokens"] <= 3000 for s in corpus.meta["shards"])
    reopened = ShardedCorpus.open(tmp_path / "prep")
    doc_starts = reopened.sentence_starts()[reopened.document_starts()].tolist()
    shard_ends = np.cumsum([s["tokens"] for s in corpus.meta["shards"]]).tolist()
    assert set(shard_ends) - set(doc_starts)  # some documents straddle two shards
    for i, doc in enumerate(expected):
        assert same(reopened.document(i), doc)
    assert same([reopened.sentence(j) for j in range(corpus.num_sentences)],
                [s for doc in expected for s in doc])
    assert reopened.sentence_counts().tolist() == [len(d) for d in expected]
    assert reopened.dtype == np.dtype("<u2") and reopened.vocab_size == tokenizer.vocab_size
    with pytest.raises(IndexError):
        reopened.document(200)


def test_batches_bound_memory(tmp_path: Path, tokenizer: CountingTokenizer) -> None:
    docs = tweet_documents(100, per_doc=4)
    path = write_documents(tmp_path / "a.txt", docs)
    tokenizer.batches.clear()
    prepare_corpus([path], tokenizer, tmp_path / "prep", fingerprint="f", batch_docs=10)
    assert len(tokenizer.batches) == 10
    assert max(tokenizer.batches) <= 10 * max(len(d) for d in read_documents([path]))


def test_large_vocabularies_use_uint32(tmp_path: Path) -> None:
    tok = FakeTokenizer(tweets())
    tok.vocab_size = 70_000
    path = write_documents(tmp_path / "a.txt", tweet_documents(10))
    corpus = prepare_corpus([path], tok, tmp_path / "prep", fingerprint="f")
    assert corpus.dtype == np.dtype("<u4")
    assert np.array_equal(corpus.document(0)[0], tok.encode_batch([tweets()[0]])[0])


def test_reused_while_up_to_date_rebuilt_when_stale(
    tmp_path: Path, tokenizer: CountingTokenizer
) -> None:
    path = write_documents(tmp_path / "a.txt", tweet_documents(30))
    out = tmp_path / "prep"
    first = prepare_corpus([path], tokenizer, out, fingerprint="v1")
    assert first.is_up_to_date([path], "v1")
    assert not first.is_up_to_date([path], "v2")
    assert not first.is_up_to_date([path, path], "v1")
    assert not first.is_up_to_date([tmp_path / "gone.txt"], "v1")

    tokenizer.batches.clear()
    assert prepare_corpus([path], tokenizer, out, fingerprint="v1").num_tokens == first.num_tokens
    assert tokenizer.batches == []  # reused, not re-tokenized

    write_documents(path, tweet_documents(40))
    os.utime(path, ns=(0, 10**18))
    assert not ShardedCorpus.open(out).is_up_to_date([path], "v1")
    rebuilt = prepare_corpus([path], tokenizer, out, fingerprint="v1")
    assert rebuilt.num_documents == 40 and rebuilt.is_up_to_date([path], "v1")
    assert tokenizer.batches != []
    assert prepare_corpus([path], tokenizer, out, fingerprint="v2").meta["fingerprint"] == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "prep"]  # no leftovers


def test_failed_build_leaves_the_old_corpus(tmp_path: Path, tokenizer: CountingTokenizer) -> None:
    path = write_documents(tmp_path / "a.txt", tweet_documents(30))
    out = tmp_path / "prep"
    prepare_corpus([path], tokenizer, out, fingerprint="v1")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(UserError, match=r"b\.jsonl:2: invalid JSON"):
        prepare_corpus([path, bad], tokenizer, out, fingerprint="v1")
    assert ShardedCorpus.open(out).is_up_to_date([path], "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.jsonl", "prep"]


def test_never_overwrites_other_data(tmp_path: Path, tokenizer: CountingTokenizer) -> None:
    path = write_documents(tmp_path / "a.txt", tweet_documents(5))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="mine: exists and is not a prepared corpus"):
        prepare_corpus([path], tokenizer, tmp_path / "mine", fingerprint="f")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="mine: not a prepared corpus"):
        ShardedCorpus.open(tmp_path / "mine")


def test_skipped_lines_are_reported(tmp_path: Path, tokenizer: CountingTokenizer) -> None:
    path = tmp_path / "raw.txt"
    path.write_bytes(b"\n".join(raw_tweets()[:3000]) + b"\n")
    corpus = prepare_corpus([path], tokenizer, tmp_path / "prep", fingerprint="f")
    (message,) = corpus.stats.messages()
    assert message.startswith("skipped ")
    assert message.endswith(f"lines with invalid UTF-8 in {path}")
    assert corpus.stats.documents == corpus.num_documents == 1


def test_pickles_without_copying_the_tokens(tmp_path: Path, tokenizer: CountingTokenizer) -> None:
    path = write_documents(tmp_path / "a.txt", tweet_documents(300))
    corpus = prepare_corpus([path], tokenizer, tmp_path / "prep", fingerprint="f")
    data = pickle.dumps(corpus)
    assert len(data) < corpus.num_tokens
    clone = pickle.loads(data)
    assert same(clone.document(7), corpus.document(7))
