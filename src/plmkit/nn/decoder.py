"""The Transformer decoder block ("Attention Is All You Need", Vaswani et al. 2017, section 3.1):
causal self-attention, cross-attention over the encoder output, feed-forward; each sub-layer
followed by dropout, the residual and LayerNorm (post-LN Add & Norm).

Incremental decoding: with a `LayerCache` the block takes only the newest target position; the
cross-attention keys/values are projected from the memory once, and each step appends its
self-attention key/value, so a new token costs one position, not a recomputation of the prefix.
The cached path reuses the `MultiHeadAttention` projections (`qkv`, `q`, `kv`, `out`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.block import FeedForward
from plmkit.nn.dropout import Dropout


@dataclass
class LayerCache:
    """One decoder layer's state: cross-attention K/V (B, h, T, d) and self-attention K/V so far
    (B, h, t, d)."""

    memory: tuple[Tensor, Tensor] | None = None
    keys: Tensor | None = None
    values: Tensor | None = None


@dataclass
class DecoderCache:
    """The key/value cache of a decoder stack, one `LayerCache` per layer."""

    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def empty(cls, num_layers: int) -> DecoderCache:
        return cls([LayerCache() for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Target positions decoded so far."""
        keys = self.layers[0].keys if self.layers else None
        return 0 if keys is None else keys.shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (B',) of the self-attention state (beam search). Each row must stay
        with its source sentence: the cross-attention K/V are left as they are."""
        for layer in self.layers:
            if layer.keys is not None:
                layer.keys = layer.keys.index_select(0, index)  # (B', h, t, d)
                layer.values = layer.values.index_select(0, index)


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention and feed-forward, each with Add & Norm (post-LN)."""

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        inner: int,
        *,
        act: str = "relu",
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.attn = MultiHeadAttention(hidden, num_heads, attention_dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.cross = MultiHeadAttention(hidden, num_heads, attention_dropout, cross=True)
        self.cross_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn = FeedForward(hidden, inner, act)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x: (B, S, H) target states (S = 1 with a cache), memory: (B, T, H) encoder output,
        memory_mask: (B, 1, 1, T) bool or None -> (B, S, H)."""
        a = self.attn(x, is_causal=True) if cache is None else self._self_step(x, cache)
        x = self.attn_norm(x + self.drop(a))
        if cache is None:
            c = self.cross(x, memory_mask, memory=memory)
        else:
            c = self._cross_step(x, memory, memory_mask, cache)
        x = self.cross_norm(x + self.drop(c))
        return self.ffn_norm(x + self.drop(self.ffn(x)))

    def _self_step(self, x: Tensor, cache: LayerCache) -> Tensor:
        """Self-attention of one new position over the cached ones and itself."""
        if x.shape[1] != 1:
            raise ValueError(f"cached decoding takes one position at a time, got {x.shape[1]}")
        n = self.attn.num_heads
        q, k, v = (_heads(t, n) for t in self.attn.qkv(x).chunk(3, dim=-1))  # (B, h, 1, d)
        if cache.keys is not None:
            k = torch.cat([cache.keys, k], dim=2)  # (B, h, t+1, d)
            v = torch.cat([cache.values, v], dim=2)
        cache.keys, cache.values = k, v
        return self.attn.out(_merge(self._attend(self.attn, q, k, v, None)))  # (B, 1, H)

    def _cross_step(self, x: Tensor, memory: Tensor, mask: Tensor | None,
                    cache: LayerCache) -> Tensor:
        """Cross-attention with the memory's keys/values projected on the first step only."""
        n = self.cross.num_heads
        if cache.memory is None:
            k, v = self.cross.kv(memory).chunk(2, dim=-1)  # (B, T, H) each
            cache.memory = (_heads(k, n), _heads(v, n))  # (B, h, T, d) each
        q = _heads(self.cross.q(x), n)  # (B, h, 1, d)
        y = self._attend(self.cross, q, *cache.memory, mask)
        return self.cross.out(_merge(y))  # (B, 1, H)

    @staticmethod
    def _attend(attn: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor,
                mask: Tensor | None) -> Tensor:
        p = attn.dropout if attn.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def _heads(t: Tensor, num_heads: int) -> Tensor:
    """(B, S, H) -> (B, h, S, H/h)."""
    b, s, h = t.shape
    return t.view(b, s, num_heads, h // num_heads).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    """(B, h, S, d) -> (B, S, h*d)."""
    b, n, s, d = t.shape
    return t.transpose(1, 2).reshape(b, s, n * d)
