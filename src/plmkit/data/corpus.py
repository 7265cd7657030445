"""Reading raw corpora: text, jsonl and table files to documents, each a list of sentences.

Plain text holds one sentence or paragraph per line and a blank line between documents (the
format of Google BERT's ``create_pretraining_data.py``); paragraphs are split into sentences
with `split_sentences`. A ``.jsonl`` file holds one JSON object per line, each a document.
Either may be gzip or zstd compressed (``.gz``, ``.zst``). In a Parquet or Arrow file, or a
directory saved by `datasets` (`plmkit.data.formats`), each row's text column is a document.
Files are read line by line or a batch of rows at a time, never whole.

`read_part` reads one of several parts of a corpus (a process's share of `prepare_corpus`): the
bytes cut into equal runs, each cut moved on to the next document boundary, so the parts read in
order give exactly the documents of `read_documents`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from plmkit.data import formats
from plmkit.data.jsonl import jsonl_records
from plmkit.errors import UserError, where

BadUtf8 = Literal["skip", "error"]

SNIFF_BYTES = 8192
MAX_LINE_BYTES = 1 << 24  # a longer line is refused: no sentence or paragraph is 16 MiB
BINARY_UNDECODABLE = 0.3  # more than this fraction of undecodable characters: "looks binary"

# Abbreviations after which "." does not end an English sentence (compared lowercased).
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "fig", "figs", "no",
    "nos", "vol", "eq", "al", "approx", "dept", "est", "inc", "ltd", "co", "corp", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "e.g", "i.e", "u.s",
    "u.k", "a.m", "p.m",
})
_CJK_END = "。！？；"
# A run of sentence-final punctuation and the closing quotes or brackets that follow it.
_END = re.compile(r"[.!?。！？；]+[\"'”’)\]」』）》]*")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_NEXT_CHAR = re.compile(r"\s*(\S?)")


@dataclass
class CorpusStats:
    """Counts gathered while reading; `messages` gives the lines worth telling the user."""

    documents: int = 0
    sentences: int = 0
    bad_utf8: dict[str, int] = field(default_factory=dict)  # file -> lines skipped

    def messages(self) -> list[str]:
        """E.g. ``["skipped 3 lines with invalid UTF-8 in a.txt"]``."""
        return [
            f"skipped {n} line{'s' if n != 1 else ''} with invalid UTF-8 in {path}"
            for path, n in self.bad_utf8.items()
        ]


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences on . ! ? (English, roughly) and 。！？； (Chinese).

    An English full stop ends a sentence only before whitespace and a word that does not start
    in lowercase, and not after a known abbreviation, an initial ("J. Smith") or a dotted
    abbreviation ("U.S."). Chinese sentence-final marks end a sentence wherever they occur.
    """
    sentences, start = [], 0
    for m in _END.finditer(text):
        if _is_boundary(text, m):
            sentences.append(text[start : m.end()])
            start = m.end()
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


def _is_boundary(text: str, m: re.Match[str]) -> bool:
    if any(c in _CJK_END for c in m.group()):
        return True
    end = m.end()
    if end < len(text) and not text[end].isspace():
        return False  # "3.14", "e.g.x", "end.Next"
    if _NEXT_CHAR.match(text, end).group(1).islower():  # type: ignore[union-attr] (always matches)
        return False
    if m.group() != ".":
        return True  # "!", "?", "...", '."'
    word = _WORD_BEFORE.search(text, max(0, m.start() - 32), m.start())  # bounded: no O(n^2)
    if word is None:
        return True
    w = word.group(1).lower()
    dotted = "." in w and w.replace(".", "").isalpha()
    return not (w in ABBREVIATIONS or (len(w) == 1 and w.isalpha()) or dotted)


def read_documents(
    paths: Iterable[str | Path],
    *,
    text_field: str = "text",
    bad_utf8: BadUtf8 = "skip",
    stats: CorpusStats | None = None,
) -> Iterator[list[str]]:
    """Yield the documents of `paths` in order, each a non-empty list of sentences.

    Files are checked up front (missing, a directory, binary); other problems raise `UserError`
    naming the file and line as they are met. Lines with invalid UTF-8 are skipped and counted in
    `stats` (``bad_utf8="skip"``) or raise (``"error"``). A corpus with no text at all raises
    once the files are exhausted.
    """
    files = _checked(paths, text_field, bad_utf8)
    return _documents(files, text_field, bad_utf8, stats if stats is not None else CorpusStats())


