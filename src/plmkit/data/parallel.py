"""Sentence-pair corpora for sequence-to-sequence training ("Attention Is All You Need",
Vaswani et al. 2017, section 5.1): reading pairs, token-count batches with length bucketing, and
the English-Spanish Bible builder.

Files: tsv, one "source<TAB>target" a line, or jsonl with `source` and `target` strings.
Batches: pairs sorted by length, cut into batches of at most `max_tokens` padded tokens (the
paper's batches held ~25k source and ~25k target tokens), batch order shuffled every epoch.
Bible: the World English Bible (`sword-text-web`) and the Reina-Valera 1909
(`sword-text-sparv`) aligned by verse reference, split 80/10/10 by chapter with a fixed seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from plmkit.data.bible import (
    WHOLE_BIBLE,
    Verse,
    chapter_splits,
    diatheke,
    parse_diatheke,
    read_bible,
)
from plmkit.data.formats import read_text
from plmkit.data.jsonl import text_records
from plmkit.errors import UserError
from plmkit.tokenizers import Tokenizer

Pair = tuple[str, str]
Example = tuple[list[int], list[int]]  # source ids + </s>, target ids + </s>
IGNORE = -100  # label of padding positions

APT_PACKAGES = ("diatheke", "sword-text-web", "sword-text-sparv")
SPANISH_MODULES = ("spaRV1909eb", "SpaRV1909", "SpaRV")  # Debian's name, then upstream names
SPLIT_SEED = 0  # the fixed train/dev/test split of the Bible pairs
MIN_CHAPTER_CORRELATION = 0.5  # below: the two versifications disagree on this chapter
MAX_LENGTH_RATIO = 3.0  # a verse pair longer than this on one side is misaligned


# ---------------------------------------------------------------------------------------------
# Reading


def read_pairs(paths: Sequence[Path]) -> list[Pair]:
    """(source, target) pairs of tsv / jsonl files; blank lines are skipped."""
    pairs: list[Pair] = []
    for path in map(Path, paths):
        read = _jsonl_pairs if path.suffix.lower() == ".jsonl" else _tsv_pairs
        found = read(path, read_text(path))
        if not found:
            raise UserError(f"{path}: no sentence pairs")
        pairs.extend(found)
    return pairs


def _tsv_pairs(path: Path, text: str) -> list[Pair]:
    pairs = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise UserError(f"{path}:{i}: expected 'source<TAB>target', got {len(fields)} "
                            "field(s)" + (" with one empty" if len(fields) == 2 else ""))
        pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def _jsonl_pairs(path: Path, text: str) -> list[Pair]:
    pairs = []
    for i, record in text_records(path, text):
        for key in ("source", "target"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise UserError(f"{path}:{i}: missing or empty string field {key!r}")
        pairs.append((record["source"].strip(), record["target"].strip()))
    return pairs


def encode_pairs(pairs: Sequence[Pair], tok: Tokenizer, max_len: int) -> tuple[list[Example], int]:
    """Token ids of each pair, each side ending with </s>; pairs with a side longer than
    `max_len` tokens are dropped. Returns the examples and the number dropped."""
    sources = tok.encode_batch([s for s, _ in pairs])
    targets = tok.encode_batch([t for _, t in pairs])
    eos = tok.sep_id
    examples = [([*s, eos], [*t, eos]) for s, t in zip(sources, targets, strict=True)
                if len(s) < max_len and len(t) < max_len]
    return examples, len(pairs) - len(examples)


# ---------------------------------------------------------------------------------------------
# Batches


def bucket_batches(lengths: Sequence[tuple[int, int]], max_tokens: int) -> list[list[int]]:
    """Indices sorted by (source, target) length, cut greedily so that a batch's padded size,
    count x longest side, stays within `max_tokens` (a longer example gets a batch alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(lengths[i])
        if current and (len(current) + 1) * max(longest, size) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    return batches


class TokenBatches:
    """Length-bucketed batches of at most `max_tokens` padded tokens, in a new seeded order every
    epoch; an endless iterator is not needed (the trainer iterates again). Resumable: the state
    is the epoch and the number of its batches already yielded.

    A batch: `input_ids` (B, S) and `attention_mask` (B, S) of the sources, `decoder_input_ids`
    (B, T) = <s> + target, `labels` (B, T) = target + </s> (-100 on padding).
    """

    def __init__(self, examples: Sequence[Example], max_tokens: int, *, pad_id: int,
                 bos_id: int, seed: int = 0, shuffle: bool = True):
        if not examples:
            raise UserError("no sentence pairs to batch (all empty or longer than --seq-len?)")
        self.examples = examples
        self.batches = bucket_batches([(len(s), len(t)) for s, t in examples], max_tokens)
        self.pad_id, self.bos_id = pad_id, bos_id
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        while self.position < len(order):
            batch = self.batches[order[self.position]]
            self.position += 1
            yield self.collate([self.examples[i] for i in batch])
        self.epoch, self.position = self.epoch + 1, 0

    def collate(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        sources = [s for s, _ in examples]
        targets = [t for _, t in examples]
        return {
            "input_ids": _pad(sources, self.pad_id),  # (B, S)
            "attention_mask": _pad([[1] * len(s) for s in sources], 0),  # (B, S)
            "decoder_input_ids": _pad([[self.bos_id, *t[:-1]] for t in targets], self.pad_id),
            "labels": _pad(targets, IGNORE),  # (B, T)
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _pad(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    """Right-pad `rows` to the longest -> (B, L) int64."""
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


# ---------------------------------------------------------------------------------------------
# The English-Spanish Bible


def spanish_module() -> str:
    """The installed SWORD module of the Reina-Valera 1909."""
    installed = set(diatheke("system", "modulelistnames").split())
    for name in SPANISH_MODULES:
        if name in installed:
            return name
    raise UserError("the Spanish Reina-Valera Bible module is not installed "
                    f"(apt-get install -y {' '.join(APT_PACKAGES)})")


def bible_pairs(key: str = WHOLE_BIBLE) -> list[tuple[Verse, str]]:
    """(WEB verse, Reina-Valera text) for every reference both have in `key`, in Bible order;
    chapters whose verse lengths do not correlate (the versifications differ there, e.g. Numbers
    13) and verse pairs of very unequal length are dropped."""
    spanish = {v.ref: v.text for v in parse_diatheke(diatheke(spanish_module(), key))}
    chapters: dict[tuple[str, int], list[tuple[Verse, str]]] = defaultdict(list)
    for verse in read_bible("web", key):
        if verse.ref in spanish:
            chapters[(verse.book, verse.chapter)].append((verse, spanish[verse.ref]))
    return [(v, es) for rows in chapters.values() if _aligned(rows) for v, es in rows
            if 1 / MAX_LENGTH_RATIO <= len(es) / len(v.text) <= MAX_LENGTH_RATIO]


def _aligned(rows: list[tuple[Verse, str]]) -> bool:
    """Whether the verse lengths of a chapter in the two translations correlate."""
    english = np.array([len(v.text) for v, _ in rows], dtype=float)
    spanish = np.array([len(es) for _, es in rows], dtype=float)
    if len(rows) < 3 or english.std() == 0 or spanish.std() == 0:
        return True
    return float(np.corrcoef(english, spanish)[0, 1]) >= MIN_CHAPTER_CORRELATION


def build_bible_pairs(out_dir: Path, key: str = WHOLE_BIBLE,
                      limit: int | None = None) -> dict[str, Path]:
    """English -> Spanish verse pairs: writes {train,dev,test}.tsv ("english<TAB>spanish", Bible
    order) split by chapter with the fixed `SPLIT_SEED`, and returns their paths; `limit` caps
    the pairs per split."""
    pairs = bible_pairs(key)
    if not pairs:
        raise UserError(f"no verse pairs in {key!r}")
    splits = chapter_splits([v for v, _ in pairs], SPLIT_SEED)
    out = {}
    for split, chapters in splits.items():
        rows = [(v.text, es) for v, es in pairs if (v.book, v.chapter) in chapters][:limit]
        out[split] = _write_tsv(Path(out_dir) / f"{split}.tsv", rows)
    return out


def _write_tsv(path: Path, rows: list[Pair]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{source}\t{target}\n" for source, target in rows)  # no tabs in verses
    path.write_text(text, encoding="utf-8")
    return path
