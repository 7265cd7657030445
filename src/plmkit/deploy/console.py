"""Line-at-a-time input of the interactive commands (`plmkit fill-mask` without --text or
--input, `plmkit chat`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO


def prompted_lines(lines: TextIO, out: TextIO, prompt: bool = True) -> Iterator[str]:
    """The non-blank lines of `lines`, stripped, until the end of input; with `prompt`, "> " on
    `out` before each read (for a terminal)."""
    while True:
        if prompt:
            out.write("> ")
            out.flush()
        line = lines.readline()
        if not line:
            return
        if line.strip():
            yield line.strip()
