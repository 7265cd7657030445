"""The Transformer decoder block ("Attention Is All You Need", Vaswani et al. 2017, section 3.1):
causal self-attention, cross-attention over the encoder output, feed-forward; each sub-layer
followed by dropout, the residual and LayerNorm (post-LN Add & Norm).

Incremental decoding: with a `KVCache` the block takes only the newest target position; its
attentions keep their keys and values in it (`MultiHeadAttention`): the cross-attention's are
projected from the memory once, and each step appends the self-attention's, so a new token
costs one position, not a recomputation of the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from plmkit.nn.attention import KVCache, MultiHeadAttention
from plmkit.nn.block import FeedForward
from plmkit.nn.dropout import Dropout


@dataclass
class DecoderCache:
    """The key/value cache of a decoder stack, one `KVCache` per layer."""

    layers: list[KVCache] = field(default_factory=list)

    @classmethod
    def empty(cls, num_layers: int) -> DecoderCache:
        return cls([KVCache() for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Target positions decoded so far."""
        keys = self.layers[0].keys if self.layers else None
        return 0 if keys is None else keys.shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (B',) of the self-attention state (beam search). Each row must stay
        with its source sentence: the cross-attention K/V are left as they are."""
        for layer in self.layers:
            if layer.keys is not None and layer.values is not None:
                layer.keys = layer.keys.index_select(0, index)  # (B', h, t, d)
                layer.values = layer.values.index_select(0, index)


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention and feed-forward, each with Add & Norm (post-LN)."""

    def __init__(self, hidden: int, num_heads: int, inner: int, *, act: str = "relu",
                 dropout: float = 0.1, attention_dropout: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.attn = MultiHeadAttention(hidden, num_heads, attention_dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.cross = MultiHeadAttention(hidden, num_heads, attention_dropout, cross=True)
        self.cross_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn = FeedForward(hidden, inner, act)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        """x: (B, S, H) target states (S = 1 with a cache), memory: (B, T, H) encoder output,
        memory_mask: (B, 1, 1, T) bool or None -> (B, S, H)."""
        a = self.attn(x, is_causal=cache is None, cache=cache)  # one new position: no mask
        x = self.attn_norm(x + self.drop(a))
        c = self.cross(x, memory_mask, memory=memory, cache=cache)
        x = self.cross_norm(x + self.drop(c))
        return self.ffn_norm(x + self.drop(self.ffn(x)))
