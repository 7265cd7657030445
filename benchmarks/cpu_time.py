"""A contention-resistant cross-check of `plmkit bench`: one intra-op thread, process CPU
seconds per step (not wall time), plmkit and transformers interleaved.

    .venv/bin/python benchmarks/cpu_time.py --model bert-base --mode train --dtype float32

On a shared 2-core machine wall-clock medians swing by 2x when other jobs run; with one
thread and CPU time the ratio moves by a few percent.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from plmkit.bench.suite import bench_batch, steps, twins


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base")
    p.add_argument("--mode", default="train", choices=["train", "train-foreach", "infer"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    ours, theirs = twins(args.model)
    data = bench_batch(ours.config, args.batch, args.seq)
    ours.train(args.mode != "infer")
    theirs.train(args.mode != "infer")
    a, b = steps(args.mode, ours, theirs, data, args.dtype)
    a(), b()
    ta, tb = [], []
    for _ in range(args.reps):
        for fn, times in ((a, ta), (b, tb)):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(f"{args.model} {args.mode} {args.dtype}: plmkit {ma:.2f} CPU s/step, "
          f"transformers {mb:.2f} CPU s/step, ratio {mb / ma:.2f}x")


if __name__ == "__main__":
    main()
