"""How far a training step is from what this machine allows with the matmul kernels it has.

For each model: both sides' median step time (interleaved, as `plmkit bench` measures), the
share of one profiled step that each side spends in matmuls (GEMMs, batched GEMMs and SDPA's
attention kernels), and from those two ceilings:

- `ceiling`: the ratio plmkit would reach if everything but its matmuls took no time
  (transformers' step over plmkit's matmul time); a ratio target above it cannot be met
  without doing fewer matmul FLOPs;
- `mm MFU`: the model-FLOPs utilisation of plmkit's matmuls alone, the highest MFU its step
  could reach with these kernels at this batch.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 .venv/bin/python \\
        benchmarks/ceilings.py --models albert-tiny,albert-small,albert-base,bert-base,xlnet-base
    LD_PRELOAD=... .venv/bin/python benchmarks/ceilings.py --models bert-base \\
        --dtype bfloat16 --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from plmkit.bench.suite import (
    bench_batch,
    interleaved,
    matmul_peak,
    step_flops,
    train_steps,
    twins,
)

MATMULS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
})


def matmul_share(step: Callable[[], None]) -> float:
    """The fraction of one profiled call of `step` spent in matmul kernels (self time)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / total


def ceiling(preset: str, dtype: str, batch: int, seq: int, reps: int, peak: float) -> dict:
    """One model's row: median steps, matmul shares, ratio, ceiling ratio, MFU, mm MFU."""
    ours, theirs = twins(preset)
    ours.train(), theirs.train()
    a, b = train_steps(ours, theirs, bench_batch(ours.config, batch, seq), dtype)
    ta, tb = (statistics.median(t) for t in interleaved(a, b, reps))
    share_a, share_b = matmul_share(a), matmul_share(b)
    flops = step_flops(a)
    return {"model": preset, "dtype": dtype, "batch": batch, "seq": seq,
            "plmkit_s": ta, "hf_s": tb, "ratio": tb / ta,
            "plmkit_matmul_share": share_a, "hf_matmul_share": share_b,
            "ceiling": tb / (share_a * ta), "flops": flops, "peak_flops": peak,
            "mfu": flops / ta / peak, "matmul_mfu": flops / (share_a * ta) / peak}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="albert-tiny,albert-small,albert-base,bert-base,xlnet-base")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    peak = matmul_peak(args.dtype)
    rows = []
    for preset in args.models.split(","):
        rows.append(ceiling(preset, args.dtype, args.batch, args.seq, args.reps, peak))
        peak = max(peak, matmul_peak(args.dtype))
    for row in rows:  # every MFU against the run's highest peak, as `plmkit bench` does
        row["mfu"] *= row["peak_flops"] / peak
        row["matmul_mfu"] *= row["peak_flops"] / peak
        row["peak_flops"] = peak
    print(f"matmul peak ({args.dtype}): {peak / 1e9:,.0f} GFLOP/s")
    print("| model | dtype | batch x seq | plmkit s | hf s | ratio | plmkit mm share "
          "| hf mm share | ceiling | MFU | mm MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['dtype']} | {r['batch']}x{r['seq']} | {r['plmkit_s']:.3f} "
              f"| {r['hf_s']:.3f} | {r['ratio']:.2f}x | {r['plmkit_matmul_share']:.0%} "
              f"| {r['hf_matmul_share']:.0%} | {r['ceiling']:.2f}x | {r['mfu']:.0%} "
              f"| {r['matmul_mfu']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
