"""Inference speed of fine-tuned models before and after head pruning (docs/inspect.md).

    python benchmarks/prune_speed.py --eval test.csv ft p0.25 p0.5 p0.75

Each model classifies the same texts (`--texts` of the file, batches of 32, at most 64 tokens)
`--reps` times, the models interleaved (A B C A B C ...) so that a busy machine slows all
alike; prints one JSON line per model: parameters, attention heads, median texts/s, and the
ratio to the first model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from plmkit.deploy.prune import count_parameters, prunable
from plmkit.interop.native import load_finetuned
from plmkit.tasks.classify import read_examples
from plmkit.tasks.options import FinetuneOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples = read_examples(args.eval, need_label=False)[:args.texts]
    loaded = [load_finetuned(m) for m in args.models]
    options = FinetuneOptions(batch_size=32, max_seq_len=64)
    times: dict[Path, list[float]] = {m: [] for m in args.models}
    for _ in range(args.reps):
        for path, f in zip(args.models, loaded, strict=True):
            start = time.perf_counter()
            f.task.scores(f.model, f.tokenizer, examples, options)  # type: ignore[attr-defined]
            times[path].append(time.perf_counter() - start)
    base = None
    for path, f in zip(args.models, loaded, strict=True):
        speed = len(examples) / statistics.median(times[path])
        base = base or speed
        heads = sum(m.num_heads for m in prunable(f.model))
        print(json.dumps({"model": str(path), "parameters": count_parameters(f.model),
                          "heads": heads, "texts_per_s": round(speed, 1),
                          "speed_ratio": round(speed / base, 3)}))


if __name__ == "__main__":
    main()
