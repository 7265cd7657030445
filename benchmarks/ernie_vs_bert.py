"""ERNIE-tiny with knowledge masking against BERT-tiny with character masking, at equal
pretraining steps, fine-tuned on Chinese review sentiment (docs/models/ernie.md has a result).

Both pretrain on People's Daily with one character tokenizer, the same steps, batch, length
and seed (mlm+nsp for BERT; `ernie`, i.e. the same plus phrase and entity stages, for ERNIE),
then fine-tune on the same sentiment-zh examples and are scored on its test split.

    python benchmarks/ernie_vs_bert.py --out runs/ernie-vs-bert
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

RUNS = "ernie-tiny:ernie,bert-tiny:mlm+nsp"  # PRESET:OBJECTIVE, comma-separated


def plmkit(*args: object) -> None:
    """Run one plmkit command, echoing it."""
    cmd = [sys.executable, "-m", "plmkit.cli", *map(str, args)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def head_csv(src: Path, dst: Path, rows: int) -> Path:
    """The header and the first `rows` rows of a csv file."""
    with open(src, encoding="utf-8", newline="") as f:
        kept = [r for _, r in zip(range(rows + 1), csv.reader(f), strict=False)]
    with open(dst, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(kept)
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--finetune-examples", type=int, default=2000)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--finetune-seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=RUNS,
                   help="PRESET:OBJECTIVE pairs (ablation: ernie-tiny:mlm+nsp)")
    a = p.parse_args()
    out = a.out
    plmkit("data", "build", "--name", "peoples-daily", "--out", out / "pd")
    plmkit("data", "build", "--name", "sentiment-zh", "--out", out / "sentiment-zh")
    plmkit("tokenizer", "train", "--kind", "char", "--corpus", out / "pd" / "train.txt",
           "--vocab-size", 18000, "--out", out / "tokenizer")
    train = head_csv(out / "sentiment-zh" / "train.csv", out / "sentiment-train.csv",
                     a.finetune_examples)
    results = {}
    for model, objective in (r.split(":") for r in a.runs.split(",")):
        run = out / model
        plmkit("pretrain", "--model", model, "--objective", objective,
               "--corpus", out / "pd" / "train.txt", "--tokenizer", out / "tokenizer",
               "--out", run, "--steps", a.steps, "--batch-size", a.batch_size,
               "--seq-len", a.seq_len, "--lr", 1e-3, "--seed", a.seed, "--save-every", 0,
               "--eval-every", 0, "--log-every", 50)
        plmkit("finetune", "--task", "classify", "--model", run, "--train", train,
               "--eval", out / "sentiment-zh" / "dev.csv", "--out", run / "sentiment",
               "--epochs", a.epochs, "--lr", a.finetune_lr, "--max-seq-len", a.finetune_seq_len,
               "--seed", a.seed)
        evaluated = subprocess.run(
            [sys.executable, "-m", "plmkit.cli", "evaluate", "--model", str(run / "sentiment"),
             "--eval", str(out / "sentiment-zh" / "test.csv")],
            check=True, capture_output=True, text=True).stdout
        results[model] = {"objective": objective, **json.loads(evaluated.strip().splitlines()[-1])}
        print(model, results[model], flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
