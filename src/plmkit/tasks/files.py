"""Reading task files: csv / tsv / jsonl records (and plain text lines), each with its line number,
so that every mistake is reported as one line naming the file, the record's line and the problem.
Text files may be gzip or zstd compressed (``train.csv.gz``); Parquet and Arrow files and
`datasets` directories (`plmkit.data.formats`) give one record per row, numbered from 1.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from plmkit.data import formats
from plmkit.data.formats import read_text
from plmkit.data.jsonl import Record, text_records
from plmkit.errors import UserError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def read_records(path: Path, text_lines: bool = False, text_field: str = "text") -> list[Record]:
    """The records of a csv / tsv (header line first), jsonl (one JSON object a line), Parquet
    or Arrow file or `datasets` directory (a row each); with `text_lines`, any other file is
    read as one {"text": line} record per non-empty line. A `text_field` other than "text" is
    the column of a table read as each record's "text"."""
    path = Path(path)
    records = _records(path, text_lines)
    lines = formats.kind(path) == "text" and formats.inner_suffix(path) not in TABLE_SUFFIXES
    if text_field == "text" or lines:
        return records
    return [(line, {**fields, "text": field(path, (line, fields), text_field)})
            for line, fields in records]


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
