"""Sentence-pair similarity with a graded or a binary label, by one of three heads:

- `cross`: both sentences in one input ([CLS] a [SEP] b [SEP]) and a linear layer on the pooled
  [CLS] vector: BERT's sentence-pair setup (Devlin et al. 2019, section 4.1), a cross-encoder.
- `cosine`: a bi-encoder: each sentence encoded alone and mean-pooled (Sentence-BERT, Reimers
  and Gurevych 2019), the score is the cosine of the two vectors.
- `ntn`: the same two vectors scored by a neural tensor layer (Socher et al. 2013, "Reasoning
  With Neural Tensor Networks"): s = u^T tanh(e1^T W^[1:k] e2 + V [e1; e2] + b), k slices.

Files: csv / tsv / jsonl / table with `text_a`, `text_b` and a numeric `label` (or the columns
`FinetuneOptions.columns` names). Labels that are all 0 or 1 are binary; other numbers are
graded (an STS score, say) and map to targets t in [0, 1] by the training file's range.
Losses: `cosine` regresses cos(u, v) on t by mean squared error (sentence-transformers'
CosineSimilarityLoss, which takes STS scores divided by 5); `ntn` and `cross` take binary
cross-entropy of the logit against t (sentence-transformers' CrossEncoder with one label, which
takes soft targets for STS). The prediction p is cos(u, v) or sigmoid(logit); a binary pair is
similar when p > 0.5.
The fresh layers (the NTN, the cross-encoder's classifier) train at `FinetuneOptions.head_lr`,
by default `HEAD_LR_SCALE` x the backbone's lr: at the backbone's rate the NTN stayed at chance.
Metrics: graded: `spearman` (main) and `pearson`; binary: `accuracy` (main) and `f1` (of
label 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.dropout import Dropout
from plmkit.tasks import register_head
from plmkit.tasks.base import FeatureTask, TaskOutput, pool
from plmkit.tasks.batching import Batch, Collate, pad_collate, rows_by_length
from plmkit.tasks.classify import Example, classification_metrics, read_examples, regression_metrics
from plmkit.tasks.files import DEFAULT_COLUMNS, Columns
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer

HEADS = ("ntn", "cosine", "cross")
DEFAULT_HEAD = "cosine"  # the best of the three in docs/studies/similarity.md
SLICES = 4  # k, the tensor's slices (our default)
HEAD_LR_SCALE = 10.0  # the fresh NTN / classifier's lr over the backbone's (jobs.finetune.head_lrs)
PAIR = "pair_"  # the prefix of the second sentence's inputs of a bi-encoder batch


def check_head(head: str) -> None:
    """A UserError unless `head` is one of `HEADS`."""
    if head not in HEADS:
        raise UserError(f"unknown similarity head {head!r}; use {', '.join(HEADS)}")


class NeuralTensorLayer(nn.Module):
    """Socher et al. 2013's score of two vectors: u^T tanh(e1^T W^[1:k] e2 + V [e1; e2] + b)."""

    def __init__(self, hidden: int, slices: int, std: float):
        super().__init__()
        self.bilinear = nn.Bilinear(hidden, hidden, slices)  # e1^T W^[i] e2 + b_i
        self.linear = nn.Linear(2 * hidden, slices, bias=False)  # V [e1; e2]
        self.u = nn.Linear(slices, 1, bias=False)
        for weight in (self.bilinear.weight, self.linear.weight):
            nn.init.normal_(weight, std=std)
        nn.init.zeros_(self.bilinear.bias)
        nn.init.ones_(self.u.weight)  # U = 1 in a port of Socher et al.'s code: the slices' sum

    def forward(self, e1: Tensor, e2: Tensor) -> Tensor:
        """e1, e2: (B, H) -> scores (B,)."""
        hidden = torch.tanh(self.bilinear(e1, e2) + self.linear(torch.cat([e1, e2], -1)))  # (B, k)
        return self.u(hidden)[:, 0]


