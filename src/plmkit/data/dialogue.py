"""Dialogues for ERNIE's dialogue language model: the conversations of PyPI `chatterbot-corpus`
(yaml files inside the package), and the plain-text format they are written in: one turn a line,
turns alternating query / response, a blank line between dialogues."""

from __future__ import annotations

import re
from pathlib import Path

from plmkit.data.sources import package_dir, write_corpus
from plmkit.errors import UserError

LANGUAGES = ("chinese", "english")  # the default dialogue data: Chinese and English


def chatterbot_dialogues(languages: tuple[str, ...] = LANGUAGES) -> list[list[str]]:
    """The conversations of `chatterbot-corpus` in `languages`, each a list of turns (a turn's
    line breaks become spaces); conversations of fewer than two turns are left out."""
    import yaml

    root = package_dir("chatterbot_corpus") / "data"
    dialogues = []
    for language in languages:
        for path in sorted((root / language).glob("*.yml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for conversation in data.get("conversations") or []:
                turns = [" ".join(str(t).split()) for t in conversation if str(t).strip()]
                if len(turns) >= 2:
                    dialogues.append(turns)
    if not dialogues:
        raise UserError(f"{root}: no conversations for {', '.join(languages)}")
    return dialogues


def dialogue_corpus(out_dir: Path, *, heldout: float = 0.05, seed: int = 0) -> list[Path]:
    """Write the chatterbot dialogues, shuffled, as train.txt and heldout.txt."""
    return write_corpus(chatterbot_dialogues(), out_dir, heldout, seed)


def read_dialogues(paths: list[str] | list[Path]) -> list[list[str]]:
    """Dialogues of text files: blocks between blank lines, one turn a line; a dialogue needs
    at least two turns (a query and a response)."""
    dialogues = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"{path}: no such dialogue file")
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in re.split(r"\n\s*\n", text):
            turns = [t.strip() for t in block.splitlines() if t.strip()]
            if len(turns) >= 2:
                dialogues.append(turns)
    if len(dialogues) < 2:
        names = ", ".join(map(str, paths))
        raise UserError(f"{names}: need at least 2 dialogues of 2+ turns (one turn a line, a "
                        f"blank line between dialogues), found {len(dialogues)}")
    return dialogues