def read_part(
    paths: Iterable[str | Path],
    part: int,
    parts: int,
    *,
    text_field: str = "text",
    bad_utf8: BadUtf8 = "skip",
    stats: CorpusStats | None = None,
) -> Iterator[list[str]]:
    """The documents of part `part` of `parts` of the corpus `paths` (see `part_spans`), as
    `read_documents` yields them; a part may be empty, so an empty corpus is not refused here."""
    files = _checked(paths, text_field, bad_utf8)
    stats = stats if stats is not None else CorpusStats()
    spans = part_spans(files, part, parts)
    return (doc for span in spans for doc in _counted(span, text_field, bad_utf8, stats))


@dataclass(frozen=True)
class Span:
    """Bytes ``[start, end)`` of a corpus file, from a document boundary to another (``end``
    None: to the end of the file)."""

    path: Path
    start: int = 0
    end: int | None = None


def part_spans(files: list[Path], part: int, parts: int) -> list[Span]:
    """What part `part` of `parts` reads: the corpus's bytes cut into `parts` equal runs, each cut
    moved on to the next document boundary (past a blank line in text, to a line start in jsonl);
    a compressed file or a table goes whole to the part its first byte falls in."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} out of range for {parts} parts")
    sizes = [_size(path) for path in files]
    total = sum(sizes)
    low, high = total * part // parts, total * (part + 1) // parts
    spans, offset = [], 0
    for path, size in zip(files, sizes, strict=True):
        start = _boundary(path, min(max(low - offset, 0), size), size)
        end = _boundary(path, min(max(high - offset, 0), size), size)
        if start < end:
            spans.append(Span(path, start, None if end == size else end))
        offset += size
    return spans


def _size(path: Path) -> int:
    if path.is_dir():  # a `datasets` directory
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _splittable(path: Path) -> Literal["text", "jsonl", None]:
    """How a file can be cut between documents: plain text at blank lines, jsonl at lines."""
    if formats.kind(path) != "text" or path.suffix.lower() in formats.COMPRESSIONS:
        return None
    return "jsonl" if formats.inner_suffix(path) == ".jsonl" else "text"


def _boundary(path: Path, offset: int, size: int) -> int:
    """The first document boundary at or after byte `offset` of `path` (of `size` bytes)."""
    kind = _splittable(path)
    if offset in (0, size) or kind is None:
        return 0 if offset == 0 else size
    with open(path, "rb") as f:
        f.seek(offset - 1)
        if f.read(1) != b"\n":
            _skip_line(f)  # the rest of the line that holds byte `offset`
        if kind == "jsonl":
            return f.tell()
        continued = False  # inside a line longer than one read
        for raw in iter(lambda: f.readline(MAX_LINE_BYTES + 2), b""):
            if not continued and raw.endswith(b"\n") and _blank(raw):
                return f.tell()
            continued = not raw.endswith(b"\n")
    return size


def _skip_line(f: BinaryIO) -> None:
    """Read `f` past the end of its current line (a long line in several reads)."""
    raw = f.readline(MAX_LINE_BYTES)
    while raw and not raw.endswith(b"\n"):
        raw = f.readline(MAX_LINE_BYTES)


def _blank(raw: bytes) -> bool:
    """Whether a line ends a document as `_text_documents` reads it (invalid UTF-8 is skipped)."""
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def _checked(paths: Iterable[str | Path], text_field: str, bad_utf8: BadUtf8) -> list[Path]:
    """The corpus files, each checked up front (missing, a directory, binary)."""
    if bad_utf8 not in ("skip", "error"):
        raise ValueError(f"bad_utf8 must be 'skip' or 'error', not {bad_utf8!r}")
    files = [Path(p) for p in paths]
    if not files:
        raise UserError("no corpus files given")
    for path in files:
        _check_file(path, text_field)
    return files


def _check_file(path: Path, text_field: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    kind = formats.kind(path)
    if kind != "text":
        formats.check_column(path, text_field)
        return
    if path.is_dir():
        hint = formats.datasets_dict_hint(path)
        raise UserError(hint or f"{path}: is a directory, not a corpus file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file (a FIFO, socket or device), not a corpus")
    try:
        with formats.open_binary(path) as f:
            head = f.read(SNIFF_BYTES)
    except formats.decompress_errors() as e:
        raise formats.corrupt(path, e) from None
    decoded = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False)
    if b"\0" in head or decoded.count("\ufffd") > BINARY_UNDECODABLE * max(1, len(decoded)):
        raise UserError(f"{path}: looks binary, not a UTF-8 text corpus")


def _documents(
    files: list[Path], text_field: str, bad_utf8: BadUtf8, stats: CorpusStats
) -> Iterator[list[str]]:
    for path in files:
        yield from _counted(Span(path), text_field, bad_utf8, stats)
    if stats.documents == 0:
        raise empty_corpus(files)


def empty_corpus(files: Iterable[str | Path]) -> UserError:
    """The error for a corpus of no documents."""
    return UserError(f"{', '.join(map(str, files))}: empty corpus (no text found)")


def _counted(
    span: Span, text_field: str, bad_utf8: BadUtf8, stats: CorpusStats
) -> Iterator[list[str]]:
    for doc in _file_documents(span, text_field, bad_utf8, stats):
        stats.documents += 1
        stats.sentences += len(doc)
        yield doc


def _file_documents(
    span: Span, text_field: str, bad_utf8: BadUtf8, stats: CorpusStats
) -> Iterator[list[str]]:
    path = span.path
    if formats.kind(path) != "text":
        return _table_documents(path, text_field)
    lines = _lines(span, bad_utf8, stats)
    if formats.inner_suffix(path) == ".jsonl":
        return _jsonl_documents(lines, path, text_field)
    return _text_documents(lines)


def _lines(span: Span, bad_utf8: BadUtf8, stats: CorpusStats) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its end) for each line; invalid UTF-8 per policy."""
    try:
        yield from _decoded_lines(span, bad_utf8, stats)
    except formats.decompress_errors() as e:
        raise formats.corrupt(span.path, e) from None


