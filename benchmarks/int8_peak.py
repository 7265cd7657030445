"""The GEMM speeds that bound a serving path on this CPU, at bert-base's FFN down-projection
over a 32 x 128 batch (4096 x 3072 x 768): the bare int8 GEMM (`torch._int_mm`), torch's
dynamically quantised Linear (what `optimize(int8=True)` runs: activations quantised at each
call), and bf16 and float32 matmuls; the best of 10 calls each (docs/deploy.md, "Measured").

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python benchmarks/int8_peak.py
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch

M, K, N = 4096, 3072, 768


def best_seconds(call: Callable[[], object], reps: int = 10) -> float:
    """The fastest of `reps` timed calls, after one warm-up call."""
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    ops = 2 * M * K * N
    a = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    b = torch.randint(-128, 128, (K, N), dtype=torch.int8)
    print(f"int8 _int_mm: {ops / best_seconds(lambda: torch._int_mm(a, b)) / 1e9:.0f} GOP/s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        linear = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(K, N)), {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(M, K)  # (M, K)
    with torch.inference_mode():
        seconds = best_seconds(lambda: linear(x))
        print(f"dynamic int8 Linear: {ops / seconds / 1e9:.0f} GOP/s")
        for dtype in (torch.bfloat16, torch.float32):
            w, xd = torch.randn(K, N, dtype=dtype), x.to(dtype)
            seconds = best_seconds(lambda xd=xd, w=w: xd @ w)
            print(f"{dtype} matmul: {ops / seconds / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
