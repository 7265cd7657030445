"""Fine-tuning data sets built from the public-domain Bibles that Debian ships as SWORD modules
(`sword-text-web`: World English Bible, `sword-text-kjv`: King James Version), read with
`diatheke`. Every builder splits by chapter (80 / 10 / 10, seeded), so that no chapter's verses
are in two splits, and writes standard files:

- `build_bible_swag`: "which verse comes next", four endings, SWAG csv (`plmkit.tasks.swag`);
- `build_bible_paraphrase`: the same verse in WEB and KJV (label 1) against the KJV of another
  verse of the same chapter (label 0), csv `text_a,text_b,label` for sentence-pair classification;
- `build_bible_relatedness`: graded pairs (0-3: another book, same chapter, next verse, same
  verse) with the same columns, for `plmkit finetune --task similarity`.
"""

from __future__ import annotations

import csv
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from plmkit.errors import UserError

APT_PACKAGES = ("diatheke", "sword-text-web", "sword-text-kjv")
# SWORD module names: Debian's current packages, then the older / upstream names.
MODULES = {"web": ("engWEB2015eb", "WEB"), "kjv": ("engKJV2006eb", "KJV")}
WHOLE_BIBLE = "Genesis 1:1-Revelation 22:21"
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
NUM_ENDINGS = 4

# Back matter (WEB's glossary) that diatheke appends to the last verse of its range.
_BACK_MATTER = re.compile(r'<div sID="([^"]+)" type="(?:glossary|introduction)"/>.*?'
                          r'(?:<div eID="\1"[^>]*/>|\Z)', re.S)
