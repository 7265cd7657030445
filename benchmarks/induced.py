"""Full self-attention against induced-set attention (Set Transformer ISAB, Lee et al. 2019;
`plmkit/nn/induced.py`): one training step against sequence length (docs/models/induced.md).

    nice -n 19 .venv/bin/python benchmarks/induced.py --out benchmarks/induced

A training step is forward + backward + fused AdamW of the masked-LM loss (15% of positions, the
tied output layer at those positions only) on one sequence of each length, no padding, in
float32; both models are `--preset` (bert-mini: L4 H256 A4) with max_positions raised to the
longest length, one with `attention="induced"` and `--inducing` points. Per length:

- model FLOPs of the step (matmuls and attention, forward and backward, torch's
  `FlopCounterMode` with the CPU flash-attention kernels added: `bench.suite.step_flops`),
  counted on the meta device, so for every length whether or not it is timed;
- peak memory: bytes of tensors the step allocates above what existed before it (weights and
  optimizer state excluded; `bench.suite.peak_step_bytes`), from a profiled run that is also
  the warm-up;
- the median seconds of `--reps` steps, the two models interleaved (A B A B ...).

Lengths run in increasing order while the time left (`--budget` seconds in all) covers the
projected cost of the next one (the last step's time scaled by the length ratio, squared for
full attention); the lengths left out are kept with FLOPs only. Writes OUT.json and OUT.md,
again after each length.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.bench.suite import interleaved, peak_step_bytes, pretraining_batch, step_flops
from plmkit.models import build, preset_config

ARMS = ("full", "induced")


def model_for(preset: str, attention: str, inducing: int, longest: int,
              device: str = "cpu") -> nn.Module:
    """`preset` with `attention`, positions up to `longest`, on `device`, in training mode."""
    config = preset_config(preset, max_positions=longest, attention=attention,
                           num_inducing=inducing)
    with torch.device(device):
        torch.manual_seed(0)
        return build(config).train()


def training_step(model: nn.Module, seq: int, opt: torch.optim.Optimizer | None = None
                  ) -> Callable[[], None]:
    """One MLM training step of `model` on one synthetic sequence of `seq` tokens (without
    `opt`: forward and backward only)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in pretraining_batch(model.config.vocab_size, 1,
                                                           seq).items()}

    def step() -> None:
        hidden = model(batch["input_ids"]).last_hidden_state  # (1, S, H)
        logits = model.mlm_logits(hidden, batch["masked_lm_positions"])  # (1, P, V)
        F.cross_entropy(logits.flatten(0, 1), batch["masked_lm_ids"].flatten()).backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def count_flops(preset: str, inducing: int, lengths: list[int]) -> dict[str, list[float]]:
    """Model FLOPs of a training step, each arm and length, counted on the meta device."""
    out: dict[str, list[float]] = {}
    for arm in ARMS:
        model = model_for(preset, arm, inducing, max(lengths), device="meta")
        out[arm] = [step_flops(training_step(model, seq)) for seq in lengths]
    return out


def projected(seconds: float, arm: str, ratio: float) -> float:
    """The next length's step time from this one's: linear for induced, quadratic for full
    (an upper bound: only the attention grows as the square)."""
    return seconds * (ratio ** 2 if arm == "full" else ratio)


def measure(preset: str, inducing: int, lengths: list[int], reps: int, budget: float
            ) -> Iterator[dict[str, Any]]:
    """Per length, as it is measured: each arm's seconds per step (median), peak MB and
    GFLOP (FLOPs only where not timed)."""
    flops = count_flops(preset, inducing, lengths)
    models = {arm: model_for(preset, arm, inducing, max(lengths)) for arm in ARMS}
    opts = {arm: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
            for arm, m in models.items()}
    deadline = time.monotonic() + budget
    last: dict[str, float] = {}
    for i, seq in enumerate(lengths):
        ratio = seq / lengths[i - 1] if i else 1.0
        cost = sum(projected(last[a], a, ratio) * (reps + 1) for a in last)
        timed = i == 0 or (len(last) == len(ARMS) and cost < deadline - time.monotonic())
        row: dict[str, Any] = {"seq": seq}
        if timed:
            steps = {arm: training_step(models[arm], seq, opts[arm]) for arm in ARMS}
            for arm in ARMS:  # the profiled run is the warm-up; the first makes AdamW's state
                if i == 0:
                    steps[arm]()
                row[f"{arm}_peak_mb"] = peak_step_bytes(steps[arm]) / 2**20
            times = dict(zip(ARMS, interleaved(steps["full"], steps["induced"], reps),
                             strict=True))
            for arm in ARMS:
                last[arm] = statistics.median(times[arm])
                row[f"{arm}_s"] = last[arm]
        for arm, counts in flops.items():
            row[f"{arm}_gflop"] = counts[i] / 1e9
        yield row


def crossover(records: list[dict[str, Any]], key: str) -> int | None:
    """The shortest timed length from which on induced is below full in `key`."""
    rows = [r for r in records if f"full_{key}" in r]
    for i, r in enumerate(rows):
        if all(s[f"induced_{key}"] < s[f"full_{key}"] for s in rows[i:]):
            return r["seq"]
    return None


def table(records: list[dict[str, Any]]) -> str:
    """The Markdown table of `records`."""
    lines = ["| length | full s/step | induced s/step | speed-up | full peak MB | "
             "induced peak MB | full GFLOP | induced GFLOP | FLOP ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        timed = "full_s" in r
        cells = [str(r["seq"])]
        cells += ([f"{r['full_s']:.3f}", f"{r['induced_s']:.3f}",
                   f"{r['full_s'] / r['induced_s']:.2f}x", f"{r['full_peak_mb']:.0f}",
                   f"{r['induced_peak_mb']:.0f}"] if timed else ["not timed"] + [""] * 4)
        cells += [f"{r['full_gflop']:.1f}", f"{r['induced_gflop']:.1f}",
                  f"{r['full_gflop'] / r['induced_gflop']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/induced"),
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--preset", default="bert-mini")
    parser.add_argument("--inducing", type=int, default=32)
    parser.add_argument("--lengths", default="128,256,512,1024,2048,4096")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=400.0,
                        help="seconds for the timed steps in all")
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    records: list[dict[str, Any]] = []
    for row in measure(args.preset, args.inducing, lengths, args.reps, args.budget):
        records.append(row)
        print(json.dumps(row), flush=True)
        summary = write(args, records)  # after each length: a cut-off run keeps what it measured
    print(summary)


def write(args: argparse.Namespace, records: list[dict[str, Any]]) -> str:
    """OUT.json and OUT.md of `records`; returns the summary line."""
    setup = {"preset": args.preset, "inducing": args.inducing, "reps": args.reps,
             "batch": 1, "dtype": "float32", "threads": torch.get_num_threads(),
             "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
             "torch": torch.__version__,
             "crossover_time": crossover(records, "s"),
             "crossover_memory": crossover(records, "peak_mb")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"setup": setup, "results": records}, indent=2) + "\n")
    summary = (f"{args.preset}, m = {args.inducing}, batch 1, float32, median of {args.reps} "
               f"interleaved steps; induced faster from {setup['crossover_time']} tokens on, "
               f"smaller peak memory from {setup['crossover_memory']} on.")
    args.out.with_suffix(".md").write_text(summary + "\n\n" + table(records) + "\n")
    return summary

if __name__ == "__main__":
    main()
