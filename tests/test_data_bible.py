"""Bible dataset builders on the real SWORD modules (needs apt packages diatheke, sword-text-web,
sword-text-kjv)."""

from __future__ import annotations

import csv
from itertools import pairwise
from pathlib import Path

import pytest

from plmkit.data import bible
from plmkit.data.bible import (
    build_bible_paraphrase,
    build_bible_swag,
    chapter_splits,
    parse_diatheke,
    read_bible,
)
from plmkit.errors import UserError
from plmkit.tasks.swag import read_swag

KEY = "Ruth 1:1-Esther 10:3"  # Ruth .. Esther: 10 books, 204 chapters


def test_parse_diatheke_markup() -> None:
    output = (
        'Genesis 1:1: <w savlm="strong:H0430">In</w> the beginning, <w>God</w><w>created</w> '
        "the heavens.\n"
        '<title canonical="true" type="psalm">A Psalm.</title> <l level="1"/>Psalms 3:1: Yahweh,'
        ' how<l eID="x"/><l level="2"/>many!\n'
        "and more.\n"
        'Psalms 3:2: <q marker="">Amen.</q> <div sID="g1" type="glossary"/> Abba Abba is ...'
        '<div eID="g1" type="glossary"/>\n'
        "(engWEB2015eb)\n"
    )
    verses = parse_diatheke(output)
    assert [(v.ref, v.text) for v in verses] == [
        ("Genesis 1:1", "In the beginning, God created the heavens."),
        ("Psalms 3:1", "Yahweh, how many! and more."),
        ("Psalms 3:2", "Amen."),
    ]


def test_reads_real_verses() -> None:
    web = read_bible("web", KEY)
    kjv = read_bible("kjv", KEY)
    assert web[0].ref == kjv[0].ref == "Ruth 1:1"
    assert web[0].text.startswith("In the days when the judges judged")
    assert kjv[0].text.startswith("Now it came to pass in the days when the judges ruled")
    assert web[-1].ref == kjv[-1].ref == "Esther 10:3"
    assert all(v.text and "<" not in v.text for v in web + kjv)
    assert len({(v.book, v.chapter) for v in web}) == 204


def test_splits_are_by_chapter_and_seeded() -> None:
    verses = read_bible("web", KEY)
    splits = chapter_splits(verses, seed=0)
    assert sum(len(s) for s in splits.values()) == 204
    assert not (splits["train"] & splits["dev"]) and not (splits["dev"] & splits["test"])
    assert (len(splits["train"]), len(splits["dev"]), len(splits["test"])) == (163, 20, 21)
    assert splits == chapter_splits(verses, seed=0) != chapter_splits(verses, seed=1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_bible_swag_gold_ending_is_the_next_verse(tmp_path: Path) -> None:
    paths = build_bible_swag(tmp_path, seed=0, limit=50, key=KEY)
    assert set(paths) == {"train", "dev", "test"}
    web = read_bible("web", KEY)
    following = {a.ref: b.text for a, b in pairwise(web)}
    examples = read_swag(paths["train"])
    assert len(examples) == 50 and {len(ex.endings) for ex in examples} == {4}
    rows = read_csv(paths["train"])
    for row, ex in zip(rows, examples, strict=True):
        assert ex.endings[ex.label] == following[row["id"]]
        assert len(set(ex.endings)) == 4
    assert len({ex.label for ex in examples}) == 4  # the gold position varies
    chapters = {split: {r["id"].rsplit(":", 1)[0] for r in read_csv(p)}
                for split, p in paths.items()}
    assert not chapters["train"] & chapters["test"]
    assert read_csv(build_bible_swag(tmp_path / "again", seed=0, limit=50, key=KEY)["dev"]) \
        == read_csv(paths["dev"])


def test_bible_paraphrase_pairs(tmp_path: Path) -> None:
    paths = build_bible_paraphrase(tmp_path, seed=0, limit=40, key=KEY)
    web = refs_by_text(read_bible("web", KEY))
    kjv = refs_by_text(read_bible("kjv", KEY))
    rows = read_csv(paths["train"])
    assert list(rows[0]) == ["text_a", "text_b", "label"]
    assert len(rows) == 80 and sum(r["label"] == "1" for r in rows) == 40
    for r in rows:
        a, b = web[r["text_a"]], kjv[r["text_b"]]
        assert bool(a & b) == (r["label"] == "1")  # the same verse or not
        assert {ref.rsplit(":", 1)[0] for ref in a} & {ref.rsplit(":", 1)[0] for ref in b}


def refs_by_text(verses: tuple[bible.Verse, ...]) -> dict[str, set[str]]:
    """Each text's verse references (some verses repeat word for word)."""
    out: dict[str, set[str]] = {}
    for v in verses:
        out.setdefault(v.text, set()).add(v.ref)
    return out


def test_missing_diatheke_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bible.shutil, "which", lambda _: None)
    with pytest.raises(UserError, match="apt-get install -y diatheke sword-text-web"):
        bible.diatheke("system", "modulelistnames")