_DROPPED = re.compile(r"<(title|speaker|note)\b[^>]*>.*?</\1>", re.S)  # headings, not verse text
_GLUED = re.compile(r"(?<=\w)(?:</[^>]+>)+(?:<[^/>][^>]*>)+(?=\w)")  # WEB's "God</w><w>created"
_SPACE_TAGS = re.compile(r"<(?:l|lb|lg|div|p)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_VERSE = re.compile(r"^\s*(\S.*?) (\d+):(\d+): ?(.*)$")
_MODULE_LINE = re.compile(r"^\((\w+)\)$")


@dataclass(frozen=True)
class Verse:
    book: str
    chapter: int
    verse: int
    text: str

    @property
    def ref(self) -> str:
        return f"{self.book} {self.chapter}:{self.verse}"


def diatheke(module: str, key: str) -> str:
    """`diatheke -b module -k key` (SWORD's default OSIS-like output) as text."""
    exe = shutil.which("diatheke")
    if exe is None:
        raise UserError(f"diatheke is not installed (apt-get install -y {' '.join(APT_PACKAGES)})")
    done = subprocess.run([exe, "-b", module, "-k", key], capture_output=True, check=False)
    return done.stdout.decode("utf-8", errors="replace")


def module_name(version: str) -> str:
    """The installed SWORD module of `version` ("web" or "kjv")."""
    installed = set(diatheke("system", "modulelistnames").split())
    for name in MODULES[version]:
        if name in installed:
            return name
    raise UserError(f"the {version.upper()} Bible module is not installed "
                    f"(apt-get install -y {' '.join(APT_PACKAGES)})")


@lru_cache(maxsize=4)
def read_bible(version: str, key: str = WHOLE_BIBLE) -> tuple[Verse, ...]:
    """The verses of `version` ("web" or "kjv") in `key` (a diatheke range), in order, markup
    removed; verses the translation leaves empty are skipped."""
    verses = parse_diatheke(diatheke(module_name(version), key))
    if not verses:
        raise UserError(f"diatheke returned no verses of the {version.upper()} for {key!r}")
    return tuple(verses)


def parse_diatheke(output: str) -> list[Verse]:
    """Verses from diatheke's output: a line "Book C:V: text" starts a verse, other lines (poetry)
    continue it; the last line names the module."""
    verses: list[Verse] = []
    lines: list[str] = []
    head: tuple[str, int, int] | None = None
    for raw in _BACK_MATTER.sub("", output).splitlines():
        line = clean_markup(raw)
        match = _VERSE.match(line)
        if match or _MODULE_LINE.match(line.strip()):
            if head is not None and (text := " ".join(lines).strip()):
                verses.append(Verse(*head, text))
            head, lines = None, []
        if match:
            head = match[1], int(match[2]), int(match[3])
            lines = [match[4]]
        elif head is not None:
            lines.append(line)
    if head is not None and (text := " ".join(lines).strip()):
        verses.append(Verse(*head, text))
    return verses


def clean_markup(line: str) -> str:
    """Plain text of one line of OSIS markup: headings dropped, glued words separated."""
    line = _DROPPED.sub("", line)
    line = _GLUED.sub(" ", line)
    line = _TAG.sub("", _SPACE_TAGS.sub(" ", line))
    return " ".join(line.split())


def chapter_splits(verses: Sequence[Verse], seed: int) -> dict[str, set[tuple[str, int]]]:
    """Chapters shuffled by `seed` and cut 80 / 10 / 10 into train / dev / test."""
    chapters = sorted({(v.book, v.chapter) for v in verses})
    random.Random(seed).shuffle(chapters)
    out, start = {}, 0
    for i, (name, share) in enumerate(SPLITS):
        end = len(chapters) if i == len(SPLITS) - 1 else start + round(share * len(chapters))
        out[name] = set(chapters[start:end])
        start = end
    return out


def build_bible_corpus(out_dir: Path, seed: int = 0, key: str = WHOLE_BIBLE) -> dict[str, Path]:
    """The WEB as a pretraining corpus, a chapter a document and a verse a line: train.txt holds
    the chapters of the task builders' train split, heldout.txt those of their dev split; the
    test chapters are in neither (a model continued on it has not read bible-swag's or
    bible-paraphrase's test verses)."""
    verses = read_bible("web", key)
    splits = chapter_splits(verses, seed)
    out = {}
    for split, name in (("train", "train.txt"), ("dev", "heldout.txt")):
        chapters: dict[tuple[str, int], list[str]] = {}
        for v in verses:
            if (v.book, v.chapter) in splits[split]:
                chapters.setdefault((v.book, v.chapter), []).append(v.text)
        out[split] = out_dir / name
        out_dir.mkdir(parents=True, exist_ok=True)
        out[split].write_text("\n\n".join("\n".join(c) for c in chapters.values()) + "\n",
                              encoding="utf-8")
    return out


def build_bible_swag(out_dir: Path, seed: int = 0, limit: int | None = None,
                     key: str = WHOLE_BIBLE) -> dict[str, Path]:
    """"Which verse comes next" from the WEB: context = a verse, endings = the next verse of the
    same chapter and three verses drawn from other chapters; the gold ending's position is
    random. Writes {train,dev,test}.csv with SWAG's columns (`sent2` empty) and
    returns their paths; `limit` caps the examples per split."""
    verses = read_bible("web", key)
    if len({(v.book, v.chapter) for v in verses}) < 2:
        raise UserError(f"{key!r}: a multiple-choice set needs verses of two chapters or more")
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {}
    for split, chapters in chapter_splits(verses, seed).items():
        part = [v for v in verses if (v.book, v.chapter) in chapters]
        rows[split] = _swag_rows(part, verses, rng, limit)
    fields = ["id", "sent1", "sent2", *(f"ending{i}" for i in range(NUM_ENDINGS)), "label"]
    return {split: _write_csv(out_dir / f"{split}.csv", fields, r) for split, r in rows.items()}


def _swag_rows(verses: list[Verse], pool: Sequence[Verse], rng: random.Random,
               limit: int | None) -> list[dict]:
    pairs = [(a, b) for a, b in pairwise(verses)
             if (a.book, a.chapter) == (b.book, b.chapter)]
    rng.shuffle(pairs)
    rows = []
    for context, true_next in pairs[:limit]:
        endings = [true_next.text]
        while len(endings) < NUM_ENDINGS:
            other = rng.choice(pool)
            if (other.book, other.chapter) != (context.book, context.chapter) \
                    and other.text not in endings:
                endings.append(other.text)
        label = rng.randrange(NUM_ENDINGS)
        endings[0], endings[label] = endings[label], endings[0]
        rows.append({"id": context.ref, "sent1": context.text, "sent2": "",
                     **{f"ending{i}": e for i, e in enumerate(endings)}, "label": label})
    return rows


def web_and_kjv(key: str) -> tuple[list[Verse], dict[str, Verse], dict[tuple[str, int],
                                                                      list[Verse]]]:
    """The WEB verses that the KJV also has, the KJV by reference, and each chapter's KJV
    verses."""
    web = read_bible("web", key)
    kjv = {v.ref: v for v in read_bible("kjv", key)}
    shared = [v for v in web if v.ref in kjv]
    by_chapter: dict[tuple[str, int], list[Verse]] = {}
    for v in shared:
        by_chapter.setdefault((v.book, v.chapter), []).append(kjv[v.ref])
    return shared, kjv, by_chapter


def build_bible_paraphrase(out_dir: Path, seed: int = 0, limit: int | None = None,
                           key: str = WHOLE_BIBLE) -> dict[str, Path]:
    """Paraphrase pairs: text_a = a WEB verse, text_b = the same verse in the KJV (label 1) or the
    KJV of another verse of the same chapter (label 0), one of each per verse, shuffled. Verses
    missing from either translation are skipped. Writes {train,dev,test}.csv; `limit` caps the
    verses per split (two rows each)."""
    shared, kjv, by_chapter = web_and_kjv(key)
    rng = random.Random(seed)
    out = {}
    for split, chapters in chapter_splits(shared, seed).items():
        part = [v for v in shared if (v.book, v.chapter) in chapters]
        rng.shuffle(part)
        rows = []
        for v in part[:limit]:
            same = kjv[v.ref].text
            others = [k for k in by_chapter[(v.book, v.chapter)] if k.text != same]
            rows.append({"text_a": v.text, "text_b": same, "label": 1})
            if others:
                rows.append({"text_a": v.text, "text_b": rng.choice(others).text, "label": 0})
        rng.shuffle(rows)
        out[split] = _write_csv(out_dir / f"{split}.csv", ["text_a", "text_b", "label"], rows)
    return out


def build_bible_relatedness(out_dir: Path, seed: int = 0, limit: int | None = None,
                            key: str = WHOLE_BIBLE) -> dict[str, Path]:
    """Graded relatedness pairs: text_a = a WEB verse, text_b = a KJV verse that is (label) 3 the
    same verse, 2 the next or previous verse, 1 another verse of the same chapter, 0 a verse of
    another book of the same split; one of each per verse (a level is skipped when the chapter
    has no such verse), shuffled. Writes {train,dev,test}.csv; `limit` caps the verses per split
    (four rows each)."""
    shared, kjv, by_chapter = web_and_kjv(key)
    rng = random.Random(seed)
    out = {}
    for split, chapters in chapter_splits(shared, seed).items():
        part = [v for v in shared if (v.book, v.chapter) in chapters]
        pool = [kjv[v.ref] for v in part]
        rng.shuffle(part)
        rows = []
        for v in part[:limit]:
            same = kjv[v.ref]
            chapter = [k for k in by_chapter[(v.book, v.chapter)] if k.text != same.text]
            near = [k for k in chapter if abs(k.verse - same.verse) == 1]
            far = [k for k in chapter if abs(k.verse - same.verse) > 1]
            draws = (rng.choice(pool) for _ in range(100))
            other = next((k for k in draws if k.book != v.book), None)
            for label, k in ((3, same), (2, near), (1, far), (0, other)):
                if isinstance(k, list):
                    k = rng.choice(k) if k else None
                if k is not None:
                    rows.append({"text_a": v.text, "text_b": k.text, "label": label})
        rng.shuffle(rows)
        out[split] = _write_csv(out_dir / f"{split}.csv", ["text_a", "text_b", "label"], rows)
    return out


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
