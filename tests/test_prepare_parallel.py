"""Preparing one corpus with several processes (issue 29, item 2): the parts that `read_part`
cuts read exactly the documents of the whole corpus, and ranks that each tokenize a part
(two real processes on gloo, or threads standing in for more) write byte for byte the directory
that one process writes; an error on one rank is raised on all, the old directory intact."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch.distributed as tdist
import torch.multiprocessing as mp

from plmkit.data import shards
from plmkit.data.corpus import CorpusStats, read_documents, read_part
from plmkit.data.shards import ShardedCorpus, prepare_corpus
from plmkit.errors import UserError
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training.distributed import Dist
from test_data_common import raw_tweets, tweet_documents, tweets

SHARD_TOKENS = 4000  # small: the corpus spans several shards, and the parts' cuts fall inside them


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real tweets in every format a corpus comes in: text (a BOM, CRLF line ends, lines of
    only whitespace, invalid UTF-8), jsonl, gzip, Parquet."""
    root = tmp_path_factory.mktemp("corpus")
    docs = ["\r\n".join(d) for d in tweet_documents(60, per_doc=5)]
    text = root / "a.txt"
    text.write_bytes(("\ufeff" + "\r\n \r\n".join(docs[:30]) + "\n\u3000\n" +
                      "\n\n".join(docs[30:]) + "\nno newline at the end").encode())
    bad = root / "b.txt"  # raw tweets, some not UTF-8; a document of 7 lines each
    lines = raw_tweets()[:300]
    bad.write_bytes(b"\n\n".join(b"\n".join(lines[i : i + 7]) for i in range(0, 300, 7)))
    jsonl = root / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": " ".join(d)})
                               for d in tweet_documents(80, 3, start=400)) + "\n\n")
    packed = root / "d.txt.gz"
    with gzip.open(packed, "wt") as f:
        f.write("\n\n".join("\n".join(d) for d in tweet_documents(20, 4, start=700)))
    table = root / "e.parquet"
    pq.write_table(pa.table({"text": [" ".join(d) for d in tweet_documents(30, 2, start=800)]}),
                   table, row_group_size=8)
    return [text, bad, jsonl, packed, table]


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Tweets, then near the end the raw ones, a few of them not UTF-8: in the second half."""
    path = tmp_path_factory.mktemp("bad") / "bad.txt"
    valid = "\n\n".join("\n".join(d) for d in tweet_documents(100, 4)).encode()
    path.write_bytes(valid + b"\n\n" + b"\n".join(raw_tweets()[:300]))
    return [path]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tok")
    train_tokenizer("wordpiece", iter(tweets()[:2000]), 800).save(directory)
    return directory


@pytest.fixture(scope="module")
def single(corpus: list[Path], tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Path:
    """The corpus prepared by one process."""
    out = tmp_path_factory.mktemp("single") / "shards"
    prepare(corpus, tokenizer_dir, out)
    return out


def prepare(corpus: list[Path], tokenizer_dir: Path, out: Path, ranks: Any = None,
            **options: Any) -> ShardedCorpus:
    return prepare_corpus(corpus, Tokenizer.load(tokenizer_dir), out, fingerprint="tok",
                          shard_tokens=SHARD_TOKENS, batch_docs=7, ranks=ranks, **options)


def assert_same_directory(a: Path, b: Path) -> None:
    """Every file of `a` and `b` byte for byte the same: shards, indexes, meta.json."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert sum(n.startswith("tokens-") for n in names) > 3
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