def _decoded_lines(
    span: Span, bad_utf8: BadUtf8, stats: CorpusStats
) -> Iterator[tuple[int, str]]:
    path, position = span.path, span.start
    with formats.open_binary(path) as f:
        first = 1 + _newlines(f, span.start)  # leaves f at span.start
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 2), b""), first):
            if span.end is not None and position >= span.end:
                return
            position += len(raw)
            if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
                raise UserError(f"{where(path, lineno)}: a line over {MAX_LINE_BYTES >> 20} MiB; "
                                "put one sentence or paragraph per line")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if bad_utf8 == "error":
                    raise UserError(f"{where(path, lineno)}: invalid UTF-8") from None
                stats.bad_utf8[str(path)] = stats.bad_utf8.get(str(path), 0) + 1
                continue
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            yield lineno, line.rstrip("\r\n")


def _newlines(f: BinaryIO, size: int) -> int:
    """Line ends in the next `size` bytes of `f`, read in chunks."""
    count = 0
    while size > 0 and (chunk := f.read(min(size, 1 << 22))):
        count += chunk.count(b"\n")
        size -= len(chunk)
    return count


def _text_documents(lines: Iterator[tuple[int, str]]) -> Iterator[list[str]]:
    doc: list[str] = []
    for _, line in lines:
        if line.strip():
            doc.extend(split_sentences(line))
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _table_documents(path: Path, text_field: str) -> Iterator[list[str]]:
    """One document per row of the table's `text_field` column (null rows skipped)."""
    for batch in formats.record_batches(path, [text_field]):
        for text in batch.column(0).to_pylist():
            doc = _paragraph_sentences(text or "")
            if doc:
                yield doc


def _paragraph_sentences(text: str) -> list[str]:
    """The sentences of a document's text: each line a paragraph."""
    return [s for paragraph in text.splitlines() for s in split_sentences(paragraph)]


def _jsonl_documents(
    lines: Iterator[tuple[int, str]], path: Path, text_field: str
) -> Iterator[list[str]]:
    for lineno, record in jsonl_records(path, lines):
        doc = _paragraph_sentences(_json_text(record, where(path, lineno), text_field))
        if doc:
            yield doc


def _json_text(record: dict[str, Any], loc: str, text_field: str) -> str:
    if text_field not in record:
        raise UserError(f"{loc}: no field {text_field!r} (fields: {', '.join(record) or 'none'})")
    text = record[text_field]
    if not isinstance(text, str):
        raise UserError(f"{loc}: field {text_field!r} is {type(text).__name__}, not a string")
    return text
