"""JSON Lines: one JSON object a line. The one reader of corpora (`data/corpus.py`), sentence
pairs (`data/parallel.py`) and task files (`tasks/files.py`), so that each mistake is reported
alike, as one line naming the file, the line and the problem."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from plmkit.errors import UserError, where

Record = tuple[int, dict[str, Any]]  # (line number, fields)


def parse_object(line: str, loc: str) -> dict[str, Any]:
    """One line's JSON object, or a UserError at `loc` ("file:line") saying what is wrong."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        what = e.msg.lower().removesuffix(" at")  # "unterminated string starting at"
        raise UserError(f"{loc}: invalid JSON, {what} at column {e.colno}") from None
    if not isinstance(value, dict):
        raise UserError(f"{loc}: expected a JSON object, got {type(value).__name__}")
    return value


def jsonl_records(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[Record]:
    """(line number, object) of each non-blank line of `path`, given as (line number, text)."""
    for lineno, line in lines:
        if line.strip():
            yield lineno, parse_object(line, where(path, lineno))


def text_records(path: Path, text: str) -> list[Record]:
    """The objects of a whole JSONL text, read from `path`, with their line numbers."""
    return list(jsonl_records(path, enumerate(text.splitlines(), 1)))