@register_head("similarity")
class PairScorer(nn.Module):
    """A pair's score (B,): the cross-encoder's logit, or the bi-encoder's cosine or NTN score.
    `low`, `high`: the graded labels' range (None: binary labels)."""

    def __init__(self, backbone: nn.Module, head: str, low: float | None = None,
                 high: float | None = None, slices: int = SLICES):
        super().__init__()
        check_head(head)
        config = backbone.config
        self.backbone = backbone
        self.config = config
        self.task = {"name": "similarity", "head": head, "low": low, "high": high,
                     "slices": slices}
        if head == "cross":
            self.dropout = Dropout(config.dropout)
            self.classifier = nn.Linear(config.hidden_size, 1)
            nn.init.normal_(self.classifier.weight, std=config.initializer_range)
            nn.init.zeros_(self.classifier.bias)
        elif head == "ntn":
            self.ntn = NeuralTensorLayer(config.hidden_size, slices, config.initializer_range)

    @property
    def head(self) -> str:
        return self.task["head"]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, pair_input_ids: Tensor | None = None,
                pair_attention_mask: Tensor | None = None,
                pair_token_type_ids: Tensor | None = None) -> TaskOutput:
        """cross: input_ids (B, S) hold both sentences; bi-encoders: input_ids the first
        (B, S) and pair_input_ids the second (B, S2) -> logits (B,)."""
        out = self.backbone(input_ids, attention_mask, token_type_ids)
        if self.head == "cross":
            pooled = pool(out, attention_mask, "cls")  # (B, H)
            return TaskOutput(out.last_hidden_state, self.classifier(self.dropout(pooled))[:, 0])
        if pair_input_ids is None:
            raise ValueError(f"the {self.head} head scores two inputs: give pair_input_ids")
        second = self.backbone(pair_input_ids, pair_attention_mask, pair_token_type_ids)
        u, v = pool(out, attention_mask, "mean"), pool(second, pair_attention_mask, "mean")
        return TaskOutput(out.last_hidden_state, self.score(u, v))

    def score(self, u: Tensor, v: Tensor) -> Tensor:
        """A bi-encoder's score of sentence vectors u, v (B, H) -> (B,)."""
        return F.cosine_similarity(u, v, dim=-1) if self.head == "cosine" else self.ntn(u, v)

    def prediction(self, logits: Tensor) -> Tensor:
        """The score p in [0, 1] the loss fits to the target: cos as it is, else sigmoid."""
        return logits if self.head == "cosine" else logits.sigmoid()


@dataclass
class Pair:
    """A similarity example: the two texts and the label as a number."""

    line: int
    text_a: str
    text_b: str
    label: float | None


class SimilarityTask(FeatureTask):
    """Similarity on sentence pairs; see the module docstring. `low`, `high`: the graded labels'
    range (None: binary 0/1)."""

    name = "similarity"
    default_max_seq_len = 128
    head_lr_scale = HEAD_LR_SCALE

    def __init__(self, head: str, low: float | None, high: float | None,
                 train: list[Pair] | None = None, columns: Columns = DEFAULT_COLUMNS,
                 slices: int = SLICES):
        check_head(head)
        self.head, self.low, self.high, self.slices = head, low, high, slices
        self.train = train or []
        self.columns = columns
        self.main_metric = "accuracy" if self.binary else "spearman"

    @property
    def binary(self) -> bool:
        return self.low is None

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return PairScorer(backbone, self.head, self.low, self.high, self.slices)

    def target(self, label: float) -> float:
        """The label as a target in [0, 1]."""
        if self.binary:
            return label
        return (label - self.low) / (self.high - self.low)  # type: ignore[operator]

    def train_features(self, tokenizer: Tokenizer, options: FinetuneOptions
                       ) -> list[dict[str, Any]]:
        return self.features(tokenizer, self.train, options)

    def collate(self, pad_id: int) -> Collate:
        pad = pad_collate(pad_id)
        if self.head == "cross":
            return pad

        def both(features: list[dict[str, Any]]) -> Batch:
            first = pad([{k: v for k, v in f.items() if not k.startswith(PAIR)} for f in features])
            second = pad([{k.removeprefix(PAIR): v for k, v in f.items() if k.startswith(PAIR)}
                          for f in features])
            return {**first, **{PAIR + k: v for k, v in second.items()}}
        return both

    def objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()  # (B,)
        target = batch["labels"]  # (B,) in [0, 1]
        if self.head == "cosine":
            loss = F.mse_loss(logits, target)
        else:
            loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss, {}

    def read_eval(self, path: Path) -> list[Pair]:
        return read_pairs(path, need_label=True)

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        pairs = read_pairs(path, need_label=True, columns=options.columns())
        for pair in pairs if self.binary else ():
            if pair.label not in (0.0, 1.0):
                raise UserError(f"{path}:{pair.line}: label {pair.label:g} is not 0 or 1 (the "
                                "model was fine-tuned on binary labels)")
        p = self.predictions(model, tokenizer, pairs, options).tolist()
        return self.metrics([pair.label for pair in pairs], p)  # type: ignore[misc]

    def metrics(self, gold: Sequence[float], p: Sequence[float]) -> dict[str, float]:
        """Graded: the correlations of p with the labels; binary: accuracy and F1 of p > 0.5."""
        if not self.binary:
            return correlations(gold, p)
        binary, predicted = [int(g) for g in gold], [int(x > 0.5) for x in p]
        return {"accuracy": classification_metrics(binary, predicted)["accuracy"],
                "f1": positive_f1(binary, predicted)}

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        pairs = read_pairs(path, need_label=False, columns=options.columns())
        records = []
        for pair, p in zip(pairs, self.predictions(model, tokenizer, pairs, options).tolist(),
                           strict=True):
            record = {"text_a": pair.text_a, "text_b": pair.text_b}
            if self.binary:
                records.append({**record, "label": int(p > 0.5), "score": p})
            else:  # on the labels' scale
                records.append({**record, "score": self.low + p * (self.high - self.low)})  # type: ignore[operator]
        return records

    def predictions(self, model: nn.Module, tokenizer: Tokenizer, pairs: Sequence[Pair],
                    options: FinetuneOptions) -> Tensor:
        """p of each pair (N,): a bi-encoder encodes each distinct sentence once."""
        if self.head == "cross":
            features = self.features(tokenizer, pairs, options)
            logits = rows_by_length(model, features, options.batch_size,
                                    pad_collate(tokenizer.pad_id), lambda _, o: o.logits)
            return model.prediction(logits)
        texts = sorted({t for pair in pairs for t in (pair.text_a, pair.text_b)})
        vectors = sentence_vectors(model.backbone, tokenizer, texts, options)  # (T, H)
        index = {t: i for i, t in enumerate(texts)}
        u = vectors[[index[pair.text_a] for pair in pairs]]  # (N, H)
        v = vectors[[index[pair.text_b] for pair in pairs]]
        device = next(model.parameters()).device
        with torch.no_grad():
            return model.prediction(model.score(u.to(device), v.to(device)).float().cpu())

    def features(self, tokenizer: Tokenizer, pairs: Sequence[Pair], options: FinetuneOptions
                 ) -> list[dict[str, Any]]:
        """Token ids and masks (cross: of the pair in one input; bi-encoders: of each text,
        the second's keys prefixed `pair_`) and, when known, the target."""
        assert options.max_seq_len is not None
        firsts, seconds = [p.text_a for p in pairs], [p.text_b for p in pairs]
        if self.head == "cross":
            features = encode(tokenizer, firsts, seconds, options.max_seq_len)
        else:
            features = [{**a, **{PAIR + k: v for k, v in b.items()}} for a, b in zip(
                encode(tokenizer, firsts, None, options.max_seq_len),
                encode(tokenizer, seconds, None, options.max_seq_len), strict=True)]
        for feature, pair in zip(features, pairs, strict=True):
            if pair.label is not None:
                feature["labels"] = float(self.target(pair.label))
        return features


