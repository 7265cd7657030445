"""`plmkit compare`: pretrain several models, each with its own objective, on the same corpus,
tokenizer and compute budget, fine-tune each on the same tasks with the same seeds, and report.

The budget is counted in model FLOPs: one training step of each model (forward + backward of
its objective, generator included for ELECTRA) is run once under
`torch.utils.flop_counter.FlopCounterMode`, which counts every matrix product; the number of
steps follows from the budget. `steps`, `tokens` (batch x sequence length per step) and
`minutes` (seconds per step measured on a few steps) are the other units.

Everything lands in OUT and is reused on a second call with the same budget (another budget
needs another OUT): the shared tokenizer, each run's checkpoints (an interrupted run resumes),
each finished fine-tuning (`eval_results.json`).
OUT gets `results.json`, `results.md` and three plots (`loss_vs_flops.png`,
`score_vs_flops.png`, `params_vs_score.png`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import platform
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch.utils.flop_counter import FlopCounterMode

from plmkit.errors import UserError
from plmkit.pipeline import PretrainArgs, pretrain, trainer_for
from plmkit.tasks.options import FinetuneOptions

BUDGETS = ("steps", "tokens", "flops", "minutes")
# dataset builder (plmkit data build) -> the fine-tuning task its files are for
TASK_OF_DATASET = {"sentiment-en": "classify", "nsp-en": "classify", "sop-en": "classify",
                   "sentiment-zh": "classify",
                   "bible-paraphrase": "classify", "bible-swag": "swag", "ner-zh": "tag"}
MAIN_METRIC = {"classify": "accuracy", "swag": "accuracy", "tag": "f1", "squad": "f1"}
STATE = "compare.json"  # per run: flops per step, steps, done


@dataclass
class Entry:
    """One model of a comparison: `preset[:objective][:key=value...]`. A key is a
    `plmkit pretrain` option (masking, input_format, max_ngram, whole_word) or, failing that,
    a field of the model's config (sharing, embedding_size, generator_size, ...)."""

    preset: str
    objective: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        extra = [f"{k}={v}" for k, v in {**self.options, **self.overrides}.items()]
        return "_".join([self.preset, *([self.objective] if self.objective else []), *extra])


def parse_entry(spec: str) -> Entry:
    """`bert-tiny`, `bert-tiny:mlm`, `roberta-tiny:mlm:masking=static`, `albert-tiny::sharing=
    none` -> Entry."""
    parts = spec.split(":")
    objective = parts[1].strip() if len(parts) > 1 else ""
    entry = Entry(parts[0].strip(), objective or None)
    options = {f.name for f in dataclasses.fields(PretrainArgs)}
    for pair in parts[2:]:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--models {spec!r}: expected key=value, got {pair!r}")
        key = key.replace("-", "_")
        target = entry.options if key in options else entry.overrides
        target[key] = _value(value)
    return entry


