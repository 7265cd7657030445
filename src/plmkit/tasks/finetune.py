"""The generic fine-tuning driver (`plmkit finetune`) and the protocol every task implements.

A task module (`tasks/classify.py`, `squad.py`, `swag.py`, `tag.py`) exposes

    def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None,
                  **options: Any) -> Task

- `train`: the training file; the task reads what it needs from it (label set, SQuAD v2.0 or
  not, ...). Given when fine-tuning; `saved` is then None.
- `saved`: the `.task` dict of a fine-tuned model (`plmkit.json` "task"), for `evaluate` and
  `predict` on a model loaded with `plmkit.load(OUT)`; `train` is then None.
- `options`: task-specific options; only classify has some (`pooling="cls"|"mean"`,
  `regression=False`). Other tasks take none: the CLI passes none to them.

and registers its head class with `@plmkit.tasks.register_head(name)`. The CLI finds task modules
through `TASK_MODULES` (imported lazily). `finetune(task, model_dir, train, eval, out, options)`
does the rest: backbone, tokenizer, trainer, evaluation, best model, OUT.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

import plmkit
from plmkit.errors import UserError
from plmkit.tasks.options import FinetuneOptions, default_lr
from plmkit.tokenizers import Tokenizer
from plmkit.training import TrainConfig, Trainer

Batch = dict[str, Tensor]

TASK_MODULES = {
    "classify": "plmkit.tasks.classify",
    "squad": "plmkit.tasks.squad",
    "swag": "plmkit.tasks.swag",
    "tag": "plmkit.tasks.tag",
}
TOKENIZER_DIR = "tokenizer"
EVAL_RESULTS = "eval_results.json"
FINETUNE_CONFIG = "finetune.json"  # the FinetuneOptions of the run, reused by evaluate/predict


class Task(Protocol):
    """What `finetune`, `plmkit evaluate` and `plmkit predict` need from a task.

    `main_metric` is a key of `evaluate`'s result, higher is better ("accuracy", "f1", ...);
    the best model by it is kept. `default_max_seq_len` applies when
    `FinetuneOptions.max_seq_len` is None (BERT: 128; SQuAD 384); the task methods always
    receive options with max_seq_len set (see `resolve_options`).
    """

    name: str  # "classify" | "squad" | "swag" | "tag"
    main_metric: str
    default_max_seq_len: int

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
        and record otherwise. `finetune` calls it before the first step."""
        ...

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        """The task's official metrics on an eval file (includes `main_metric`)."""
        ...

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        """One JSON-able record per input record of `path`."""
        ...


@dataclass
class TaskOutput:
    """What a task model's forward returns."""

    last_hidden_state: Tensor  # (B, S, H)
    logits: Tensor  # the head's: (B, C) classify, (B, S, C) tag, ...


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


def task_of_model(model: nn.Module) -> Task:
    """The task of a fine-tuned model (from its `.task` dict)."""
    saved = getattr(model, "task", None)
    if not saved:
        raise UserError("the model is not fine-tuned on a task (no task in its plmkit.json)")
    return load_task(saved["name"]).make_task(saved=saved)


def tokenizer_dir(model_dir: Path) -> Path:
    """Where a model's tokenizer is: `DIR/tokenizer/` (plmkit runs), else DIR itself
    (transformers directories)."""
    nested = Path(model_dir) / TOKENIZER_DIR
    return nested if nested.is_dir() else Path(model_dir)


def resolve_options(task: Task, options: FinetuneOptions) -> FinetuneOptions:
    """`options` with max_seq_len filled in from the task's default."""
    if options.max_seq_len is not None:
        return options
    return dataclasses.replace(options, max_seq_len=task.default_max_seq_len)


def saved_options(model_dir: Path) -> FinetuneOptions:
    """The options a fine-tuned model was trained with (defaults when unknown)."""
    from plmkit.interop.preflight import check_fields

    path = Path(model_dir) / FINETUNE_CONFIG
    if not path.is_file():
        return FinetuneOptions()
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a JSON file of fine-tuning options ({e})") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a JSON object of fine-tuning options")
    known = {f.name for f in dataclasses.fields(FinetuneOptions)}
    options = {k: v for k, v in saved.items() if k in known}
    check_fields(FinetuneOptions, options, str(path))
    return FinetuneOptions(**options)


def finetune(task: Task, model_dir: Path, train: Path, eval: Path | None, out: Path,
             options: FinetuneOptions) -> dict[str, float]:
    """Fine-tune the model in `model_dir` on `task`; OUT gets the best model (by
    `task.main_metric` on `eval`, else the last one), its tokenizer, `eval_results.json`,
    `metrics.jsonl` and `finetune.json`. Returns the best model's metrics (empty without eval).
    """
    options = resolve_options(task, options)
    if eval is not None:
        task.read_eval(eval)  # a bad eval file stops the run now, not after an epoch
    tokenizer = Tokenizer.load(tokenizer_dir(model_dir))
    model = task.build_model(plmkit.load(model_dir))
    if options.lr is None:
        options = dataclasses.replace(options, lr=default_lr(model.config))
    data = task.train_batches(tokenizer, options)
    per_epoch = task.steps_per_epoch(options)
    steps = max(1, round(per_epoch * options.epochs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / FINETUNE_CONFIG, dataclasses.asdict(options))
    tokenizer.save(out / TOKENIZER_DIR)
    evaluator = None
    if eval is not None:
        def evaluator(m: nn.Module) -> dict[str, float]:
            return task.evaluate(m, tokenizer, eval, options)
    config = TrainConfig(
        steps=steps, out_dir=out, lr=options.lr, weight_decay=options.weight_decay,
        warmup_steps=round(steps * options.warmup_fraction), bf16=options.bf16,
        seed=options.seed, log_every=max(1, min(50, per_epoch)),
        eval_every=options.eval_every or per_epoch, save_every=0, checkpoints=False,
        best_metric=task.main_metric if eval is not None else None,
        patience=options.patience, progress=options.progress, tensorboard=options.tensorboard,
    )
    trainer = Trainer(model, task.objective, data, config, evaluator=evaluator)
    trainer.train()
    best = {k.removeprefix("eval_"): v for k, v in (trainer.best or {}).items()
            if k.startswith("eval_")}
    if eval is not None:
        _write_json(out / EVAL_RESULTS, {**best, "step": trainer.best["step"],  # type: ignore[index]
                                         "eval_file": str(eval)})
    return best


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n",
                    encoding="utf-8")


