"""Token classification (BIO tagging, e.g. named entities; BERT section 5.3): a linear layer on
each word's first sub-token (the other sub-tokens get label -100 and are ignored).

Files: CoNLL, one `token ... tag` line per word (token first, tag last, whitespace between), a
blank line between sentences; `-DOCSTART-` lines are skipped. Metrics: entity-level `precision`,
`recall` and `f1` over BIO chunks (conlleval rules, as seqeval's default mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.dropout import Dropout
from plmkit.tasks import register_head
from plmkit.tasks.base import FeatureTask, TaskOutput
from plmkit.tasks.batching import Batch, in_batches, pad_collate, run_model
from plmkit.tasks.files import read_text
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer

IGNORE = -100


@dataclass
class Sentence:
    """One sentence of a CoNLL file: its first line, words and (when given) tags."""

    line: int
    words: list[str]
    tags: list[str] | None


@register_head("tag")
class TokenClassifier(nn.Module):
    """backbone -> hidden (B, S, H) -> dropout -> linear -> logits (B, S, C)."""

    def __init__(self, backbone: nn.Module, labels: list[str]):
        super().__init__()
        config = backbone.config
        self.backbone = backbone
        self.config = config
        self.task = {"name": "tag", "labels": labels}
        self.dropout = Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, len(labels))
        nn.init.normal_(self.classifier.weight, std=config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> TaskOutput:
        """input_ids: (B, S) -> logits (B, S, C)."""
        hidden = self.backbone(input_ids, attention_mask, token_type_ids).last_hidden_state
        return TaskOutput(hidden, self.classifier(self.dropout(hidden)))


class TagTask(FeatureTask):
    """BIO tagging over a tag set read from the training file; see the module docstring."""

    name = "tag"
    main_metric = "f1"
    default_max_seq_len = 128

    def __init__(self, labels: list[str], train: list[Sentence] | None = None):
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}
        self.train = train or []

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return TokenClassifier(backbone, self.labels)

    def train_features(self, tokenizer: Tokenizer, options: FinetuneOptions
                       ) -> list[dict[str, Any]]:
        return self.features(tokenizer, self.train, options)[0]

    def objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"]).logits  # (B, S, C)
        labels = batch["labels"]  # (B, S)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                               ignore_index=IGNORE)
        known = labels != IGNORE
        accuracy = (logits.argmax(-1) == labels)[known].float().mean()
        return loss, {"token_accuracy": accuracy}

    def read_eval(self, path: Path) -> list[Sentence]:
        return self.read(path, need_tags=True)

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        sentences = self.read_eval(path)
        predicted = self.tag(model, tokenizer, sentences, options)
        return entity_scores([s.tags for s in sentences], predicted)  # type: ignore[misc]

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        sentences = self.read(path, need_tags=False)
        predicted = self.tag(model, tokenizer, sentences, options)
        return [{"tokens": s.words, "tags": tags, "entities": entities(s.words, tags)}
                for s, tags in zip(sentences, predicted, strict=True)]

    def tag(self, model: nn.Module, tokenizer: Tokenizer, sentences: list[Sentence],
            options: FinetuneOptions) -> list[list[str]]:
        """The predicted tag of each word; "O" for words cut off by max_seq_len."""
        features, starts = self.features(tokenizer, sentences, options)
        batches = in_batches(features, options.batch_size, pad_collate(tokenizer.pad_id))
        best = [row for _, out in run_model(model, batches)
                for row in out.logits.argmax(-1).tolist()]  # N x (S,)
        return [[self.labels[row[p]] for p in first] + ["O"] * (len(s.words) - len(first))
                for s, row, first in zip(sentences, best, starts, strict=True)]

    def features(self, tokenizer: Tokenizer, sentences: Sequence[Sentence],
                 options: FinetuneOptions) -> tuple[list[dict[str, Any]], list[list[int]]]:
        """Features ([CLS] sub-tokens [SEP], labels on first sub-tokens) and, per sentence,
        the positions of the first sub-token of each word that fits in max_seq_len."""
        assert options.max_seq_len is not None
        words = [w for s in sentences for w in s.words]
        pieces = iter(tokenizer.encode_batch(words))
        features, starts = [], []
        for s in sentences:
            ids, labels, first = [tokenizer.cls_id], [IGNORE], []
            for i, word_ids in enumerate([next(pieces) for _ in s.words]):
                word_ids = word_ids or [tokenizer.unk_id]
                if len(ids) + len(word_ids) >= options.max_seq_len:
                    break
                first.append(len(ids))
                tag = IGNORE if s.tags is None else self.index[s.tags[i]]
                ids += word_ids
                labels += [tag] + [IGNORE] * (len(word_ids) - 1)
            ids.append(tokenizer.sep_id)
            labels.append(IGNORE)
            feature = {"input_ids": ids, "attention_mask": [1] * len(ids),
                       "token_type_ids": [0] * len(ids)}
            if s.tags is not None:
                feature["labels"] = labels
            features.append(feature)
            starts.append(first)
        return features, starts

    def read(self, path: Path, need_tags: bool) -> list[Sentence]:
        """The sentences of `path`, their tags checked against the tag set."""
        sentences = read_conll(path, need_tags)
        for s in sentences:
            for offset, tag in enumerate(s.tags or []):
                if tag not in self.index:
                    raise UserError(f"{path}:{s.line + offset}: tag {tag!r} is not in the "
                                    f"training tags {self.labels}")
        return sentences


def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None) -> TagTask:
    """The task for a CoNLL training file (tag set read from it) or a saved model's task dict."""
    if saved is not None:
        return TagTask(list(saved["labels"]))
    if train is None:
        raise ValueError("make_task needs a training file or a saved task")
    sentences = read_conll(train, need_tags=True)
    tags = {t for s in sentences for t in s.tags or []}
    return TagTask(sorted(tags, key=lambda t: (t != "O", t[2:], t[:1])), sentences)