def encode(tokenizer: Tokenizer, texts: list[str], pairs: list[str] | None, max_len: int
           ) -> list[dict[str, list[int]]]:
    """One dict of input_ids, attention_mask and token_type_ids per text (or pair)."""
    encoded = tokenizer(texts, pairs, max_length=max_len, padding=False, return_tensors=False)
    return [dict(zip(encoded, values, strict=True))
            for values in zip(*encoded.values(), strict=True)]


def sentence_vectors(backbone: nn.Module, tokenizer: Tokenizer, texts: list[str],
                     options: FinetuneOptions) -> Tensor:
    """Mean-pooled vectors (N, H) of `texts`, as the bi-encoder heads see them."""
    assert options.max_seq_len is not None
    features = encode(tokenizer, texts, None, options.max_seq_len)
    return rows_by_length(backbone, features, options.batch_size, pad_collate(tokenizer.pad_id),
                          lambda batch, out: pool(out, batch["attention_mask"].to(
                              out.last_hidden_state.device), "mean"))


def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None,
              head: str = DEFAULT_HEAD, columns: Columns = DEFAULT_COLUMNS) -> SimilarityTask:
    """The task for a training file (binary or graded from its labels), or for a saved model's
    task dict."""
    if saved is not None:
        return SimilarityTask(saved["head"], saved.get("low"), saved.get("high"),
                              slices=saved.get("slices", SLICES))
    if train is None:
        raise ValueError("make_task needs a training file or a saved task")
    pairs = read_pairs(train, need_label=True, columns=columns)
    labels = {p.label for p in pairs}
    if len(labels) < 2:
        raise UserError(f"{train}: every label is {pairs[0].label:g}; similarity needs two or "
                        "more label values")
    if labels == {0.0, 1.0}:
        return SimilarityTask(head, None, None, pairs, columns)
    return SimilarityTask(head, min(labels), max(labels), pairs, columns)  # type: ignore[type-var]


def read_pairs(path: Path, need_label: bool, columns: Columns = DEFAULT_COLUMNS) -> list[Pair]:
    """The pairs of `path`, their labels numbers; a UserError naming the file and line of a
    record without two texts or with a label that is not a finite number."""
    return [_pair(path, e) for e in read_examples(path, need_label, columns=columns)]


def _pair(path: Path, example: Example) -> Pair:
    if example.pair is None:
        raise UserError(f"{path}:{example.line}: similarity needs sentence pairs: text_a and "
                        "text_b columns (or --text-field and --text-pair-field)")
    label = None
    if example.label is not None:
        try:
            label = float(example.label)
        except ValueError:
            label = math.nan
        if not math.isfinite(label):
            raise UserError(f"{path}:{example.line}: label {example.label!r} is not a number "
                            "(similarity labels are scores, or 0 and 1)")
    return Pair(example.line, example.text, example.pair, label)


def correlations(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """`spearman` (Pearson's r of the ranks, ties sharing their mean rank) and `pearson`."""
    return {"spearman": regression_metrics(ranks(gold), ranks(pred))["pearson"],
            "pearson": regression_metrics(gold, pred)["pearson"]}


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of `values`; equal values get the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            out[i] = (start + end) / 2 + 1
        start = end + 1
    return out


def positive_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """F1 of label 1 (0 when neither side has a 1)."""
    tp = sum(g == p == 1 for g, p in zip(gold, pred, strict=True))
    total = sum(gold) + sum(pred)
    return 2 * tp / total if total else 0.0
