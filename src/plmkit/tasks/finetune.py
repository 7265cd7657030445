"""The generic fine-tuning driver (`plmkit finetune`); the task protocol and the batching it
uses are in `plmkit.tasks.base` and `plmkit.tasks.batching`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

import plmkit
from plmkit.errors import UserError
from plmkit.tasks.base import (
    TASK_MODULES,
    Task,
    TaskOutput,
    load_task,
    pool,
    resolve_options,
    task_of_model,
)
from plmkit.tasks.batching import Batch, ShuffledBatches, in_batches, pad_collate, run_model
from plmkit.tasks.options import FinetuneOptions, default_lr
from plmkit.tokenizers import Tokenizer
from plmkit.training import TrainConfig, Trainer

__all__ = ["TASK_MODULES", "Batch", "ShuffledBatches", "TaskOutput", "in_batches", "load_task",
           "pad_collate", "pool", "run_model"]

TOKENIZER_DIR = "tokenizer"
EVAL_RESULTS = "eval_results.json"
FINETUNE_CONFIG = "finetune.json"  # the FinetuneOptions of the run, reused by evaluate/predict


def tokenizer_dir(model_dir: Path) -> Path:
    """Where a model's tokenizer is: `DIR/tokenizer/` (plmkit runs), else DIR itself
    (transformers directories)."""
    nested = Path(model_dir) / TOKENIZER_DIR
    return nested if nested.is_dir() else Path(model_dir)


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
