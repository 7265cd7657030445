"""Reading task files: csv / tsv / jsonl records (and plain text lines), each with its line number,
so that every mistake is reported as one line naming the file, the record's line and the problem.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from plmkit.errors import UserError

Record = tuple[int, dict[str, Any]]  # (line number, fields)
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def read_text(path: Path) -> str:
    """The file's text, or a UserError naming the line of the first byte that is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: invalid UTF-8") from None


def read_records(path: Path, text_lines: bool = False) -> list[Record]:
    """The records of a csv / tsv (header line first) or jsonl file (one JSON object a line);
    with `text_lines`, any other file is read as one {"text": line} record per non-empty line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES and not text_lines:
        raise UserError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .jsonl")
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: empty file")
    if suffix in (".jsonl", ".json"):
        return _jsonl(path, text)
    if suffix in (".csv", ".tsv"):
        return _table(path, text, "\t" if suffix == ".tsv" else ",")
    return [(i, {"text": line.strip()}) for i, line in enumerate(text.splitlines(), 1)
            if line.strip()]


def _jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{i}: expected a JSON object, got {type(value).__name__}")
        records.append((i, value))
    return records


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
    value = fields.get(key)
    if value is None:
        have = ", ".join(repr(k) for k in fields) or "none"
        raise UserError(f"{path}:{line}: no {key!r} column (the record has {have})")
    return value
