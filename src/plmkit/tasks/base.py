"""What every fine-tuning task shares: the `Task` protocol that `plmkit.jobs.finetune` drives
and `plmkit evaluate` / `predict` use, the head output, [CLS] / mean / PMA pooling, the training
batches of a task (`FeatureTask`), and finding a task by name.

A task module (`tasks/classify.py`, `squad.py`, `swag.py`, `tag.py`) exposes

    def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None,
                  **options: Any) -> Task

- `train`: the training file; the task reads what it needs from it (label set, SQuAD v2.0 or
  not, ...). Given when fine-tuning; `saved` is then None.
- `saved`: the `.task` dict of a fine-tuned model (`plmkit.json` "task"), for `evaluate` and
  `predict` on a model loaded with `plmkit.load(OUT)`; `train` is then None.
- `options`: task-specific options; only classify has some (`pooling="cls"|"mean"|"pma"`,
  `regression=False`, `columns`: the file columns of `FinetuneOptions.columns`). Other tasks
  take none: the CLI passes none to them.

and registers its head class with `@plmkit.tasks.register_head(name)`. The CLI finds task modules
through `TASK_MODULES` (imported lazily by `load_task`).
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.encoder import init_weights
from plmkit.nn.induced import PoolingByAttention
from plmkit.nn.masks import padding_mask
from plmkit.tasks.batching import Batch, Collate, ShuffledBatches, pad_collate
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer

TASK_MODULES = {
    "classify": "plmkit.tasks.classify",
    "squad": "plmkit.tasks.squad",
    "swag": "plmkit.tasks.swag",
    "tag": "plmkit.tasks.tag",
    "similarity": "plmkit.tasks.similarity",
}


class Task(Protocol):
    """What fine-tuning, `plmkit evaluate` and `plmkit predict` need from a task.

    `main_metric` is a key of `evaluate`'s result, higher is better ("accuracy", "f1", ...);
    the best model by it is kept. `default_max_seq_len` applies when
    `FinetuneOptions.max_seq_len` is None (BERT: 128; SQuAD 384); the task methods always
    receive options with max_seq_len set (see `resolve_options`). `head_lr_scale`: the
    learning rate of the head's fresh weights (those outside `model.backbone`) over the
    backbone's, when `FinetuneOptions.head_lr` is None (1 but for similarity).
    """

    name: str  # "classify" | "squad" | "swag" | "tag"
    main_metric: str
    default_max_seq_len: int
    head_lr_scale: float  # the head's learning rate over the backbone's when --head-lr is not given

    def build_model(self, backbone: nn.Module) -> nn.Module:
        """The head-wrapped model, its class registered with `register_head(self.name)`. It has
        `.config` (the backbone's) and `.task` (dict: "name" + the head's constructor kwargs, so
        `plmkit.load` rebuilds it); `forward(input_ids, attention_mask=None,
        token_type_ids=None)` returns an object with `.last_hidden_state` and `.logits`
        (`TaskOutput`)."""
        ...

    def train_batches(self, tokenizer: Tokenizer, options: FinetuneOptions) -> Iterable[Batch]:
        """Training batches, shuffled by `options.seed`, with `state_dict` / `load_state_dict`
        when possible (`ShuffledBatches` does both). One pass = one epoch."""
        ...

    def steps_per_epoch(self, options: FinetuneOptions) -> int:
        """Optimizer steps in one epoch (batches per pass of `train_batches`); call after it."""
        ...

    def objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss and metrics of a batch (the Trainer's objective)."""
        ...

    def read_eval(self, path: Path) -> Any:
        """The examples of an eval file, checked as `evaluate` needs them (labels known to the
        training set, SWAG endings, SQuAD answer offsets, tags): a UserError naming the file
        and record otherwise. Fine-tuning calls it before the first step."""
        ...

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        """The task's official metrics on an eval file (includes `main_metric`)."""
        ...

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        """One JSON-able record per input record of `path`."""
        ...


