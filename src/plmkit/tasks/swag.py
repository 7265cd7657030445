"""Multiple choice in the SWAG format (BERT, Devlin et al. 2019, section 4.4): each choice is
encoded as "[CLS] context [SEP] ending [SEP]"; a learned vector dotted with each choice's [CLS]
(pooled) vector gives its score, and a softmax over the choices is trained with cross-entropy.

Files:
- csv / tsv as the official SWAG: `sent1`, `sent2`, `ending0`..`endingN`, `label`; the context is
  `sent1` and choice i is `sent2 + " " + ending{i}` (the reference run_swag's split). Without
  `sent1` the context is `startphrase` and choice i is `ending{i}`.
- jsonl: `{"context": str, "endings": [str, ...], "label": int}`.
Every record of a file has the same number of choices. Metric: `accuracy`.
"""

from __future__ import annotations

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
from plmkit.tasks.batching import Batch, Collate, in_batches, run_model
from plmkit.tasks.files import Record, field, read_records
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer


@dataclass
class Choice:
    """One multiple-choice question: `label` indexes `endings` (None when unlabelled)."""

    line: int
    context: str
    endings: list[str]
    label: int | None


def read_swag(path: Path, labelled: bool = True) -> list[Choice]:
    """The questions of a SWAG csv / tsv / jsonl file; `labelled` requires a valid label."""
    examples = [_choice(path, record, labelled) for record in read_records(path)]
    count = len(examples[0].endings)
    for ex in examples:
        if len(ex.endings) != count:
            raise UserError(f"{path}:{ex.line}: {len(ex.endings)} endings, but the first "
                            f"record has {count}")
    return examples


def _choice(path: Path, record: Record, labelled: bool) -> Choice:
    line, fields = record
    if "endings" in fields:
        context = _text(path, line, "context", field(path, record, "context"))
        endings = field(path, record, "endings")
        if not isinstance(endings, list) or len(endings) < 2:
            raise UserError(f"{path}:{line}: 'endings' must be a list of two or more texts")
        endings = [_text(path, line, "endings", e) for e in endings]
    else:
        endings = _csv_endings(path, record)
        if "sent1" in fields:
            context = field(path, record, "sent1")
            lead = fields.get("sent2") or ""
            endings = [f"{lead} {e}".strip() for e in endings]
        else:
            context = field(path, record, "startphrase")
    return Choice(line, context, endings, _label(path, record, len(endings), labelled))


def _csv_endings(path: Path, record: Record) -> list[str]:
    line, fields = record
    endings = []
    while f"ending{len(endings)}" in fields:
        name = f"ending{len(endings)}"
        if not fields[name]:
            raise UserError(f"{path}:{line}: {name!r} is empty")
        endings.append(fields[name])
    if len(endings) < 2:
        raise UserError(f"{path}:{line}: no 'ending0' and 'ending1' columns "
                        f"(the record has {', '.join(map(repr, fields))})")
    return endings


def _text(path: Path, line: int, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(f"{path}:{line}: {name!r} must be text, not {type(value).__name__}")
    return value


def _label(path: Path, record: Record, choices: int, labelled: bool) -> int | None:
    line, fields = record
    if not labelled and fields.get("label") in (None, ""):
        return None
    value = field(path, record, "label")
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}:{line}: label {value!r} is not a choice number") from None
    if not 0 <= label < choices or isinstance(value, bool | float):
        raise UserError(f"{path}:{line}: label {value!r} is not in 0..{choices - 1}")
    return label


def encode(tokenizer: Tokenizer, examples: Sequence[Choice], max_seq_len: int) -> list[dict]:
    """Per question: `input_ids` / `token_type_ids` (C lists of ids, one per choice) and
    `labels` (-100 when unlabelled). Pairs longer than `max_seq_len` are cut longest-first."""
    contexts = [ex.context for ex in examples for _ in ex.endings]
    endings = [e for ex in examples for e in ex.endings]
    enc = tokenizer(contexts, endings, max_length=max_seq_len, padding=False,
                    return_tensors=False)
    features, i = [], 0
    for ex in examples:
        n = len(ex.endings)
        features.append({"input_ids": enc["input_ids"][i:i + n],
                         "token_type_ids": enc["token_type_ids"][i:i + n],
                         "labels": -100 if ex.label is None else ex.label})
        i += n
    return features


