"""Which precision plmkit trains in by default: bf16 autocast where the hardware runs bf16
matmuls fast, float32 elsewhere. Weights and optimizer state stay float32 either way."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path

import torch
from torch import nn

# x86 CPU flags of native bf16 dot products: AVX512-BF16 (Zen 4, Cooper Lake and later) and
# AMX (Sapphire Rapids and later). Without them oneDNN emulates bf16, slower than float32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# The flags alone do not settle it: a virtual machine can show AVX512-BF16 while oneDNN's bf16
# kernels run slower than its float32 ones (seen on a Xeon whose AMX was hidden: 0.5x). So the
# CPU must also measure a bf16 product this much faster than float32, at a small model's shape.
MIN_SPEEDUP = 1.2
PROBE_SHAPE = (1024, 512, 512)  # (m, k, n): tokens x hidden x hidden
PROBE_ROUNDS = 10


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_bf16_speedup() -> float:
    """How many times faster a bf16 matrix product of `PROBE_SHAPE` runs than a float32 one on
    this CPU, with torch's threads (the best of `PROBE_ROUNDS` timings each, interleaved:
    the first few run slow while the threads wake; about 0.1 s)."""
    m, k, n = PROBE_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    operands = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(operands, math.inf)
    for _ in range(PROBE_ROUNDS):
        for dtype, (left, right) in operands.items():
            start = time.perf_counter()
            torch.mm(left, right)  # (m, n)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def fast_bf16(device: torch.device) -> bool:
    """True where bf16 autocast speeds training up: CUDA devices that support bf16, CPUs with
    native bf16 instructions (`BF16_FLAGS`) and oneDNN whose bf16 products measure at least
    `MIN_SPEEDUP` times faster than float32 (`cpu_bf16_speedup`)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return (bool(BF16_FLAGS & cpu_flags()) and torch.backends.mkldnn.is_available()
                and cpu_bf16_speedup() >= MIN_SPEEDUP)
    return False


def bf16_autocast(model: nn.Module, enabled: bool) -> torch.autocast:
    """bf16 autocast on the device of `model`'s weights (a no-op context when not `enabled`)."""
    device = next(model.parameters(), torch.empty(0)).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
