"""The downstream scores of `plmkit compare`: full fine-tuning of a pretrained model on each
task (one run per fine-tuning seed), and a linear probe of its frozen features (classification
tasks): multinomial logistic regression on the mean-pooled last hidden states, fitted by
L-BFGS, its L2 strength picked on the dev file. The probe has no seed, so its spread over
pretraining seeds is the pretraining's own."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.tasks.options import COLUMN_FIELDS, FinetuneOptions
from plmkit.training.precision import bf16_autocast

if TYPE_CHECKING:
    from plmkit.tasks.classify import ClassifyTask
    from plmkit.tokenizers import Tokenizer

# dataset builder (plmkit data build) -> the fine-tuning task its files are for
TASK_OF_DATASET = {"sentiment-en": "classify", "nsp-en": "classify", "sop-en": "classify",
                   "sentiment-zh": "classify",
                   "bible-paraphrase": "classify", "bible-swag": "swag", "ner-zh": "tag",
                   "bible-relatedness": "similarity"}
# the TASKs of --tasks TASK:TRAIN:DEV[:TEST]; each is scored by its task's main_metric
TASKS = ("classify", "swag", "tag", "squad", "similarity")
PROBE_L2 = (1e-4, 1e-3, 1e-2, 1e-1)  # penalties tried, per feature (features standardised)


def prepare_task(spec: str, out: Path, examples: int) -> tuple[str, dict[str, Path]]:
    """`sentiment-en` (a `plmkit data build` dataset) or `classify:TRAIN:DEV[:TEST]`: the
    task's key (`TASK/NAME`) and its train / dev / test files (the train file cut to
    `examples`)."""
    from plmkit.data.builders import build_dataset

    parts = spec.split(":")
    if parts[0] in TASK_OF_DATASET and len(parts) == 1:
        folder = out / "tasks" / spec
        files = build_dataset(spec, folder / "full")
        paths = dict(zip(("train", "dev", "test"), files, strict=True))
        name, task = spec, TASK_OF_DATASET[spec]
    elif parts[0] in TASKS and len(parts) in (3, 4):
        paths = dict(zip(("train", "dev", "test"), map(Path, parts[1:]), strict=False))
        folder, name, task = out / "tasks" / f"task-{len(parts)}", parts[0], parts[0]
        for path in paths.values():
            if not path.is_file():
                raise UserError(f"--tasks {spec}: {path}: no such file")
    else:
        raise UserError(f"--tasks {spec!r}: name a dataset ({', '.join(TASK_OF_DATASET)}) or "
                        f"give TASK:TRAIN:DEV[:TEST] with TASK in {', '.join(TASKS)}")
    paths["train"] = cut(paths["train"], examples, folder / "train-cut")
    return f"{task}/{name}", paths


def task_options(task_key: str, options: FinetuneOptions) -> FinetuneOptions:
    """`options` for a task: the file columns they name apply to the user's own files
    (TASK:TRAIN:DEV), a built dataset's files have the default ones."""
    if task_key.split("/")[1] not in TASK_OF_DATASET:
        return options
    return dataclasses.replace(options, **{name: getattr(FinetuneOptions(), name)
                                           for name in COLUMN_FIELDS})


def make_task(task_key: str, train: Path, options: FinetuneOptions) -> Any:
    """The task of `task_key` for its training file (classify, similarity: its file
    columns)."""
    from plmkit.tasks.base import load_task

    name = task_key.split("/")[0]
    extra = {"columns": options.columns()} if name in ("classify", "similarity") else {}
    return load_task(name).make_task(train=train, **extra)


def majority_baseline(task_key: str, files: dict[str, Path], options: FinetuneOptions
                      ) -> float | None:
    """A classification task's majority-class accuracy on the file its scores come from (the
    test file, else dev); None for other tasks."""
    from plmkit.tasks.classify import majority_share

    if not task_key.startswith("classify/"):
        return None
    columns = task_options(task_key, options).columns()
    return majority_share(files.get("test", files["dev"]), columns)


def cut(path: Path, n: int, out_dir: Path) -> Path:
    """The first `n` records of a csv / tsv / jsonl file or sentences of a CoNLL file (other
    formats as they are)."""
    if path.suffix not in (".csv", ".tsv", ".jsonl", ".conll") or n <= 0:
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        out.write_text("".join(lines[:n]), encoding="utf-8")
        return out
    if path.suffix == ".conll":  # sentences are blocks of lines between blank lines
        blocks = [b for b in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
                  if b.strip()]
        out.write_text("\n\n".join(b.strip("\n") for b in blocks[:n]) + "\n", encoding="utf-8")
        return out
    dialect = {"delimiter": "\t" if path.suffix == ".tsv" else ","}
    with open(path, encoding="utf-8", newline="") as f:  # a quoted field may span lines
        rows = list(itertools.islice(csv.reader(f, **dialect), n + 1))  # header + n records
    with open(out, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, **dialect).writerows(rows)
    return out


