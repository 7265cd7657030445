"""Reading task files: csv / tsv / jsonl records (and plain text lines), each with its line number,
so that every mistake is reported as one line naming the file, the record's line and the problem.
Text files may be gzip or zstd compressed (``train.csv.gz``); Parquet and Arrow files and
`datasets` directories (`plmkit.data.formats`) give one record per row, numbered from 1.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plmkit.data import formats
from plmkit.data.formats import read_text
from plmkit.data.jsonl import Record, text_records
from plmkit.errors import UserError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class Columns:
    """Which columns of a task file hold the text (the first text of a pair when `pair` is
    given), the second text of a pair and the label (`--text-field`, `--text-pair-field`,
    `--label-field`). Reading renames them to the names the tasks read: text (or text_a and
    text_b) and label; the defaults rename nothing."""

    text: str = "text"
    pair: str | None = None
    label: str = "label"

    def rename(self, path: Path, record: Record) -> Record:
        """`record` with the named columns under the tasks' names; a UserError naming the file,
        line and the columns the record has when a text column is missing. A missing label
        column is left to the task (an input to predict has none)."""
        line, fields = record
        if self.pair is not None:
            first = "text_a" if self.text == "text" else self.text
            texts = {"text_a": field(path, record, first), "text_b": field(path, record, self.pair)}
            fields = {**{k: v for k, v in fields.items() if k != "text"}, **texts}
        elif self.text != "text":
            fields = {**fields, "text": field(path, record, self.text)}
        if self.label != "label" and self.label in record[1]:
            fields = {**fields, "label": record[1][self.label]}
        return line, fields


DEFAULT_COLUMNS = Columns()  # text (or text_a, text_b) and label: renames nothing


def read_records(path: Path, text_lines: bool = False, text_field: str = "text",
                 columns: Columns = DEFAULT_COLUMNS) -> list[Record]:
    """The records of a csv / tsv (header line first), jsonl (one JSON object a line), Parquet
    or Arrow file or `datasets` directory (a row each), their `columns` renamed to the tasks'
    names (`text_field`: the text column alone, as `Columns(text_field)`); with `text_lines`,
    any other file is read as one {"text": line} record per non-empty line."""
    path = Path(path)
    columns = Columns(text_field) if text_field != "text" else columns
    records = _records(path, text_lines)
    lines = formats.kind(path) == "text" and formats.inner_suffix(path) not in TABLE_SUFFIXES
    if columns == DEFAULT_COLUMNS or lines:
        return records
    return [columns.rename(path, record) for record in records]


def _records(path: Path, text_lines: bool) -> list[Record]:
    if formats.kind(path) != "text":
        records = list(enumerate(formats.rows(path), 1))
        if not records:
            raise UserError(f"{path}: no rows")
        return records
    suffix = formats.inner_suffix(path)
    if suffix not in TABLE_SUFFIXES and not text_lines:
        raise UserError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv, .jsonl, "
                        ".parquet or .arrow (text files may end in .gz or .zst)")
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: empty file")
    if suffix in (".jsonl", ".json"):
        return text_records(path, text)
    if suffix in (".csv", ".tsv"):
        return _table(path, text, "\t" if suffix == ".tsv" else ",")
    return [(i, {"text": line.strip()}) for i, line in enumerate(text.splitlines(), 1)
            if line.strip()]


def _table(path: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    records = []
    try:
        for row in reader:
            if None in row:
                raise UserError(f"{path}:{reader.line_num}: more fields than the header has")
            if any(row.values()):
                records.append((reader.line_num, row))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: {e}") from None
    if not records:
        raise UserError(f"{path}: no records after the header")
    return records


def field(path: Path, record: Record, key: str) -> Any:
    """`record[key]`, or a UserError naming the file, line and the missing column."""
    line, fields = record
    if key not in fields:
        have = ", ".join(repr(k) for k in fields) or "none"
        raise UserError(f"{path}:{line}: no {key!r} column (the record has {have})")
    value = fields[key]
    if value is None:
        raise UserError(f"{path}:{line}: {key!r} has no value (null, or a row shorter than "
                        "the header)")
    return value
