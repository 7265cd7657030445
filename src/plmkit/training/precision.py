"""Which precision plmkit trains in by default: bf16 autocast where the hardware runs bf16
matmuls fast, float32 elsewhere. Weights and optimizer state stay float32 either way."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from torch import nn

# x86 CPU flags of native bf16 dot products: AVX512-BF16 (Zen 4, Cooper Lake and later) and
# AMX (Sapphire Rapids and later). Without them oneDNN emulates bf16, slower than float32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device: torch.device) -> bool:
    """True where bf16 autocast speeds training up: CUDA devices that support bf16, CPUs with
    native bf16 instructions (`BF16_FLAGS`) and oneDNN."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(BF16_FLAGS & cpu_flags()) and torch.backends.mkldnn.is_available()
    return False


def bf16_autocast(model: nn.Module, enabled: bool) -> torch.autocast:
    """bf16 autocast on the device of `model`'s weights (a no-op context when not `enabled`)."""
    device = next(model.parameters(), torch.empty(0)).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