def choice_collate(pad_id: int) -> Collate:
    """Features -> input_ids / attention_mask / token_type_ids (B, C, S), right-padded to the
    longest choice of the batch, and labels (B,)."""

    def collate(features: list[dict]) -> Batch:
        width = max(len(ids) for f in features for ids in f["input_ids"])

        def pad(rows: list[list[int]], value: int) -> list[list[int]]:
            return [r + [value] * (width - len(r)) for r in rows]

        return {
            "input_ids": torch.tensor([pad(f["input_ids"], pad_id) for f in features]),
            "attention_mask": torch.tensor([pad([[1] * len(r) for r in f["input_ids"]], 0)
                                            for f in features]),
            "token_type_ids": torch.tensor([pad(f["token_type_ids"], 0) for f in features]),
            "labels": torch.tensor([f["labels"] for f in features]),
        }

    return collate


@register_head("swag")
class MultipleChoice(nn.Module):
    """A backbone and a score vector (Linear(H, 1)) dotted with each choice's pooled [CLS]
    vector (BERT section 4.4)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        config = backbone.config  # type: ignore[attr-defined]
        self.backbone = backbone
        self.config = config
        self.task = {"name": "swag"}
        self.dropout = Dropout(config.dropout)
        self.score = nn.Linear(config.hidden_size, 1)
        nn.init.normal_(self.score.weight, std=config.initializer_range)
        nn.init.zeros_(self.score.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> TaskOutput:
        """input_ids: (B, C, S) -> last_hidden_state (B, C, S, H), logits (B, C)."""
        b, c, s = input_ids.shape
        flat = [t.reshape(b * c, s) if t is not None else None
                for t in (input_ids, attention_mask, token_type_ids)]
        out = self.backbone(*flat)
        pooled = pool(out, flat[1], "cls")  # (B*C, H)
        logits = self.score(self.dropout(pooled)).view(b, c)  # (B, C)
        return TaskOutput(out.last_hidden_state.view(b, c, s, -1), logits)


def choice_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """logits: (B, C), labels: (B,) -> cross-entropy of the softmax over choices, accuracy."""
    loss = F.cross_entropy(logits.float(), labels)
    with torch.no_grad():
        accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {"accuracy": accuracy}


class SwagTask(FeatureTask):
    """`plmkit finetune --task swag`: see the module docstring."""

    name = "swag"
    main_metric = "accuracy"
    default_max_seq_len = 128

    def __init__(self, train: Path | None = None):
        self.train = train

    def build_model(self, backbone: nn.Module) -> MultipleChoice:
        return MultipleChoice(backbone)

    def train_features(self, tokenizer: Tokenizer, options: FinetuneOptions) -> list[dict]:
        if self.train is None:
            raise UserError("swag: no training file")
        return encode(tokenizer, read_swag(self.train), _seq_len(options))

    def collate(self, pad_id: int) -> Collate:
        return choice_collate(pad_id)

    def objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return choice_loss(out.logits, batch["labels"])

    def read_eval(self, path: Path) -> list[Choice]:
        return read_swag(path)

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        examples = self.read_eval(path)
        probs = self.scores(model, tokenizer, examples, options)
        right = sum(int(p.argmax()) == ex.label for p, ex in zip(probs, examples, strict=True))
        return {"accuracy": right / len(examples)}

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        """One record per question: its line, the chosen ending and each ending's probability."""
        examples = read_swag(path, labelled=False)
        probs = self.scores(model, tokenizer, examples, options)
        return [{"line": ex.line, "label": int(p.argmax()), "scores": p.tolist()}
                for p, ex in zip(probs, examples, strict=True)]

    def scores(self, model: nn.Module, tokenizer: Tokenizer, examples: Sequence[Choice],
               options: FinetuneOptions) -> list[Tensor]:
        """The softmax over the choices (C,) of each question."""
        features = encode(tokenizer, examples, _seq_len(options))
        batches = in_batches(features, options.batch_size, choice_collate(tokenizer.pad_id))
        return [p for _, out in run_model(model, batches)
                for p in out.logits.float().softmax(-1).cpu()]


def _seq_len(options: FinetuneOptions) -> int:
    return options.max_seq_len or SwagTask.default_max_seq_len


def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None,
              **options: Any) -> SwagTask:
    """The SWAG task, from a training file or a fine-tuned model's `.task` dict (nothing in it
    to read). Takes no task options."""
    if options:
        raise UserError(f"swag takes no task options (got {', '.join(options)})")
    return SwagTask(train)
