"""Dropout with a cheaper random mask on CPUs.

`F.dropout` on a CPU draws one Mersenne-Twister number per element through `bernoulli_`, a
serial loop: ~5 ns an element, 8% of a bert-base training step on this project's machine
(BENCHMARKS.md, "Where the time goes"). Here one 64-bit draw gives four 16-bit uniforms, so
the mask costs about a quarter of that. The drop probability is `p` rounded to a multiple of
2^-16 (0.1 -> 0.1000061); the survivors are scaled by the exact inverse of the rounded keep
probability, so expectations are unchanged.
Other devices (and `p` of 0 or 1) use `F.dropout`, whose CUDA kernel is already fused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 1 << 16  # 16-bit uniforms


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of `x` with probability `p` (rounded to 2^-16 on CPU) and scale the
    rest by 1 / (1 - p); the identity outside training or for p = 0."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    mask, scale = keep_mask(x, p)
    return (x * mask).mul_(scale)  # autograd keeps `mask` for the backward pass, nothing else


def keep_mask(x: Tensor, p: float) -> tuple[Tensor, float]:
    """A mask like `x` (its dtype: one multiply, no cast), 1 with probability
    1 - round(p * 2^16) / 2^16 and 0 otherwise, and the scale 1 / that probability. Draws from
    torch's default generator (seeded, checkpointed)."""
    dropped = round(p * LEVELS)
    n = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64,
                          device=x.device)  # 4 uniforms of 16 bits in each
    uniforms = words.view(torch.int16)[:n].view(x.shape)  # in [-2^15, 2^15)
    mask = torch.ge(uniforms, dropped - LEVELS // 2, out=torch.empty_like(x))
    return mask, LEVELS / (LEVELS - dropped)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same attribute `p`, same state dict) over `dropout` above."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
