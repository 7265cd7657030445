"""Profile one pretraining step (or forward) of plmkit and of transformers, op by op, on the
batch `plmkit bench` uses (`bench_batch`: BERT-style, or XLNet's `plm`).

    .venv/bin/plmkit env  # the allocator the `plmkit` command would preload
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python benchmarks/profile_step.py --model bert-base --mode train --dtype bfloat16
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from plmkit.bench.suite import bench_batch, infer_steps, train_steps, twins


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base")
    p.add_argument("--mode", default="train", choices=["train", "infer"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    ours, theirs = twins(args.model)
    data = bench_batch(ours.config, args.batch, args.seq)
    ours.train(args.mode == "train")
    theirs.train(args.mode == "train")
    steps = train_steps if args.mode == "train" else infer_steps
    for name, fn in zip(("plmkit", "transformers"), steps(ours, theirs, data, args.dtype),
                        strict=True):
        fn()  # warm-up (allocates optimizer state)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"== {name} {args.model} {args.mode}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
