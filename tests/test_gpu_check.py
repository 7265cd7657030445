"""benchmarks/gpu_check.py on the CPU (its quick mode: the code paths the GPU runs), and the
device decisions the trainer's loader makes (pinned memory, non-blocking copies)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from plmkit.training.prefetch import Prefetch, pinned, pins_memory

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_op_log_sees_the_sdpa_kernel_that_ran() -> None:
    q = torch.randn(1, 2, 8, 16)  # (B, h, S, d)
    with gpu_check().OpLog() as log:
        F.scaled_dot_product_attention(q, q, q)
    assert any("flash" in name for name in log.names)  # the CPU flash kernel
    with gpu_check().OpLog() as log, sdpa_kernel([SDPBackend.MATH]):
        F.scaled_dot_product_attention(q, q, q)
    assert not any("flash" in name for name in log.names)


def test_flash_step_on_the_cpu_trains_and_records_why_flash_is_not_asserted() -> None:
    record = gpu_check().flash_step("bert", torch.device("cpu"), batch=2, seq=16)
    assert record["ok"] and record["flash"] is None
    assert "CUDA only" in record["reason"] and record["loss"] > 0


@pytest.mark.slow  # ~60 s on a loaded 2-core machine: a pytest subprocess, 7 steps, a bench
def test_quick_cpu_mode_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {"device", "machine", "parity", "flash", "bench", "failures", "ok"} <= set(report)
    assert report["ok"] and report["parity"]["ok"] and "1 passed" in report["parity"]["summary"]
    assert [r["family"] for r in report["flash"]] == list(gpu_check().FAMILIES)
    assert all(r["ok"] and r["flash"] is None and r["reason"] for r in report["flash"])
    assert report["bench"]["matmul_peak_flops"]["bfloat16"] > 0
    assert {(r["mode"], r["dtype"]) for r in report["bench"]["records"]} == {
        ("train", "bfloat16"), ("infer", "bfloat16")}
    assert all(0 < m["plmkit"] < 1 and 0 < m["hf"] < 1 for m in report["bench"]["mfu"].values())


def test_cuda_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr


def test_only_batches_bound_for_cuda_are_pinned() -> None:
    assert pins_memory(torch.device("cuda")) and pins_memory(torch.device("cuda:1"))
    assert not pins_memory(torch.device("cpu")) and not pins_memory(torch.device("meta"))


def test_unpinned_prefetch_hands_the_batches_over_unchanged() -> None:
    batches = [{"ids": torch.arange(3) + i, "n": i} for i in range(3)]
    got = list(Prefetch(batches, pin=False))
    assert all(a["ids"] is b["ids"] and a["n"] == b["n"] for a, b in zip(got, batches, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs a CUDA runtime")
def test_pinned_prefetch_pins_every_tensor_and_keeps_the_rest() -> None:
    batches = [{"ids": torch.arange(3) + i, "pair": (torch.ones(2), "x")} for i in range(2)]
    got = list(Prefetch(batches, pin=True))
    assert all(b["ids"].is_pinned() and b["pair"][0].is_pinned() for b in got)
    assert [b["ids"].tolist() for b in got] == [[0, 1, 2], [1, 2, 3]]
    assert pinned({"s": "x"}) == {"s": "x"}


def test_bench_device_option() -> None:
    from plmkit.bench.suite import parse_device
    from plmkit.errors import UserError

    assert parse_device("cpu") == torch.device("cpu")
    for name, problem in (("foo", "Expected one of"), ("meta", "runs on cpu or cuda")):
        with pytest.raises(UserError, match=problem):
            parse_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            parse_device("cuda")
