"""The GPU check (issue 29, item 5): on one CUDA device, (a) the parity tests against
transformers, (b) a bf16 training step of every family with SDPA restricted to the flash
kernel (so a fallback raises) and the flash ops seen in the step, (c) `plmkit bench` against
transformers on the same device, (d) the MFU of those steps against the card's measured bf16
matmul peak. Writes one JSON and exits 1 if anything failed.

    python benchmarks/gpu_check.py                       # on a CUDA machine (gpu_check.sh)
    python benchmarks/gpu_check.py --device cpu --quick  # the same code paths, tiny, here
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from plmkit.bench import suite as bench
from plmkit.models import build, get_family, preset_config
from plmkit.objectives import get_objective

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("bert", "roberta", "albert", "electra", "ernie", "xlnet", "transformer")
# Families whose attention cannot run on the flash kernel, and why (not a failure).
NO_FLASH = {"xlnet": "relative attention passes its position and segment score terms to SDPA "
                     "as a float mask, which no flash kernel takes (nn/rel_attention.py)"}
PARITY_FILES = [f"tests/test_{family}.py" for family in FAMILIES]
PARITY_SELECT = "transformers or parity"  # the tests comparing against transformers / torch
QUICK_PARITY = "tests/test_bert.py::test_save_hf_loads_in_transformers"
# (c) and (d): the base models of every family, as issue 29 measures them (32 x 128, bf16).
BENCH_PRESETS = [f"{family}-base" for family in FAMILIES]


class OpLog(TorchDispatchMode):
    """The names of the aten ops that ran (below autograd: forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.add(func.__name__)
        return func(*args, **(kwargs or {}))


def parity(device: torch.device, quick: bool, timeout: float) -> dict[str, Any]:
    """The parity tests in a pytest subprocess on `device` (tests/conftest.py `test_device`)."""
    select = [QUICK_PARITY] if quick else [*PARITY_FILES, "-k", PARITY_SELECT]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-m", "not slow", *select]
    env = {**os.environ, "PLMKIT_TEST_DEVICE": str(device)}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "returncode": None, "summary": f"timed out after {timeout:.0f} s",
                "seconds": round(time.perf_counter() - start, 1)}
    lines = done.stdout.strip().splitlines()
    return {"ok": done.returncode == 0, "returncode": done.returncode,
            "summary": lines[-1] if lines else done.stderr.strip()[-500:],
            "failed": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
            "seconds": round(time.perf_counter() - start, 1)}


def flash_only(device: torch.device, family: str) -> contextlib.AbstractContextManager[Any]:
    """SDPA restricted to the flash kernel on CUDA (a fallback raises); nothing otherwise."""
    if device.type == "cuda" and family not in NO_FLASH:
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return contextlib.nullcontext()


def flash_step(family: str, device: torch.device, batch: int, seq: int) -> dict[str, Any]:
    """One bf16 optimizer step of `family`'s tiny preset on its default objective, and which
    SDPA kernels ran in it; `ok` False if it raised, the loss is not finite, or (on CUDA, for
    a family that can) no flash op ran."""
    config = preset_config(f"{family}-tiny")
    model = build(config).to(device).train()
    data = {k: v.to(device) for k, v in bench.bench_batch(config, batch, seq).items()}
    objective = get_objective(get_family(family).default_objective)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    record: dict[str, Any] = {"family": family, "preset": f"{family}-tiny"}
    try:
        with OpLog() as log, flash_only(device, family), \
                torch.autocast(device.type, dtype=torch.bfloat16):
            loss = objective(model, data)[0]
            loss.backward()
        opt.step()
    except RuntimeError as error:  # "No available kernel": flash could not run
        return {**record, "ok": False, "flash": False, "error": str(error).splitlines()[0]}
    sdpa = sorted(n for n in log.names if "scaled_dot_product" in n)
    record.update(loss=loss.item(), sdpa_ops=sdpa)
    if device.type != "cuda":
        reason = f"on {device.type}: the flash assertion runs on CUDA only"
        return {**record, "ok": math.isfinite(loss.item()), "flash": None, "reason": reason}
    if family in NO_FLASH:
        return {**record, "ok": math.isfinite(loss.item()), "flash": None,
                "reason": NO_FLASH[family]}
    flash = any("flash" in name for name in sdpa)
    return {**record, "ok": flash and math.isfinite(loss.item()), "flash": flash}


def bench_and_mfu(device: torch.device, quick: bool) -> dict[str, Any]:
    """`plmkit bench` (train and infer, bf16) on `device` with each step's MFU against the
    measured bf16 matmul peak."""
    if quick:
        presets, batch, seq, reps, sizes = ["bert-tiny"], 2, 32, 2, (256,)
    else:
        presets, batch, seq, reps, sizes = BENCH_PRESETS, 32, 128, 10, (4096, 8192)
    peaks = {"bfloat16": bench.matmul_peak("bfloat16", sizes, device=device)}
    records = bench.run(presets, ["train", "infer"], batch, seq, reps, dtypes=("bfloat16",),
                        peaks=peaks, device=device)
    return {"matmul_peak_flops": peaks,
            "records": [dataclasses.asdict(r) for r in records],
            "mfu": {f"{r.family}-{r.size} {r.mode}": {"plmkit": r.plmkit_mfu, "hf": r.hf_mfu}
                    for r in records}}


def gpu(device: torch.device) -> dict[str, Any]:
    """The accelerator's name and memory, where it is CUDA."""
    if device.type != "cuda":
        return {"gpu": None}
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda}


@contextlib.contextmanager
def section(report: dict[str, Any], name: str) -> Iterator[None]:
    """Record an exception of one part as a failure and go on to the next part."""
    try:
        yield
    except Exception as error:  # every part is reported; none stops the rest
        report["failures"].append(f"{name}: {type(error).__name__}: {error}")


def check(device: torch.device, quick: bool, parity_timeout: float) -> dict[str, Any]:
    """Every part of the check on `device`, as one report."""
    start = time.perf_counter()
    report: dict[str, Any] = {"device": str(device), "quick": quick,
                              "machine": {**bench.machine(), **gpu(device)}, "failures": []}
    with section(report, "parity"):
        report["parity"] = parity(device, quick, parity_timeout)
        if not report["parity"]["ok"]:
            report["failures"].append(f"parity: {report['parity']['summary']}")
    with section(report, "flash"):
        batch, seq = (2, 32) if quick else (8, 128)
        report["flash"] = [flash_step(f, device, batch, seq) for f in FAMILIES]
        report["failures"] += [f"flash {r['family']}: {r.get('error', 'no flash op ran')}"
                               for r in report["flash"] if not r["ok"]]
    with section(report, "bench"):
        report["bench"] = bench_and_mfu(device, quick)
    report["ok"] = not report["failures"]
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="one parity test, tiny steps and bench (a test of the script)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check.json")
    parser.add_argument("--parity-timeout", type=float, default=240.0,
                        help="seconds for the parity tests (default 240)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    report = check(device, args.quick, args.parity_timeout)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for failure in report["failures"]:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"gpu_check: {'ok' if report['ok'] else 'FAILED'} in {report['seconds']} s; "
          f"{args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
