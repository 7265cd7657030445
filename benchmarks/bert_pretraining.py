"""The figures in BENCHMARKS.md: `plmkit.bench.run` over models, modes and dtypes, interleaved
with transformers in one process; prints the table and writes the JSON records.

    .venv/bin/python benchmarks/bert_pretraining.py --models bert-mini,bert-base \
        --modes train,infer --dtypes float32,bfloat16 --reps 5 --json bench.json

(`plmkit bench` measures the same way; this script adds the dtype axis.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from plmkit import bench


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="bert-mini,bert-base")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    records = bench.run(args.models.split(","), args.modes.split(","), args.batch_size,
                        args.seq_len, args.reps, dtypes=tuple(args.dtypes.split(",")),
                        memory=not args.no_memory)
    print(bench.table(records))
    if args.json:
        bench.write_json(records, args.json)


if __name__ == "__main__":
    main()
