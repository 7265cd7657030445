"""Tokenized corpora as memory-mapped token shards with a sentence and document index.

A prepared directory, built once by `prepare_corpus` and reused while it is up to date::

    meta.json          format, vocab size, dtype, counts, tokenizer fingerprint, sources, shards
    tokens-00000.bin   token ids, raw little-endian uint16 (or uint32 for a vocabulary over 2**16);
                       a sentence never straddles two shards
    sentences.npy      (num_sentences + 1,) int64: where each sentence starts in the token stream
    documents.npy      (num_documents + 1,) int64: the first sentence of each document

Building streams documents through fixed-size batches, so memory does not grow with the corpus;
the directory is written under a temporary name and renamed into place.

Several processes (`torchrun` ranks, on one node or many) prepare one corpus together when
given as `ranks`: each tokenizes its part of the corpus's bytes (`plmkit.data.corpus.read_part`)
into the staging directory, which must be on a filesystem that all of them see; rank 0 then
appends the other parts to its own in order, so the directory is byte for byte the one a
single process writes.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import numpy as np

from plmkit.data.corpus import BadUtf8, CorpusStats, empty_corpus, read_documents, read_part
from plmkit.errors import UserError
from plmkit.outputs import fix_modes, staged
from plmkit.tokenizers import Tokenizer, train_tokenizer

FORMAT = "plmkit-token-shards"
VERSION = 1
META = "meta.json"
SENTENCES = "sentences.npy"
DOCUMENTS = "documents.npy"
COPY_CHUNK = 1 << 20  # index entries copied at a time when finishing
MERGE_SENTENCES = 1 << 16  # sentences of another rank's part appended at a time
UNSHARDED = 2**62  # a part's tokens go into one file
T = TypeVar("T")


class BatchEncoder(Protocol):
    """What `prepare_corpus` needs from a tokenizer."""

    vocab_size: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class Ranks(Protocol):
    """The processes that prepare a corpus together (`plmkit.training.distributed.Dist`)."""

    rank: int
    world: int

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every process, in rank order (on every process)."""
        ...


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def source_info(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Resolved path, size and mtime of each source file: what makes a cache stale."""
    info = []
    for p in paths:
        st = Path(p).stat()
        info.append({"path": str(Path(p).resolve()), "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns})
    return info


class ShardedCorpus:
    """A prepared corpus, memory-mapped: documents of sentences of token ids."""

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.meta = meta
        self.num_documents, self.num_sentences, self.num_tokens, self.vocab_size = (
            int(meta[k]) for k in ("num_documents", "num_sentences", "num_tokens", "vocab_size"))
        self.dtype = np.dtype(meta["dtype"])
        self._shards = [  # plain ndarray views of the maps (here and below): cheaper slicing
            np.asarray(np.memmap(directory / s["file"], dtype=self.dtype, mode="r",
                                 shape=(s["tokens"],)))
            for s in meta["shards"]
        ]
        self._shard_starts = np.cumsum([0] + [s["tokens"] for s in meta["shards"]]).tolist()
        self._sentences = np.asarray(np.load(directory / SENTENCES, mmap_mode="r"))
        self._documents = np.asarray(np.load(directory / DOCUMENTS, mmap_mode="r"))

    @classmethod
    def open(cls, directory: str | Path) -> ShardedCorpus:
        """Memory-map a directory written by `prepare_corpus`."""
        directory = Path(directory)
        meta = _read_meta(directory)
        if meta is None:
            raise UserError(f"{directory}: not a prepared corpus (no valid {META})")
        if meta.get("version") != VERSION:
            raise UserError(f"{directory}: prepared by another plmkit version; prepare it again")
        return cls(directory, meta)

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "meta": self.meta}  # reopen, never copy the maps

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"], state["meta"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return (f"ShardedCorpus({str(self.directory)!r}, documents={self.num_documents}, "
                f"tokens={self.num_tokens})")

    def __len__(self) -> int:
        return self.num_documents

    @property
    def name(self) -> str:
        """The source files, for messages."""
        return ", ".join(s["path"] for s in self.meta["sources"])

    @property
    def stats(self) -> CorpusStats:
        """What reading the sources counted (e.g. lines skipped for invalid UTF-8)."""
        return CorpusStats(**self.meta["stats"])

    def sentence_counts(self) -> np.ndarray:
        """(num_documents,) int64: sentences in each document."""
        return np.diff(self._documents)

    def sentence_starts(self) -> np.ndarray:
        """(num_sentences + 1,) int64, read-only: where each sentence starts in the token stream
        (for arrays aligned with the tokens); the last entry is the number of tokens."""
        return self._sentences

    def document_starts(self) -> np.ndarray:
        """(num_documents + 1,) int64, read-only: the first sentence of each document."""
        return self._documents

    def sentence(self, j: int) -> np.ndarray:
        """Token ids of sentence ``j`` (a read-only view into its shard)."""
        start, end = self._sentences[j : j + 2].tolist()
        return self._span(start, end)

    def document(self, i: int) -> list[np.ndarray]:
        """The sentences of document ``i``, each an array of token ids (read-only views)."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range for {self.num_documents} documents")
        first, end = self._documents[i : i + 2].tolist()
        starts = self._sentences[first : end + 1].tolist()
        k = bisect.bisect_right(self._shard_starts, starts[0]) - 1
        if starts[-1] > self._shard_starts[k + 1]:  # the document straddles two shards
            return [self._span(s, e) for s, e in itertools.pairwise(starts)]
        tokens = self._span(starts[0], starts[-1])  # one read, then views into it
        return [tokens[s - starts[0] : e - starts[0]] for s, e in itertools.pairwise(starts)]

    def _span(self, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` of the stream, all in one shard (a read-only view)."""
        k = bisect.bisect_right(self._shard_starts, start) - 1
        base = self._shard_starts[k]
        return self._shards[k][start - base : end - base]

    def is_up_to_date(self, paths: Iterable[str | Path], fingerprint: str) -> bool:
        """Whether this was built from exactly these files, unchanged, with this tokenizer."""
        try:
            sources = source_info(paths)
        except OSError:
            return False
        return self.meta["fingerprint"] == fingerprint and self.meta["sources"] == sources


def prepare_corpus(
    paths: Sequence[str | Path],
    tokenizer: BatchEncoder,
    out_dir: str | Path,
    *,
    fingerprint: str,
    shard_tokens: int = 2**27,
    batch_docs: int = 1000,
    text_field: str = "text",
    bad_utf8: BadUtf8 = "skip",
    force: bool = False,
    ranks: Ranks | None = None,
) -> ShardedCorpus:
    """Tokenize the documents of ``paths`` into ``out_dir``, or reuse it if up to date.

    ``fingerprint`` identifies the tokenizer (any string that changes when it does); it and the
    sources' sizes and mtimes decide whether an existing directory is reused (unless ``force``).
    With ``ranks`` of more than one process, every process calls this and tokenizes a part.
    """
    out = Path(out_dir)
    if ranks is not None and ranks.world > 1:
        return _prepare_together(paths, tokenizer, out, ranks, fingerprint, shard_tokens,
                                 batch_docs, text_field, bad_utf8, force)
    existing = _reusable(out, paths, fingerprint)
    if existing is not None and not force:
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        stats = CorpusStats()
        docs = read_documents(paths, text_field=text_field, bad_utf8=bad_utf8, stats=stats)
        sources = source_info(paths)  # before reading: a file changed meanwhile reads as stale
        writer = _ShardWriter.of(tmp, tokenizer, shard_tokens)
        _tokenize(docs, tokenizer, writer, batch_docs)
        _finish(writer, paths, tmp, out, fingerprint, sources, stats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ShardedCorpus.open(out)


def _tokenize(docs: Iterator[list[str]], tokenizer: BatchEncoder, writer: _ShardWriter,
              batch_docs: int) -> None:
    for batch in _batched(docs, batch_docs):
        writer.add(batch, tokenizer.encode_batch([s for doc in batch for s in doc]))


def _finish(writer: _ShardWriter, paths: Sequence[str | Path], tmp: Path, out: Path,
            fingerprint: str, sources: list[dict[str, Any]], stats: CorpusStats) -> None:
    """meta.json written into `tmp`, and `tmp` swapped in as `out`."""
    meta = writer.finish() | {"fingerprint": fingerprint, "sources": sources,
                              "stats": dataclasses.asdict(stats)}
    if meta["num_tokens"] == 0:
        names = ", ".join(map(str, paths))
        raise UserError(f"{names}: the tokenizer made no tokens of the text")
    _write_meta(tmp, meta)
    _swap_into_place(tmp, out)


def _prepare_together(paths: Sequence[str | Path], tokenizer: BatchEncoder, out: Path,
                      ranks: Ranks, fingerprint: str, shard_tokens: int, batch_docs: int,
                      text_field: str, bad_utf8: BadUtf8, force: bool) -> ShardedCorpus:
    """`prepare_corpus` by every rank: rank 0 decides whether `out` is reused and makes the
    staging directory; each rank tokenizes its part (rank 0's into the staging directory itself,
    the others' into `part-RANK` inside it); rank 0 appends the other parts in rank order and
    swaps the directory in. An error on any rank is raised on every rank, `out` untouched."""
    main = ranks.rank == 0
    sources: list[dict[str, Any]] = []
    writer: _ShardWriter | None = None

    def plan() -> str | None:  # on rank 0: None to reuse `out`, else the staging directory
        nonlocal sources
        if not force and _reusable(out, paths, fingerprint) is not None:
            return None
        sources = source_info(paths)  # before reading, as in one process
        out.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)

    staging = _together(ranks, plan if main else lambda: None)[0]
    if staging is None:
        return ShardedCorpus.open(out)
    tmp = Path(staging)

    def tokenize_part() -> tuple[dict[str, Any], dict[str, int]]:
        nonlocal writer
        stats = CorpusStats()
        directory = tmp if main else tmp / f"part-{ranks.rank:05d}"
        directory.mkdir(exist_ok=True)
        writer = _ShardWriter.of(directory, tokenizer, shard_tokens if main else UNSHARDED)
        docs = read_part(paths, ranks.rank, ranks.world, text_field=text_field,
                         bad_utf8=bad_utf8, stats=stats)
        _tokenize(docs, tokenizer, writer, batch_docs)
        if not main:
            writer.close()
        return dataclasses.asdict(stats), writer.counts()

    def merge(parts: list[tuple[dict[str, Any], dict[str, int]]]) -> None:  # on rank 0
        assert writer is not None
        stats = _merged_stats([s for s, _ in parts])
        if stats.documents == 0:
            raise empty_corpus(paths)
        for rank, (_, counts) in enumerate(parts[1:], start=1):
            writer.append_part(tmp / f"part-{rank:05d}", **counts)
        _finish(writer, paths, tmp, out, fingerprint, sources, stats)

    try:
        parts = _together(ranks, tokenize_part)
        _together(ranks, (lambda: merge(parts)) if main else lambda: None)
    finally:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
    return ShardedCorpus.open(out)


def _together(ranks: Ranks, step: Callable[[], T]) -> list[T]:
    """`step()` on every rank, its results gathered in rank order; if it failed on some rank,
    every rank raises: its own error, else the first rank's (a `UserError` as one)."""
    try:
        result, error = step(), None
    except Exception as e:  # raised below, once every rank has heard of it
        result, error = None, e
    failure = None if error is None else (isinstance(error, UserError), str(error))
    outcomes = ranks.gather((result, failure))
    if error is not None:
        raise error
    for rank, (_, failed) in enumerate(outcomes):
        if failed is not None:
            user, message = failed
            raise UserError(message) if user else RuntimeError(
                f"preparing the corpus failed on rank {rank}: {message}")
    return [r for r, _ in outcomes]


def _merged_stats(parts: list[dict[str, Any]]) -> CorpusStats:
    """The counts of reading the whole corpus, from those of its parts (in order)."""
    stats = CorpusStats()
    for part in parts:
        stats.documents += part["documents"]
        stats.sentences += part["sentences"]
        for path, n in part["bad_utf8"].items():
            stats.bad_utf8[path] = stats.bad_utf8.get(path, 0) + n
    return stats


def fingerprint(tokenizer: Tokenizer) -> str:
    """A string that changes whenever the tokenizer does."""
    return hashlib.sha256(tokenizer.backend.to_str().encode()).hexdigest()[:16]


def prepare(corpus: list[Path], tokenizer: Path | Tokenizer, out: Path,
            bad_utf8: str = "skip", text_field: str = "text", ranks: Ranks | None = None
            ) -> ShardedCorpus:
    """Tokenize `corpus` into memory-mapped shards in `out` (reused while up to date); with
    `ranks`, every one of them calls this and tokenizes a part (`prepare_corpus`)."""
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
    key = fingerprint(tok) if text_field == "text" else f"{fingerprint(tok)}:{text_field}"
    if (directory := prepared_directory(corpus)) is not None:  # `plmkit data prepare`'s output
        shards = ShardedCorpus.open(directory)
        if shards.meta["fingerprint"] != key:
            raise UserError(f"--corpus {directory}: prepared with another tokenizer; give the "
                            "--tokenizer it was prepared with")
        return shards
    shards = prepare_corpus(corpus, tok, out, fingerprint=key, text_field=text_field,
                            bad_utf8=bad_utf8, ranks=ranks)
    for message in shards.stats.messages():
        print(message)
    return shards


def prepare_out(corpus: list[Path], tokenizer: Path, out: Path, text_field: str = "text"
                ) -> ShardedCorpus:
    """`plmkit data prepare`: the shards of `corpus` written into `out` itself (staged by
    `plmkit.outputs.staged`, so `out` changes only once they are complete)."""
    with staged(out, "data prepare") as tmp:
        prepare(corpus, tokenizer, tmp / "shards", text_field=text_field)
        for path in (tmp / "shards").iterdir():
            path.rename(tmp / path.name)
        (tmp / "shards").rmdir()
    return ShardedCorpus.open(out)


def train_on_corpus(kind: str, corpus: Sequence[Path], vocab_size: int, *,
                    text_field: str = "text", bad_utf8: BadUtf8 = "skip",
                    stats: CorpusStats | None = None, **options: Any) -> Tokenizer:
    """A `kind` tokenizer of at most `vocab_size` tokens trained on the sentences of the
    documents of `corpus` (`plmkit tokenizer train`, `pretrain` and `compare` without a
    --tokenizer); `stats` counts what reading skipped; `options`: `train_tokenizer`'s."""
    texts = (sentence for document in read_documents(corpus, text_field=text_field,
                                                      bad_utf8=bad_utf8, stats=stats)
             for sentence in document)
    return train_tokenizer(kind, texts, vocab_size, **options)


def _reusable(out: Path, paths: Sequence[str | Path], fingerprint: str) -> ShardedCorpus | None:
    meta = _read_meta(out)
    if meta is None or meta.get("version") != VERSION:
        return None
    corpus = ShardedCorpus(out, meta)
    return corpus if corpus.is_up_to_date(paths, fingerprint) else None


def _batched(docs: Iterator[list[str]], n: int) -> Iterator[list[list[str]]]:
    while batch := list(islice(docs, n)):
        yield batch


class _ShardWriter:
    """Appends tokenized documents to shard files and index files, a batch at a time."""

    def __init__(self, directory: Path, dtype: np.dtype, vocab_size: int, shard_tokens: int):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, not {shard_tokens}")
        self.directory, self.dtype = directory, dtype
        self.vocab_size, self.shard_tokens = vocab_size, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.file: BinaryIO | None = None
        self.num_tokens = self.num_sentences = self.num_documents = 0
        self.sentence_index = open(directory / "sentences.raw", "wb")  # noqa: SIM115
        self.document_index = open(directory / "documents.raw", "wb")  # noqa: SIM115

    @classmethod
    def of(cls, directory: Path, tokenizer: BatchEncoder, shard_tokens: int) -> _ShardWriter:
        """A writer of `tokenizer`'s ids, in the narrowest dtype that holds them."""
        vocab = tokenizer.vocab_size
        return cls(directory, token_dtype(vocab), vocab, shard_tokens)

    def add(self, docs: list[list[str]], encoded: list[list[int]]) -> None:
        """Append a batch: ``encoded`` holds the ids of every sentence of ``docs`` in order."""
        lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
        flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64, count=lengths.sum())
        if flat.size and (flat.min() < 0 or flat.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        doc_of = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
        keep = lengths > 0  # a sentence of only whitespace has no tokens
        lengths, doc_of = lengths[keep], doc_of[keep]
        first = np.flatnonzero(np.diff(doc_of, prepend=-1))  # each non-empty doc's first sentence
        self._append(flat.astype(self.dtype), lengths, first)

    def _append(self, tokens: np.ndarray, lengths: np.ndarray, first: np.ndarray) -> None:
        """Append sentences: (T,) `tokens`, (S,) `lengths` summing to T, and (D,) `first`: the
        sentence (of these S) each of D documents starts at."""
        (self.num_sentences + first).astype(np.int64).tofile(self.document_index)
        (self.num_tokens + np.cumsum(lengths) - lengths).tofile(self.sentence_index)
        self._write_tokens(tokens, lengths)
        self.num_documents += len(first)
        self.num_sentences += len(lengths)

    def counts(self) -> dict[str, int]:
        """What `append_part` needs to know of this writer's (closed) part."""
        return {"sentences": self.num_sentences, "documents": self.num_documents,
                "tokens": self.num_tokens}

    def append_part(self, part: Path, sentences: int, documents: int, tokens: int) -> None:
        """Append the part another writer wrote into `part` (one token file, its raw indexes,
        closed) as if its batches had been added here, then delete it. Read a slice at a time
        with plain reads, not maps, so that memory stays flat whatever the part's size."""
        doc = 0  # the part's next document
        for a in range(0, sentences, MERGE_SENTENCES):
            b = min(a + MERGE_SENTENCES, sentences)
            bounds = _read(part / "sentences.raw", np.int64, a, b + 1 - (b == sentences))
            if b == sentences:
                bounds = np.append(bounds, tokens)  # (b - a + 1,) starts, then the end
            firsts = _read(part / "documents.raw", np.int64, doc, min(doc + b - a, documents))
            firsts = firsts[: np.searchsorted(firsts, b)]  # the documents that start in [a, b)
            ids = _read(part / "tokens-00000.bin", self.dtype, int(bounds[0]), int(bounds[-1]))
            self._append(ids, np.diff(bounds), firsts - a)
            doc += len(firsts)
        shutil.rmtree(part)

    def _write_tokens(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        i = offset = 0
        while i < len(lengths):
            room = self.shard_tokens - self._in_shard()
            fit = int(np.searchsorted(np.cumsum(lengths[i:]), room, side="right"))
            if fit == 0 and self._in_shard() > 0:
                self._close_shard()
                continue
            fit = max(fit, 1)  # a sentence longer than a shard gets a shard of its own
            size = int(lengths[i : i + fit].sum())
            self._shard_file().write(flat[offset : offset + size].tobytes())
            self.shards[-1]["tokens"] += size
            self.num_tokens += size
            i, offset = i + fit, offset + size

    def _in_shard(self) -> int:
        return self.shards[-1]["tokens"] if self.file is not None else 0

    def _shard_file(self) -> BinaryIO:
        if self.file is None:
            name = f"tokens-{len(self.shards):05d}.bin"
            self.file = open(self.directory / name, "wb")  # noqa: SIM115
            self.shards.append({"file": name, "tokens": 0})
        return self.file

    def _close_shard(self) -> None:
        if self.file is not None:
            _close_synced(self.file)
            self.file = None

    def close(self) -> None:
        """Close the files, synced: a part, for rank 0 to append (`append_part`)."""
        self._close_shard()
        _close_synced(self.sentence_index)
        _close_synced(self.document_index)

    def finish(self) -> dict[str, Any]:
        """Close the files, turn the indexes into .npy files; return the counts for meta.json."""
        self._close_shard()
        np.array([self.num_tokens], dtype=np.int64).tofile(self.sentence_index)
        np.array([self.num_sentences], dtype=np.int64).tofile(self.document_index)
        for f, name, count in ((self.sentence_index, SENTENCES, self.num_sentences),
                               (self.document_index, DOCUMENTS, self.num_documents)):
            f.close()
            _raw_to_npy(Path(f.name), self.directory / name, count + 1)
        return {
            "format": FORMAT, "version": VERSION, "vocab_size": self.vocab_size,
            "dtype": self.dtype.str, "num_documents": self.num_documents,
            "num_sentences": self.num_sentences, "num_tokens": self.num_tokens,
            "shards": self.shards,
        }


def _read(path: Path, dtype: type | np.dtype, start: int, end: int) -> np.ndarray:
    """Items ``[start, end)`` of the raw array of `dtype` in `path`."""
    size = np.dtype(dtype).itemsize
    return np.fromfile(path, dtype=dtype, count=end - start, offset=start * size)


def _raw_to_npy(raw: Path, npy: Path, count: int) -> None:
    """Copy a raw file of `count` int64 into a .npy file (its header needs the final count)
    with plain reads and writes, a chunk at a time: no maps, so memory stays flat."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)),
              "fortran_order": False, "shape": (count,)}
    with open(raw, "rb") as src, open(npy, "wb") as dst:
        np.lib.format.write_array_header_1_0(dst, header)
        shutil.copyfileobj(src, dst, COPY_CHUNK * 8)
        dst.flush()
        os.fsync(dst.fileno())
    raw.unlink()


def _close_synced(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def prepared_directory(paths: Sequence[str | Path]) -> Path | None:
    """The directory of `paths` when they name one corpus that `plmkit data prepare` wrote."""
    if len(paths) == 1 and Path(paths[0]).is_dir() and _read_meta(Path(paths[0])) is not None:
        return Path(paths[0])
    return None


def _read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    with open(directory / META, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, replacing an earlier prepared corpus (never other data)."""
    fix_modes(tmp)
    if not out.exists():
        os.rename(tmp, out)
        return
    if not out.is_dir() or (any(out.iterdir()) and _read_meta(out) is None):
        raise UserError(f"{out}: exists and is not a prepared corpus; choose another directory")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