def _value(text: str) -> Any:
    """An option value: int, float, true / false, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


@dataclass
class CompareArgs:
    """The options of `plmkit compare`."""

    models: list[str]
    corpus: list[Path]
    out: Path
    budget: tuple[str, float]
    tasks: list[str] = field(default_factory=lambda: ["sentiment-en"])
    seeds: int = 3
    tokenizer: Path | None = None
    tokenizer_kind: str = "wordpiece"  # of the shared tokenizer trained when none is given
    vocab_size: int = 8000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    finetune_examples: int = 2000
    finetune_epochs: float = 2.0
    finetune_lr: float = 1e-3
    progress: bool = False


def compare(args: CompareArgs) -> list[dict[str, Any]]:
    """Run the whole comparison (see the module docstring); returns the result rows."""
    kind, amount = args.budget
    if kind not in BUDGETS or amount <= 0:
        raise UserError(f"--budget takes one of {', '.join(BUDGETS)} and a positive number, "
                        f"got {kind} {amount:g}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    entries = [parse_entry(m) for m in args.models]
    if len({e.name for e in entries}) != len(entries):
        raise UserError("--models lists the same model twice")
    tasks = [prepare_task(t, args) for t in args.tasks]
    tokenizer = shared_tokenizer(args)
    rows = []
    for entry in entries:
        run = pretrain_entry(entry, args, tokenizer)
        scores = {task: finetune_seeds(run, task, files, args) for task, files in tasks}
        rows.append({**run, "scores": scores})
    write_report(rows, args)
    return rows


def shared_tokenizer(args: CompareArgs) -> Path:
    """One vocabulary for every model: the given one, or one of `tokenizer_kind` (WordPiece;
    `char` for Chinese) trained on the corpus."""
    if args.tokenizer is not None:
        return args.tokenizer
    from plmkit.data.corpus import read_documents
    from plmkit.tokenizers import train_tokenizer

    path = args.out / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        texts = (s for doc in read_documents(args.corpus) for s in doc)
        train_tokenizer(args.tokenizer_kind, texts, args.vocab_size).save(path)
    return path


def pretrain_args(entry: Entry, args: CompareArgs, tokenizer: Path, steps: int,
                  out: Path) -> PretrainArgs:
    """The `plmkit pretrain` options of one entry, in float32 (as the committed studies ran)
    whatever the hardware, unless the entry says otherwise."""
    options = {"bf16": False, **entry.options}
    try:
        return PretrainArgs(
            model=entry.preset, objective=entry.objective, corpus=args.corpus, out=out,
            steps=steps, tokenizer=tokenizer, batch_size=args.batch_size, seq_len=args.seq_len,
            lr=args.lr, warmup=max(1, steps // 10), save_every=max(1, steps // 4),
            eval_every=10**9, log_every=max(1, steps // 50), progress=args.progress,
            overrides=entry.overrides, **options)
    except TypeError as e:
        raise UserError(f"--models {entry.name}: {e}") from None


def step_flops(entry: Entry, args: CompareArgs, tokenizer: Path, out: Path) -> float:
    """Model FLOPs of one training step of `entry`."""
    return training_step_flops(pretrain_args(entry, args, tokenizer, 1, out))


def training_step_flops(run: PretrainArgs) -> float:
    """Model FLOPs of one training step of `run` (forward + backward of its objective, one
    batch of its first phase)."""
    trainer = trainer_for(run)
    batch = next(iter(trainer.phases[0].source))
    trainer.model.train()
    with FlopCounterMode(display=False) as counter:
        loss = trainer.objective(trainer.model, batch)[0]
        loss.backward()
    return float(counter.get_total_flops())


def step_seconds(entry: Entry, args: CompareArgs, tokenizer: Path, out: Path,
                 steps: int = 4) -> float:
    """Median wall seconds of a training step (forward, backward, optimizer), after a warm-up."""
    trainer = trainer_for(pretrain_args(entry, args, tokenizer, steps, out))
    source = iter(trainer.phases[0].source)
    times = []
    for _ in range(steps):
        batch = next(source)
        start = time.perf_counter()
        trainer.objective(trainer.model, batch)[0].backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def budget_steps(entry: Entry, args: CompareArgs, tokenizer: Path, out: Path,
                 flops: float) -> int:
    """Optimizer steps that the budget buys this entry."""
    kind, amount = args.budget
    per_step = {"steps": 1.0, "tokens": float(args.batch_size * args.seq_len), "flops": flops}
    if kind == "minutes":
        return max(1, int(amount * 60 / step_seconds(entry, args, tokenizer, out)))
    return max(1, int(amount / per_step[kind]))


def pretrain_entry(entry: Entry, args: CompareArgs, tokenizer: Path) -> dict[str, Any]:
    """Pretrain `entry` under the budget (resuming an interrupted run); its summary row."""
    out = args.out / "runs" / entry.name
    state_file = out / STATE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state.get("budget", list(args.budget)) != list(args.budget):
        kind, amount = state["budget"]
        raise UserError(f"{out} was pretrained under --budget {kind} {amount:g}; give another "
                        "--out for a new budget")
    if "steps" not in state:
        out.mkdir(parents=True, exist_ok=True)
        flops = step_flops(entry, args, tokenizer, out / "probe")
        state = {"flops_per_step": flops, "budget": list(args.budget),
                 "steps": budget_steps(entry, args, tokenizer, out / "probe", flops)}
        shutil.rmtree(out / "probe")
        state_file.write_text(json.dumps(state) + "\n")
    if not state.get("done"):
        run = pretrain_args(entry, args, tokenizer, state["steps"], out)
        run.resume = (out / "checkpoints").is_dir()  # an interrupted earlier call
        pretrain(run)
        state["done"] = True
        state_file.write_text(json.dumps(state) + "\n")
    import plmkit

    model = plmkit.load(out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    return {"model": entry.name, "preset": entry.preset, "objective": entry.objective
            or model_objective(entry.preset), "run": str(out),
            "params": sum(p.numel() for p in model.parameters()),
            "steps": state["steps"], "tokens": state["steps"] * args.batch_size * args.seq_len,
            "flops": state["steps"] * state["flops_per_step"],
            "flops_per_step": state["flops_per_step"], "final_loss": records[-1]["loss"],
            "curve": [(r["step"] * state["flops_per_step"], r["loss"]) for r in records]}


def model_objective(preset: str) -> str:
    """The default objective of `preset`'s family."""
    from plmkit.models import get_family, preset_config

    return get_family(preset_config(preset).family).default_objective


