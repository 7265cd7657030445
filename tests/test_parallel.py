"""Sentence-pair files, token-count batches with length bucketing, and the English-Spanish Bible
pairs (real SWORD modules: needs diatheke, sword-text-web and sword-text-sparv)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plmkit.data.parallel import (
    IGNORE,
    TokenBatches,
    bible_pairs,
    bucket_batches,
    build_bible_pairs,
    encode_pairs,
    read_pairs,
)
from plmkit.errors import UserError
from plmkit.objectives.seq2seq import Seq2Seq
from plmkit.tokenizers import train_tokenizer

GOSPELS = "Matthew 1:1-Mark 16:20"  # 44 chapters


def test_read_tsv_and_jsonl(tmp_path: Path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_text("Hello.\tHola.\n\nGood night.\tBuenas noches.\n", encoding="utf-8")
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(json.dumps({"source": "Yes.", "target": "Sí.", "id": 3}) + "\n",
                     encoding="utf-8")
    assert read_pairs([tsv, jsonl]) == [("Hello.", "Hola."), ("Good night.", "Buenas noches."),
                                        ("Yes.", "Sí.")]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.tsv", "ok\tbien\nno tab here\n", "bad.tsv:2: expected 'source<TAB>target'"),
    ("bad.tsv", "a\tb\tc\n", "bad.tsv:1: expected 'source<TAB>target', got 3"),
    ("bad.tsv", "a\t \n", "with one empty"),
    ("bad.jsonl", '{"source": "a"}\n', "bad.jsonl:1: missing or empty string field 'target'"),
    ("bad.jsonl", "{oops\n", "bad.jsonl:1: invalid JSON"),
    ("empty.tsv", "\n\n", "empty.tsv: no sentence pairs"),
])
def test_bad_pair_files_name_file_and_line(tmp_path: Path, name: str, text: str,
                                           message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        read_pairs([path])


def test_bucket_batches_respect_the_token_budget() -> None:
    lengths = [(n % 13 + 1, (n * 7) % 17 + 1) for n in range(200)]
    batches = bucket_batches(lengths, max_tokens=60)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for batch in batches:
        longest = max(max(lengths[i]) for i in batch)
        assert len(batch) * longest <= 60 or len(batch) == 1
    # bucketing: a batch holds sources of nearly one length
    assert all(max(lengths[i][0] for i in b) - min(lengths[i][0] for i in b) <= 1
               for b in batches)


def _examples() -> list[tuple[list[int], list[int]]]:
    return [([5 + i % 4] * (1 + i % 5) + [2], [9] * (1 + i % 3) + [2]) for i in range(40)]


def test_collate_shifts_the_target() -> None:
    batches = TokenBatches(_examples(), 30, pad_id=1, bos_id=0, shuffle=False)
    batch = batches.collate([([5, 6, 2], [7, 8, 9, 2]), ([5, 2], [7, 2])])
    assert batch["input_ids"].tolist() == [[5, 6, 2], [5, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["decoder_input_ids"].tolist() == [[0, 7, 8, 9], [0, 7, 1, 1]]
    assert batch["labels"].tolist() == [[7, 8, 9, 2], [7, 2, IGNORE, IGNORE]]


def test_token_batches_reshuffle_each_epoch_and_resume() -> None:
    batches = TokenBatches(_examples(), 30, pad_id=1, bos_id=0, seed=3)
    first = [b["input_ids"].tolist() for b in batches]
    second = [b["input_ids"].tolist() for b in batches]
    assert len(first) == len(batches) > 3
    assert sorted(map(str, first)) == sorted(map(str, second)) and first != second
    it = iter(batches)
    next(it), next(it)
    state = batches.state_dict()
    rest = [b["input_ids"].tolist() for b in it]
    again = TokenBatches(_examples(), 30, pad_id=1, bos_id=0, seed=3)
    again.load_state_dict(state)
    assert [b["input_ids"].tolist() for b in again] == rest


def test_seq2seq_batches_drop_overlong_pairs(capsys) -> None:
    pairs = [("a b c", "x y"), ("a " * 40, "x"), ("b c", "y " * 40)]
    tok = train_tokenizer("bpe", [t for p in pairs for t in p], 300)
    examples, dropped = encode_pairs(pairs, tok, max_len=10)
    assert dropped == 2 and examples[0][0][-1] == tok.sep_id == examples[0][1][-1]
    from plmkit.data.options import DataOptions

    Seq2Seq().batches(pairs, tok, DataOptions(batch_size=2), seq_len=10, seed=0)
    assert "left out 2 of 3 pairs" in capsys.readouterr().out


def test_bible_pairs_are_aligned_by_reference() -> None:
    pairs = {v.ref: (v.text, es) for v, es in bible_pairs("John 3:14-John 3:18")}
    english, spanish = pairs["John 3:16"]
    assert english.startswith("For God so loved the world")
    assert spanish.startswith("Porque de tal manera amó Dios al mundo")
    assert "<" not in english + spanish


def test_chapters_numbered_differently_are_dropped() -> None:
    refs = {v.ref for v, _ in bible_pairs("Numbers 12:1-Numbers 13:33")}
    assert "Numbers 12:3" in refs
    assert not any(r.startswith("Numbers 13:") for r in refs)  # RV1909 13:1 = WEB 12:16


def test_build_bible_pairs_fixed_chapter_splits(tmp_path: Path) -> None:
    paths = build_bible_pairs(tmp_path / "a", key=GOSPELS)
    again = build_bible_pairs(tmp_path / "b", key=GOSPELS)
    assert set(paths) == {"train", "dev", "test"}
    for split in paths:
        assert paths[split].read_bytes() == again[split].read_bytes()  # fixed
    splits = {s: read_pairs([p]) for s, p in paths.items()}
    sizes = {s: len(v) for s, v in splits.items()}
    assert sizes["train"] > 4 * sizes["dev"] > 0 and sizes["test"] > 0
    train, dev, test = (set(v) for v in splits.values())
    assert not (train & dev) and not (train & test) and not (dev & test)