class ShuffledBatches:
    """Epochs over `examples` in a random order seeded by (seed, epoch), `batch_size` at a time,
    collated by `collate`. One `iter()` runs to the end of the current epoch; the position
    (epoch, index) is exact in `state_dict` so a resumed run sees the same batches."""

    def __init__(self, examples: Sequence[Any], batch_size: int,
                 collate: Callable[[list[Any]], Batch], seed: int = 0):
        if not examples:
            raise UserError("no training examples")
        self.examples = examples
        self.batch_size = batch_size
        self.collate = collate
        self.seed = seed
        self.epoch = 0
        self.index = 0

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        while self.index < len(order):
            chunk = order[self.index:self.index + self.batch_size]
            self.index += len(chunk)
            yield self.collate([self.examples[i] for i in chunk])
        self.epoch += 1
        self.index = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.index = state["epoch"], state["index"]


PAD_VALUES = {"labels": -100, "attention_mask": 0, "token_type_ids": 0}


def pad_collate(pad_id: int) -> Callable[[list[dict[str, Any]]], Batch]:
    """A collate for feature dicts: list values (ids, masks, per-token labels) are padded on the
    right to the longest of the batch (`input_ids` with `pad_id`, `labels` with -100, others
    with 0); scalars (a class id, a float target) are stacked."""

    def collate(features: list[dict[str, Any]]) -> Batch:
        batch = {}
        for key, first in features[0].items():
            values = [f[key] for f in features]
            if isinstance(first, list):
                width = max(len(v) for v in values)
                pad = PAD_VALUES.get(key, 0) if key != "input_ids" else pad_id
                values = [v + [pad] * (width - len(v)) for v in values]
            dtype = torch.float if isinstance(first, float) else torch.long
            batch[key] = torch.tensor(values, dtype=dtype)  # (B,) or (B, S)
        return batch

    return collate


@torch.no_grad()
def run_model(model: nn.Module, batches: Iterable[Batch]) -> Iterator[tuple[Batch, Any]]:
    """(batch, output) for each batch, in eval mode on the model's device (restored after)."""
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device  # an OnnxModule has none: CPU
    model.eval()
    try:
        for batch in batches:
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask",
                                                       "token_type_ids") if k in batch}
            yield batch, model(**inputs)
    finally:
        model.train(was_training)


def in_batches(features: Sequence[dict[str, Any]], batch_size: int,
               collate: Callable[[list[Any]], Batch]) -> Iterator[Batch]:
    """`features` in order, `batch_size` at a time, collated."""
    for i in range(0, len(features), batch_size):
        yield collate(list(features[i:i + batch_size]))


def pool(output: Any, attention_mask: Tensor | None, pooling: str) -> Tensor:
    """A sentence vector (B, H): "cls" = the pooler output (BERT's [CLS] vector, section 3) or
    the [CLS] hidden state for models without a pooler; "mean" = mean over real tokens."""
    hidden = output.last_hidden_state  # (B, S, H)
    if pooling == "cls":
        pooled = getattr(output, "pooler_output", None)
        return pooled if pooled is not None else hidden[:, 0]
    if pooling != "mean":
        raise UserError(f"unknown pooling {pooling!r}; use cls or mean")
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask[..., None].to(hidden.dtype)  # (B, S, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)



@dataclass
class Finetuned:
    """A fine-tuned model directory loaded for evaluation or prediction."""

    model: nn.Module
    task: Task
    tokenizer: Tokenizer
    options: FinetuneOptions


def load_finetuned(model_dir: Path, batch_size: int | None = None) -> Finetuned:
    """The model in `model_dir` (an OUT of `finetune`), its task, tokenizer and options."""
    model = plmkit.load(model_dir)
    task = task_of_model(model)
    options = resolve_options(task, saved_options(model_dir))
    if batch_size is not None:
        options = dataclasses.replace(options, batch_size=batch_size)
    return Finetuned(model, task, Tokenizer.load(tokenizer_dir(model_dir)), options)


def evaluate_dir(model_dir: Path, eval: Path, batch_size: int | None = None) -> dict[str, float]:
    """The task's metrics of the fine-tuned model in `model_dir` on the file `eval`."""
    f = load_finetuned(model_dir, batch_size)
    return f.task.evaluate(f.model, f.tokenizer, eval, f.options)


def predict_file(model_dir: Path, input: Path, output: Path,
                 batch_size: int | None = None) -> int:
    """Write one JSON line of predictions per record of `input`; returns how many."""
    f = load_finetuned(model_dir, batch_size)
    records = f.task.predict(f.model, f.tokenizer, input, f.options)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)
