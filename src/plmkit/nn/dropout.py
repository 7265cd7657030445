"""Dropout with a cheaper random mask on CPUs.

`F.dropout` on a CPU draws one Mersenne-Twister number per element through `bernoulli_`, a
serial loop: ~5 ns an element, 8% of a bert-base training step on this project's machine
(BENCHMARKS.md, "Where the time goes"). Here one 64-bit word gives four 16-bit uniforms, and
the words come from numpy's SFC64 generator (2.5x the speed of torch's Mersenne Twister),
seeded from torch's default generator: `torch.manual_seed` and the trainer's checkpointed RNG
state still decide every mask. The drop probability is `p` rounded to a multiple of 2^-16
(0.1 -> 0.1000061); the survivors are scaled by the exact inverse of the rounded keep
probability, so expectations are unchanged.
Other devices (and `p` of 0 or 1) use `F.dropout`, whose CUDA kernel is already fused.
"""

from __future__ import annotations

import numpy as np
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
    1 - round(p * 2^16) / 2^16 and 0 otherwise, and the scale 1 / that probability; random
    bits from `random_words`."""
    dropped = round(p * LEVELS)
    n = x.numel()
    words = random_words((n + 3) // 4)  # 4 uniforms of 16 bits in each
    uniforms = words.view(torch.int16)[:n].view(x.shape)  # in [-2^15, 2^15)
    mask = torch.ge(uniforms, dropped - LEVELS // 2, out=torch.empty_like(x))
    return mask, LEVELS / (LEVELS - dropped)


def random_words(count: int) -> Tensor:
    """`count` uniformly random int64 words on the CPU, from an SFC64 stream whose seed is
    drawn from torch's default generator."""
    seed = int(torch.randint(1 << 62, (1,)))
    return torch.from_numpy(np.random.SFC64(seed).random_raw(count).view(np.int64))


class Dropout(nn.Dropout):
    """`nn.Dropout` (same attribute `p`, same state dict) over `dropout` above."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


class KernelDropout:
    """A module that applies its dropout inside a fused kernel (the attention weights' in
    `F.scaled_dot_product_attention`), so it keeps the probability as the float `dropout`
    rather than as an `nn.Dropout`."""

    dropout: float


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout of `model` to 0 (ALBERT section 4.9): each `nn.Dropout` and each
    `KernelDropout`."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        elif isinstance(module, KernelDropout):
            module.dropout = 0.0
