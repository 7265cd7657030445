"""Fixed sinusoidal position encodings ("Attention Is All You Need", Vaswani et al. 2017,
section 3.5), also the relative encodings of Transformer-XL and XLNet."""

from __future__ import annotations

import torch
from torch import Tensor


def sinusoids(positions: Tensor, d: int) -> Tensor:
    """positions: (N,) float -> (N, d) as [sin | cos] halves, frequencies 1 / 10000^(2i/d).

    The concatenated layout of Transformer-XL's `PositionalEmbedding` (over positions klen-1..0).
    """
    if d % 2:
        raise ValueError(f"sinusoidal encodings need an even size, got {d}")
    inv_freq = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (N, d/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (N, d)


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """(n, d) table with PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    table = sinusoids(torch.arange(n), d)  # (n, d): [sin | cos]
    return torch.stack(table.chunk(2, dim=-1), dim=-1).flatten(1)  # (n, d) interleaved
