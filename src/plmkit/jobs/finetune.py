"""`plmkit finetune` and `plmkit evaluate`: a task (`plmkit.tasks`) trained on a pretrained model
by the one Trainer, and the fine-tuned OUT directory read back to score an eval file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from plmkit.errors import UserError
from plmkit.interop.native import (
    FINETUNE_CONFIG,
    TOKENIZER_DIR,
    load,
    load_finetuned,
    read_native_config,
    saved_options,
    tokenizer_dir,
)
from plmkit.tasks.base import Task, resolve_options
from plmkit.tasks.classify import majority_share
from plmkit.tasks.options import FinetuneOptions, default_lr
from plmkit.tokenizers import Tokenizer
from plmkit.training import TrainConfig, Trainer
from plmkit.training.precision import bf16_autocast

EVAL_RESULTS = "eval_results.json"


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
    model = task.build_model(load(model_dir))
    if options.lr is None:
        options = dataclasses.replace(options, lr=default_lr(model.config))
    if options.head_lr is None:
        options = dataclasses.replace(options, head_lr=options.lr * task.head_lr_scale)
    positions = getattr(model.config, "max_positions", None)
    if positions is not None and options.max_seq_len > positions:
        raise UserError(f"--max-seq-len {options.max_seq_len}: the model has {positions} "
                        "positions")
    data = task.train_batches(tokenizer, options)
    per_epoch = task.steps_per_epoch(options)
    steps = max(1, round(per_epoch * options.epochs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / FINETUNE_CONFIG, dataclasses.asdict(options))
    tokenizer.save(out / TOKENIZER_DIR)
    evaluator = None
    if eval is not None:
        def evaluator(m: nn.Module) -> dict[str, float]:
            with bf16_autocast(m, options.bf16):
                return task.evaluate(m, tokenizer, eval, options)
    config = task_train_config(options, steps, per_epoch, out,
                               task.main_metric if eval is not None else None,
                               head_lrs(model, options))
    trainer = Trainer(model, task.objective, data, config, evaluator=evaluator)
    trainer.train()
    return best_scores(trainer, out, eval)


def task_train_config(options: FinetuneOptions, steps: int, per_epoch: int, out: Path,
                      best_metric: str | None, lr_of: Mapping[str, float] | None = None
                      ) -> TrainConfig:
    """The trainer's settings of a fine-tuning run (and of task distillation): warmup over
    `options.warmup_fraction` of the steps, a log line at most every 50 steps, an evaluation
    each epoch (or every `options.eval_every` steps), no checkpoints, the best evaluation by
    `best_metric` kept."""
    return TrainConfig(
        steps=steps, out_dir=out, lr=options.lr, weight_decay=options.weight_decay,
        warmup_steps=round(steps * options.warmup_fraction), bf16=options.bf16,
        seed=options.seed, log_every=max(1, min(50, per_epoch)),
        eval_every=options.eval_every or per_epoch, save_every=0, checkpoints=False,
        best_metric=best_metric, patience=options.patience, progress=options.progress,
        tensorboard=options.tensorboard, lr_of=lr_of or {})


def best_scores(trainer: Trainer, out: Path, eval: Path | None) -> dict[str, Any]:
    """The best evaluation's scores, also written to OUT/eval_results.json with its step."""
    best = {k.removeprefix("eval_"): v for k, v in (trainer.best or {}).items()
            if k.startswith("eval_")}
    if eval is not None:
        write_json(out / EVAL_RESULTS, {**best, "step": trainer.best["step"],  # type: ignore[index]
                                        "eval_file": str(eval)})
    return best


def head_lrs(model: nn.Module, options: FinetuneOptions) -> dict[str, float]:
    """`options.head_lr` for each parameter of the freshly initialised head (the task model's
    parameters outside `model.backbone`); {} when it equals `options.lr`. A new layer learns
    faster than the pretrained ones it sits on, as in Caffe's fine-tuning example (lr_mult 10
    on the new layer) and sentence-transformers' `learning_rate_mapping`."""
    if options.head_lr == options.lr:
        return {}
    return {name: options.head_lr for name, _ in model.named_parameters()  # type: ignore[misc]
            if not name.startswith("backbone.")}


def write_json(path: Path, data: Any) -> None:
    """`data` as indented UTF-8 JSON in `path`."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n",
                    encoding="utf-8")


def evaluate_dir(model_dir: Path, eval: Path, given: Mapping[str, Any] | None = None
                 ) -> dict[str, float]:
    """The task's metrics of the fine-tuned model in `model_dir` on the file `eval`; `given`:
    options that replace the saved ones (`FinetuneOptions.given`: batch size, file columns)."""
    f = load_finetuned(model_dir)
    with bf16_autocast(f.model, f.options.bf16):  # as it was evaluated while fine-tuning
        return f.task.evaluate(f.model, f.tokenizer, eval, f.options.given(given))


def majority_baseline(model_dir: Path, eval: Path, given: Mapping[str, Any] | None = None
                      ) -> dict[str, float]:
    """A classifier's `majority_baseline`: the accuracy of always answering the eval file's
    own most frequent label (its training labels are not kept); {} for other tasks."""
    task = read_native_config(model_dir)[2] or {}
    if task.get("name") != "classify" or not task.get("labels"):
        return {}
    columns = saved_options(model_dir).given(given).columns()
    return {"majority_baseline": majority_share(eval, columns)}
