"""Multi-head attention over `F.scaled_dot_product_attention`, self and cross."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with `num_heads` heads ("Attention Is All You Need", 3.2.2).

    Self-attention projects queries, keys and values with one fused (H, 3H) matrix; cross-
    attention (`cross=True`) keeps a query projection and a fused (H, 2H) key/value projection.
    """

    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.0, cross: bool = False):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.cross = cross
        if cross:
            self.q = nn.Linear(hidden, hidden)
            self.kv = nn.Linear(hidden, 2 * hidden)
        else:
            self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """x: (B, S, H); mask: bool, True = attend, broadcastable to (B, heads, S, T);
        memory: (B, T, H) for cross-attention. Returns (B, S, H)."""
        if self.cross:
            q = self.q(x)  # (B, S, H)
            k, v = self.kv(memory).chunk(2, dim=-1)  # (B, T, H) each
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, S, H) each
        q, k, v = (self._split(t) for t in (q, k, v))  # (B, h, S|T, d)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                           is_causal=is_causal)
        return self.out(self._merge(y))  # (B, S, H)

    def _split(self, t: Tensor) -> Tensor:
        b, s, h = t.shape
        return t.view(b, s, self.num_heads, h // self.num_heads).transpose(1, 2)

    @staticmethod
    def _merge(t: Tensor) -> Tensor:
        b, n, s, d = t.shape
        return t.transpose(1, 2).reshape(b, s, n * d)