class ThreadRanks:
    """`world` threads standing in for processes: `gather` meets at a barrier."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.slots: list[Any] = [None] * world
        self.barrier = threading.Barrier(world)

    def run(self, work: Any) -> list[Any]:
        """`work(ranks)` on every rank, each with a view of rank r; the results or errors."""
        results: list[Any] = [None] * self.world

        def one(rank: int) -> None:
            try:
                results[rank] = work(_Rank(self, rank))
            except Exception as e:  # kept for the test to look at
                results[rank] = e

        threads = [threading.Thread(target=one, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results


class _Rank:
    def __init__(self, group: ThreadRanks, rank: int) -> None:
        self.group, self.rank, self.world = group, rank, group.world

    def gather(self, obj: Any) -> list[Any]:
        self.group.slots[self.rank] = obj
        self.group.barrier.wait()
        out = list(self.group.slots)
        self.group.barrier.wait()  # nobody writes the next round before all have read this one
        return out


@pytest.mark.parametrize("parts", [1, 2, 3, 5, 8, 13, 40])
def test_parts_read_exactly_the_documents_of_the_corpus(corpus: list[Path], parts: int) -> None:
    whole = CorpusStats()
    expected = list(read_documents(corpus, stats=whole))
    read: list[list[str]] = []
    stats = [CorpusStats() for _ in range(parts)]
    for part in range(parts):
        read += read_part(corpus, part, parts, stats=stats[part])
    assert read == expected
    assert sum(s.documents for s in stats) == whole.documents
    assert sum(s.sentences for s in stats) == whole.sentences
    assert sum(sum(s.bad_utf8.values()) for s in stats) == sum(whole.bad_utf8.values()) > 0


def test_parts_are_balanced_and_cut_between_documents(corpus: list[Path]) -> None:
    text = corpus[0]
    sizes = [sum(len("".join(d)) for d in read_part([text], r, 4)) for r in range(4)]
    assert min(sizes) > 0.5 * max(sizes)  # cut near a quarter of the bytes each


@pytest.mark.parametrize("world", [2, 3, 7])
def test_ranks_write_the_directory_one_process_writes(
        corpus: list[Path], tokenizer_dir: Path, single: Path, tmp_path: Path, world: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "MERGE_SENTENCES", 7)  # parts appended in many slices
    out = tmp_path / "shards"
    results = ThreadRanks(world).run(lambda ranks: prepare(corpus, tokenizer_dir, out, ranks))
    assert all(isinstance(r, ShardedCorpus) for r in results), results
    assert_same_directory(single, out)
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]  # no staging left behind
    meta = (out / "meta.json").stat().st_mtime_ns
    ThreadRanks(world).run(lambda ranks: prepare(corpus, tokenizer_dir, out, ranks))
    assert (out / "meta.json").stat().st_mtime_ns == meta  # up to date: reused, not rewritten


def test_an_error_on_one_rank_is_raised_on_every_rank(
        corpus: list[Path], bad_corpus: list[Path], tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    ThreadRanks(2).run(lambda ranks: prepare(corpus, tokenizer_dir, out, ranks))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    message = one_process_error(bad_corpus, tokenizer_dir, tmp_path / "one")
    assert part_of_bad_line(bad_corpus) == 1  # the second rank meets it, at the right line
    results = ThreadRanks(2).run(lambda ranks: prepare(
        bad_corpus, tokenizer_dir, out, ranks, bad_utf8="error", force=True))
    assert [type(r) for r in results] == [UserError, UserError]
    assert [str(r) for r in results] == [message, message]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old one, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_an_empty_corpus_is_refused_on_every_rank(tokenizer_dir: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n")
    results = ThreadRanks(2).run(
        lambda ranks: prepare([blank], tokenizer_dir, tmp_path / "out", ranks))
    assert [str(r) for r in results] == [f"{blank}: empty corpus (no text found)"] * 2
    assert not (tmp_path / "out").exists()


def one_process_error(corpus: list[Path], tokenizer_dir: Path, out: Path) -> str:
    with pytest.raises(UserError) as error:
        prepare(corpus, tokenizer_dir, out, bad_utf8="error")
    lines = corpus[0].read_bytes().split(b"\n")
    line = next(i for i, raw in enumerate(lines, 1) if not is_utf8(raw))
    assert line > 400 and str(error.value) == f"{corpus[0]}:{line}: invalid UTF-8"
    return str(error.value)


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def part_of_bad_line(corpus: list[Path]) -> int:
    """Which of two parts holds the first line that is not UTF-8."""
    for part in range(2):
        try:
            for _ in read_part(corpus, part, 2, bad_utf8="error"):
                pass
        except UserError:
            return part
    raise AssertionError("no invalid line")


def _gloo_rank(rank: int, world: int, store: str, corpus: list[Path], bad_corpus: list[Path],
               tokenizer_dir: Path, out: Path) -> None:
    """A process of the gloo group: prepares `out` with the others, then a corpus it fails on."""
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ranks = Dist(rank=rank, world=world)
        prepare(corpus, tokenizer_dir, out, ranks)
        try:
            prepare(bad_corpus, tokenizer_dir, out, ranks, bad_utf8="error", force=True)
        except UserError as e:
            (out.parent / f"error-{rank}.txt").write_text(str(e))
    finally:
        tdist.destroy_process_group()


def test_two_processes_on_gloo_write_the_directory_one_process_writes(
        corpus: list[Path], bad_corpus: list[Path], tokenizer_dir: Path, single: Path,
        tmp_path: Path) -> None:
    out = tmp_path / "shards"
    store = str(tmp_path / "store")
    mp.spawn(_gloo_rank, args=(2, store, corpus, bad_corpus, tokenizer_dir, out), nprocs=2)
    assert_same_directory(single, out)  # and the failed second preparation left it so
    message = one_process_error(bad_corpus, tokenizer_dir, tmp_path / "one")
    assert [(tmp_path / f"error-{r}.txt").read_text() for r in range(2)] == [message] * 2
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "store")  # no staging
    assert left == ["error-0.txt", "error-1.txt", "shards"]