def finetune_seeds(model_dir: Path, task_key: str, files: dict[str, Path], seeds: int,
                   options: FinetuneOptions) -> list[float]:
    """Fine-tune the model in `model_dir` once per seed (finished runs reused); the main
    metric of each on the test file (dev when there is none)."""
    from plmkit.jobs.finetune import evaluate_dir, finetune

    options = task_options(task_key, options)
    metric = make_task(task_key, files["train"], options).main_metric
    scores = []
    for seed in range(seeds):
        out = model_dir / "finetune" / task_key.replace("/", "-") / f"seed-{seed}"
        result = out / "test_results.json"
        if not result.is_file():
            task = make_task(task_key, files["train"], options)
            finetune(task, model_dir, files["train"], files["dev"], out,
                     dataclasses.replace(options, seed=seed))
            result.write_text(json.dumps(evaluate_dir(out, files.get("test", files["dev"])))
                              + "\n")
        scores.append(json.loads(result.read_text())[metric])
    return scores


def probe(model_dir: Path, task_key: str, files: dict[str, Path], options: FinetuneOptions
          ) -> float | None:
    """Test accuracy of a linear probe on the frozen model (classification only; cached in
    `model_dir`/probe/; `options`: the file columns, and bf16 for the features)."""
    import plmkit
    from plmkit.interop.native import tokenizer_dir
    from plmkit.tokenizers import Tokenizer

    if not task_key.startswith("classify/"):
        return None
    result = model_dir / "probe" / f"{task_key.replace('/', '-')}.json"
    if not result.is_file():
        task = make_task(task_key, files["train"], task_options(task_key, options))
        model = plmkit.load(model_dir)
        tok = Tokenizer.load(tokenizer_dir(model_dir))
        x, y = {}, {}
        with bf16_autocast(model, options.bf16):
            for split in ("train", "dev", "test"):
                x[split], y[split] = probe_features(model, tok, task,
                                                    files.get(split, files["dev"]))
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text(json.dumps(fit_probe(x, y)) + "\n")
    return json.loads(result.read_text())["accuracy"]


def probe_features(model: nn.Module, tok: Tokenizer, task: ClassifyTask,
                   path: Path) -> tuple[Tensor, Tensor]:
    """Mean-pooled last hidden states (N, H) of the examples of `path` (pairs encoded as
    segment pairs) and their label indices (N,)."""
    from plmkit.tasks.base import pool, resolve_options
    from plmkit.tasks.batching import pad_collate, rows_by_length

    features = task.features(tok, task.read(path, need_label=True),
                             resolve_options(task, FinetuneOptions()))
    pooled = rows_by_length(model, features, 64, pad_collate(tok.pad_id),
                            lambda batch, out: pool(out, batch["attention_mask"], "mean"))
    labels = torch.tensor([f["labels"] for f in features])
    return pooled.double(), labels


def fit_probe(x: dict[str, Tensor], y: dict[str, Tensor]) -> dict[str, Any]:
    """Logistic regression on standardised features, the L2 penalty with the best dev
    accuracy; its dev and test accuracy."""
    mean, std = x["train"].mean(0), x["train"].std(0).clamp(min=1e-6)  # (H,)
    z = {k: (v - mean) / std for k, v in x.items()}
    classes = int(max(int(v.max()) for v in y.values())) + 1
    fits = []
    for l2 in PROBE_L2:
        weight = logistic_regression(z["train"], y["train"], classes, l2)
        dev, test = (accuracy(z[k], y[k], weight) for k in ("dev", "test"))
        fits.append({"l2": l2, "dev_accuracy": dev, "accuracy": test})
    return max(fits, key=lambda f: f["dev_accuracy"])


def logistic_regression(x: Tensor, y: Tensor, classes: int, l2: float) -> Tensor:
    """Weights (H + 1, C) minimising mean cross entropy + l2 * |W|^2 (bias unpenalised)."""
    ones = torch.ones(len(x), 1, dtype=x.dtype)
    design = torch.cat([x, ones], 1)  # (N, H + 1)
    weight = torch.zeros(x.shape[1] + 1, classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=100, tolerance_grad=1e-7,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(design @ weight, y) + l2 * weight[:-1].square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach()


def accuracy(x: Tensor, y: Tensor, weight: Tensor) -> float:
    """Share of rows of x (N, H) whose highest logit is their label y (N,)."""
    logits = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) @ weight  # (N, C)
    return float((logits.argmax(-1) == y).double().mean())