def read_conll(path: Path, need_tags: bool) -> list[Sentence]:
    """Sentences of a CoNLL file; tags (the last column, BIO) required when `need_tags`."""
    sentences: list[Sentence] = []
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate([*read_text(path).splitlines(), ""], 1):
        columns = line.split()
        if columns and columns[0] != "-DOCSTART-":
            rows.append((number, columns))
        elif rows:
            sentences.append(_sentence(path, rows, need_tags))
            rows = []
    if not sentences:
        raise UserError(f"{path}: no sentences (expected CoNLL: 'token tag' lines)")
    return sentences


def _sentence(path: Path, rows: list[tuple[int, list[str]]], need_tags: bool) -> Sentence:
    words = [columns[0] for _, columns in rows]
    if not need_tags and all(len(columns) == 1 for _, columns in rows):
        return Sentence(rows[0][0], words, None)
    for number, columns in rows:
        if len(columns) < 2:
            raise UserError(f"{path}:{number}: expected 'token tag', got {columns[0]!r} alone")
        tag = columns[-1]
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise UserError(f"{path}:{number}: tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)")
    return Sentence(rows[0][0], words, [columns[-1] for _, columns in rows])


def chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of a BIO sequence as (type, start, end) with end exclusive. A chunk starts
    at B-X, or at I-X after O or another type (conlleval), and ends before any tag that is not
    I- of its own type."""
    found = set()
    start, kind = None, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and (prefix != "I" or t != kind):
            found.add((kind, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, t
    return found


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """Entity-level micro `precision`, `recall` and `f1`: an entity counts when its type,
    start and end all match."""
    correct = predicted = actual = 0
    for g, p in zip(gold, pred, strict=True):
        gc, pc = chunks(g), chunks(p)
        correct += len(gc & pc)
        predicted += len(pc)
        actual += len(gc)
    precision = correct / predicted if predicted else 0.0
    recall = correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entities(words: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """The entities of one tagged sentence as JSON-able records."""
    return [{"type": kind, "start": start, "end": end, "tokens": list(words[start:end])}
            for kind, start, end in sorted(chunks(tags), key=lambda c: c[1])]