def prepare_task(spec: str, args: CompareArgs) -> tuple[str, dict[str, Path]]:
    """`sentiment-en` (a `plmkit data build` dataset) or `classify:TRAIN:DEV[:TEST]`: the
    task's name and its train / dev / test files (the train file cut to
    `finetune_examples`)."""
    from plmkit.data.builders import build_dataset

    parts = spec.split(":")
    if parts[0] in TASK_OF_DATASET and len(parts) == 1:
        folder = args.out / "tasks" / spec
        files = build_dataset(spec, folder / "full")
        paths = dict(zip(("train", "dev", "test"), files, strict=True))
        name, task = spec, TASK_OF_DATASET[spec]
    elif parts[0] in MAIN_METRIC and len(parts) in (3, 4):
        paths = dict(zip(("train", "dev", "test"), map(Path, parts[1:]), strict=False))
        folder, name, task = args.out / "tasks" / f"task-{len(parts)}", parts[0], parts[0]
        for path in paths.values():
            if not path.is_file():
                raise UserError(f"--tasks {spec}: {path}: no such file")
    else:
        raise UserError(f"--tasks {spec!r}: name a dataset ({', '.join(TASK_OF_DATASET)}) or "
                        f"give TASK:TRAIN:DEV[:TEST] with TASK in {', '.join(MAIN_METRIC)}")
    paths["train"] = cut(paths["train"], args.finetune_examples, folder / "train-cut")
    return f"{task}/{name}", paths


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


def finetune_seeds(run: dict[str, Any], task_key: str, files: dict[str, Path],
                   args: CompareArgs) -> dict[str, Any]:
    """Fine-tune the pretrained model once per seed; the main metric on the test file (dev
    when there is none) of each, their mean and standard deviation."""
    from plmkit.tasks.finetune import evaluate_dir, finetune, load_task

    task_name = task_key.split("/")[0]
    metric = MAIN_METRIC[task_name]
    scores = []
    for seed in range(args.seeds):
        out = Path(run["run"]) / "finetune" / task_key.replace("/", "-") / f"seed-{seed}"
        result = out / "test_results.json"
        if not result.is_file():
            task = load_task(task_name).make_task(train=files["train"])
            options = FinetuneOptions(lr=args.finetune_lr, epochs=args.finetune_epochs,
                                      seed=seed, progress=args.progress)
            finetune(task, Path(run["run"]), files["train"], files["dev"], out, options)
            scores_now = evaluate_dir(out, files.get("test", files["dev"]))
            result.write_text(json.dumps(scores_now) + "\n")
        scores.append(json.loads(result.read_text())[metric])
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return {"metric": metric, "seeds": scores, "mean": statistics.mean(scores), "std": spread}


def write_report(rows: list[dict[str, Any]], args: CompareArgs) -> None:
    """results.json, results.md and the three plots in OUT."""
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = args.tokenizer or f"{args.tokenizer_kind}, at most {args.vocab_size} tokens"
    about = {"corpus": [str(p) for p in args.corpus], "tokenizer": str(tokenizer),
             "budget": list(args.budget),
             "batch_size": args.batch_size, "seq_len": args.seq_len, "seeds": args.seeds,
             "finetune_examples": args.finetune_examples, "torch": torch.__version__,
             "machine": machine()}
    (args.out / "results.json").write_text(
        json.dumps({"setup": about, "results": rows}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(rows, about))
    plot(rows, args.out)


def machine() -> str:
    """The CPU model (architecture where /proc/cpuinfo is missing) and torch's threads."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines
                if line.startswith("model name")), platform.machine())
    return f"{cpu}, {torch.get_num_threads()} threads"


def markdown(rows: list[dict[str, Any]], about: dict[str, Any]) -> str:
    """The results table with what was run."""
    tasks = sorted({t for r in rows for t in r["scores"]})
    head = ["model", "objective", "params", "steps", "tokens", "PFLOPs", "final loss",
            *[f"{t} ({rows[0]['scores'][t]['metric']})" for t in tasks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["objective"], f"{r['params'] / 1e6:.2f}M", str(r["steps"]),
                 f"{r['tokens']:,}", f"{r['flops'] / 1e15:.3f}", f"{r['final_loss']:.3f}",
                 *[f"{r['scores'][t]['mean']:.4f} ± {r['scores'][t]['std']:.4f}"
                   for t in tasks]]
        lines.append("| " + " | ".join(cells) + " |")
    setup = ", ".join(f"{k}: {v}" for k, v in about.items())
    return (f"Setup: {setup}.\n\nScores: mean ± standard deviation over "
            f"{about['seeds']} fine-tuning seeds.\n\n" + "\n".join(lines) + "\n")


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Pretraining loss against FLOPs, score against FLOPs, parameters against score."""
    tasks = sorted({t for r in rows for t in r["scores"]})
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.plot(*zip(*r["curve"], strict=True), label=r["model"], marker=".")
    ax.set(xlabel="training FLOPs", ylabel="pretraining loss (its own objective)",
           yscale="log", title="pretraining loss")
    ax.legend(fontsize="small")
    fig.savefig(out / "loss_vs_flops.png", dpi=100)
    for name, x_key, x_label in (("score_vs_flops", "flops", "training FLOPs"),
                                 ("params_vs_score", "params", "parameters")):
        fig = Figure(figsize=(5 * len(tasks), 4), layout="constrained")
        for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks, strict=True):
            for r in rows:
                s = r["scores"][task]
                ax.errorbar(r[x_key], s["mean"], yerr=s["std"], fmt="o", capsize=3,
                            label=r["model"])
            ax.set(xlabel=x_label, ylabel=s["metric"], title=task)
            ax.legend(fontsize="small")
        fig.savefig(out / f"{name}.png", dpi=100)