class FeatureTask(ABC):
    """`train_batches` and `steps_per_epoch` of a task whose training examples are feature
    dicts: the task gives `train_features` (and `collate` when `pad_collate` does not fit)."""

    _batches: ShuffledBatches | None = None
    head_lr_scale = 1.0

    @abstractmethod
    def train_features(self, tokenizer: Tokenizer, options: FinetuneOptions
                       ) -> Sequence[dict[str, Any]]:
        """One feature dict (token ids, masks, targets) per training example."""

    def collate(self, pad_id: int) -> Collate:
        """Feature dicts -> a batch of tensors."""
        return pad_collate(pad_id)

    def train_batches(self, tokenizer: Tokenizer, options: FinetuneOptions) -> ShuffledBatches:
        features = self.train_features(tokenizer, options)
        self._batches = ShuffledBatches(features, options.batch_size,
                                        self.collate(tokenizer.pad_id), options.seed)
        return self._batches

    def steps_per_epoch(self, options: FinetuneOptions) -> int:
        if self._batches is None:
            raise RuntimeError("call train_batches first")
        return len(self._batches)


@dataclass
class TaskOutput:
    """What a task model's forward returns."""

    last_hidden_state: Tensor  # (B, S, H)
    logits: Tensor  # the head's: (B, C) classify, (B, S, C) tag, ...


HEAD_POOLINGS = ("cls", "mean", "pma")  # the sentence vectors of `pool` (classify's --pooling)
PMA_SEEDS = 1  # k of "pma": one seed, one sentence vector (Lee et al. 2019, section 3.2)


def pooling_module(pooling: str, config: Any) -> nn.Module | None:
    """The parameters a head's `pooling` brings: PMA's seeds and attention block
    (`nn.induced.PoolingByAttention`, initialised as the encoder's layers) for "pma"."""
    if pooling != "pma":
        return None
    pma = PoolingByAttention(config, PMA_SEEDS)
    init_weights(pma.mab, config.initializer_range)
    return pma


def pool(output: Any, attention_mask: Tensor | None, pooling: str,
         pma: nn.Module | None = None) -> Tensor:
    """A sentence vector (B, H): "cls" = the pooler output (BERT's [CLS] vector, section 3) or
    the [CLS] hidden state for models without a pooler; "mean" = mean over real tokens;
    "pma" = the mean of `pma`'s k seed outputs over the real tokens (`pooling_module`)."""
    hidden = output.last_hidden_state  # (B, S, H)
    if pooling == "cls":
        pooled = getattr(output, "pooler_output", None)
        return pooled if pooled is not None else hidden[:, 0]
    if pooling == "pma":
        if pma is None:
            raise ValueError("pma pooling needs the head's pooling_module")
        return pma(hidden, padding_mask(attention_mask)).mean(1)  # (B, k, H) -> (B, H)
    if pooling != "mean":
        raise UserError(f"unknown pooling {pooling!r}; use {' or '.join(HEAD_POOLINGS)}")
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask[..., None].to(hidden.dtype)  # (B, S, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def load_task(name: str) -> Any:
    """The task module called `name` (it has `make_task`), imported now."""
    if name not in TASK_MODULES:
        raise UserError(f"unknown task {name!r}; known: {', '.join(TASK_MODULES)}")
    try:
        return importlib.import_module(TASK_MODULES[name])
    except ModuleNotFoundError as e:
        if e.name != TASK_MODULES[name]:
            raise
        raise UserError(f"the task {name!r} is not available in this version") from None


def task_of_model(model: nn.Module, where: object = "the model") -> Task:
    """The task of a fine-tuned model (from its `.task` dict); `where`: its directory, named
    by the refusal of a model with none."""
    saved = getattr(model, "task", None)
    if not saved:
        raise UserError(f"{where}: not fine-tuned on a task (no task in its plmkit.json); "
                        "fine-tune it first (plmkit finetune)")
    return load_task(saved["name"]).make_task(saved=saved)


def resolve_options(task: Task, options: FinetuneOptions) -> FinetuneOptions:
    """`options` with max_seq_len filled in from the task's default."""
    if options.max_seq_len is not None:
        return options
    return dataclasses.replace(options, max_seq_len=task.default_max_seq_len)
