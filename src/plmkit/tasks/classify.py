"""Sequence classification and regression, single texts and pairs, on the [CLS] vector (BERT
section 4.1: a softmax layer over the pooled [CLS] representation), mean pooling or pooling
by multi-head attention (PMA, Lee et al. 2019: `tasks.base.pool`).

Files: csv / tsv / jsonl / table with a `text` column (or `text_a` and `text_b` for pairs) and
`label`, or the columns that `FinetuneOptions.columns` names.
The label set comes from the training file; regression (`regression=True`) needs numbers.
Metrics: `accuracy`, `macro_f1` (regression: `mse`, `pearson`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.dropout import Dropout
from plmkit.tasks import register_head
from plmkit.tasks.base import HEAD_POOLINGS, FeatureTask, TaskOutput, pool, pooling_module
from plmkit.tasks.batching import Batch, pad_collate, rows_by_length
from plmkit.tasks.files import DEFAULT_COLUMNS, Columns, Record, field, read_records
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer


@dataclass
class Example:
    """One record of a classification file."""

    line: int
    text: str
    pair: str | None
    label: str | float | None


@register_head("classify")
class SequenceClassifier(nn.Module):
    """backbone -> pooled vector (B, H) -> dropout -> linear -> logits (B, C); C = 1 for
    regression (`labels=None`)."""

    def __init__(self, backbone: nn.Module, labels: list[str] | None, pooling: str = "cls"):
        super().__init__()
        config = backbone.config
        self.backbone = backbone
        self.config = config
        self.task = {"name": "classify", "labels": labels, "pooling": pooling}
        self.dropout = Dropout(config.dropout)
        self.pma = pooling_module(pooling, config)  # None unless pooling "pma"
        self.classifier = nn.Linear(config.hidden_size, len(labels) if labels else 1)
        nn.init.normal_(self.classifier.weight, std=config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> TaskOutput:
        """input_ids: (B, S) -> logits (B, C)."""
        out = self.backbone(input_ids, attention_mask, token_type_ids)
        pooled = pool(out, attention_mask, self.task["pooling"], self.pma)  # (B, H)
        return TaskOutput(out.last_hidden_state, self.classifier(self.dropout(pooled)))


class ClassifyTask(FeatureTask):
    """The classification task over a label set (None: regression); see the module docstring."""

    name = "classify"
    default_max_seq_len = 128

    def __init__(self, labels: list[str] | None, pooling: str = "cls",
                 train: list[Example] | None = None, train_path: Path | None = None,
                 columns: Columns = DEFAULT_COLUMNS):
        if pooling not in HEAD_POOLINGS:
            raise UserError(f"unknown pooling {pooling!r}; use {' or '.join(HEAD_POOLINGS)}")
        self.labels = labels
        self.pooling = pooling
        self.train = train or []
        self.train_path = train_path
        self.columns = columns  # of the training and eval files
        self.main_metric = "accuracy" if labels is not None else "pearson"

    @property
    def regression(self) -> bool:
        return self.labels is None

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return SequenceClassifier(backbone, self.labels, self.pooling)

    def train_features(self, tokenizer: Tokenizer, options: FinetuneOptions
                       ) -> list[dict[str, Any]]:
        return self.features(tokenizer, self.train, options)

    def objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"]).logits  # (B, C)
        labels = batch["labels"]  # (B,)
        if self.regression:
            loss = F.mse_loss(logits[:, 0].float(), labels)
            return loss, {}
        loss = F.cross_entropy(logits.float(), labels)
        return loss, {"accuracy": (logits.argmax(-1) == labels).float().mean()}

    def read_eval(self, path: Path) -> list[Example]:
        return self.read(path, need_label=True)

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        examples = self.read(path, need_label=True, columns=options.columns())
        scores = self.scores(model, tokenizer, examples, options)  # (N, C)
        if self.regression:
            gold = [float(e.label) for e in examples]  # type: ignore[arg-type]
            return regression_metrics(gold, scores[:, 0].tolist())
        assert self.labels is not None
        index = {label: i for i, label in enumerate(self.labels)}
        return classification_metrics([index[e.label] for e in examples],  # type: ignore[index]
                                      scores.argmax(-1).tolist())

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        examples = self.read(path, need_label=False, text_lines=True, columns=options.columns())
        scores = self.scores(model, tokenizer, examples, options)
        records = []
        for example, row in zip(examples, scores.tolist(), strict=True):
            text = {"text": example.text} if example.pair is None else {
                "text_a": example.text, "text_b": example.pair}
            if self.labels is None:
                records.append({**text, "score": row[0]})
            else:
                best = max(range(len(row)), key=row.__getitem__)
                records.append({**text, "label": self.labels[best],
                                "scores": dict(zip(self.labels, row, strict=True))})
        return records

    def scores(self, model: nn.Module, tokenizer: Tokenizer, examples: list[Example],
               options: FinetuneOptions) -> Tensor:
        """(N, C): class probabilities, or the predicted value (C = 1) for regression."""
        features = self.features(tokenizer, examples, options)
        logits = rows_by_length(model, features, options.batch_size,
                                pad_collate(tokenizer.pad_id), lambda _, o: o.logits)  # (N, C)
        return logits if self.regression else logits.softmax(-1)

    def features(self, tokenizer: Tokenizer, examples: Sequence[Example],
                 options: FinetuneOptions) -> list[dict[str, Any]]:
        """Token ids, masks and (when known) the label index or target of each example."""
        assert options.max_seq_len is not None
        pairs = [e.pair for e in examples]
        encoded = tokenizer([e.text for e in examples],
                            None if pairs[0] is None else pairs,  # type: ignore[arg-type]
                            max_length=options.max_seq_len, padding=False, return_tensors=False)
        features = [dict(zip(encoded, values, strict=True))
                    for values in zip(*encoded.values(), strict=True)]
        for feature, example in zip(features, examples, strict=True):
            if example.label is not None:
                feature["labels"] = (float(example.label) if self.regression
                                     else self.labels.index(example.label))  # type: ignore[union-attr]
        return features

    def read(self, path: Path, need_label: bool, text_lines: bool = False,
             columns: Columns | None = None) -> list[Example]:
        """The examples of `path` (its `columns`, default the task's), their labels checked
        against the label set."""
        examples = read_examples(path, need_label, text_lines, columns or self.columns)
        for e in examples:
            if e.label is None:
                continue
            if self.regression:
                e.label = _number(path, e.line, e.label)
            elif e.label not in self.labels:  # type: ignore[operator]
                raise UserError(f"{path}:{e.line}: label {e.label!r} is not in the training "
                                f"labels {self.labels}")
        return examples


def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None,
              pooling: str = "cls", regression: bool = False, columns: Columns = DEFAULT_COLUMNS
              ) -> ClassifyTask:
    """The task for a training file (labels read from it; `regression` for numeric targets;
    `columns`: those of the training and eval files), or for a saved model's task dict."""
    if saved is not None:
        return ClassifyTask(saved["labels"], saved.get("pooling", "cls"))
    if train is None:
        raise ValueError("make_task needs a training file or a saved task")
    examples = read_examples(train, need_label=True, columns=columns)
    if regression:
        for e in examples:
            e.label = _number(train, e.line, e.label)  # type: ignore[arg-type]
        return ClassifyTask(None, pooling, examples, train, columns)
    labels = sorted_labels({e.label for e in examples})  # type: ignore[misc]
    if len(labels) < 2:
        raise UserError(f"{train}: only one label {labels}; classification needs two or more "
                        "(use --regression for numeric targets)")
    return ClassifyTask(labels, pooling, examples, train, columns)


def majority_share(path: Path, columns: Columns = DEFAULT_COLUMNS) -> float:
    """The accuracy of always answering the most frequent label of `path`."""
    labels = Counter(str(e.label) for e in read_examples(path, True, columns=columns))
    return labels.most_common(1)[0][1] / labels.total()


def read_examples(path: Path, need_label: bool, text_lines: bool = False,
                  columns: Columns = DEFAULT_COLUMNS) -> list[Example]:
    """The records of `path` as examples (labels as strings, not yet checked)."""
    records = read_records(path, text_lines, columns=columns)
    examples = [_example(path, r, need_label, columns.label) for r in records]
    if len({e.pair is None for e in examples}) > 1:
        first = next(e for e in examples if (e.pair is None) != (examples[0].pair is None))
        raise UserError(f"{path}:{first.line}: mixes single texts and text_a/text_b pairs")
    return examples


def _example(path: Path, record: Record, need_label: bool, label_column: str) -> Example:
    """`record` as an example (a missing label is named as the file names its column)."""
    line, fields = record
    if "text" in fields or "text_a" not in fields:
        text, pair = str(field(path, record, "text")), None
    else:
        text, pair = str(field(path, record, "text_a")), str(field(path, record, "text_b"))
    key = "label" if "label" in fields else label_column  # a missing one under the file's name
    label = field(path, record, key) if need_label else fields.get("label")
    return Example(line, text, pair, None if label is None else str(label).strip())


def _number(path: Path, line: int, label: Any) -> float:
    try:
        value = float(label)
    except (TypeError, ValueError):
        raise UserError(f"{path}:{line}: label {label!r} is not a number (regression)") from None
    if not math.isfinite(value):
        raise UserError(f"{path}:{line}: label {label!r} is not a finite number")
    return value


def sorted_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def classification_metrics(gold: Sequence[int], pred: Sequence[int]) -> dict[str, float]:
    """`accuracy` and `macro_f1` (F1 averaged over the classes in gold or predictions)."""
    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    f1s = []
    for c in sorted(set(gold) | set(pred)):
        tp = sum(g == c and p == c for g, p in zip(gold, pred, strict=True))
        predicted, actual = sum(p == c for p in pred), sum(g == c for g in gold)
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    accuracy = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


def regression_metrics(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """`mse` and `pearson` (0 when either side is constant)."""
    n = len(gold)
    mse = sum((g - p) ** 2 for g, p in zip(gold, pred, strict=True)) / max(n, 1)
    mg, mp = sum(gold) / max(n, 1), sum(pred) / max(n, 1)
    cov = sum((g - mg) * (p - mp) for g, p in zip(gold, pred, strict=True))
    var = math.sqrt(sum((g - mg) ** 2 for g in gold) * sum((p - mp) ** 2 for p in pred))
    return {"mse": mse, "pearson": cov / var if var > 0 else 0.0}
