"""Feed-forward and encoder block, with post-LN ("Attention Is All You Need", BERT) or
pre-LN (GPT-2 and later) residual wiring as a named choice."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.dropout import Dropout
from plmkit.nn.masks import Unpadded

Norm = Literal["post", "pre"]
Activation = Literal["gelu", "gelu_tanh", "relu"]

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def activation(name: str):
    """The activation function called `name` (gelu = exact erf GELU as in BERT)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        choices = sorted(_ACTIVATIONS)
        raise ValueError(f"unknown activation {name!r}; choose from {choices}") from None


class FeedForward(nn.Module):
    """Position-wise H -> FF -> H with an activation between."""

    def __init__(self, hidden: int, inner: int, act: str = "gelu"):
        super().__init__()
        self.up = nn.Linear(hidden, inner)
        self.down = nn.Linear(inner, hidden)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))  # (B, S, H)


class EncoderBlock(nn.Module):
    """Attention then feed-forward, each with dropout on its output and a residual.

    `attn` is the attention sublayer, called as `attn(x, mask, memory)`: multi-head self-
    attention by default; a cross-attention over a `memory` makes the block the Set
    Transformer's MAB(x, memory) (Lee et al. 2019, section 3.1, post-LN), and
    `nn.induced.InducedAttention` makes it an ISAB."""

    def __init__(self, hidden: int, num_heads: int, inner: int, *, act: str = "gelu",
                 dropout: float = 0.1, attention_dropout: float = 0.1, eps: float = 1e-12,
                 norm: Norm = "post", attn: nn.Module | None = None):
        super().__init__()
        self.norm = norm
        if attn is None:
            attn = MultiHeadAttention(hidden, num_heads, attention_dropout)
        self.attn = attn
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn = FeedForward(hidden, inner, act)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | Unpadded | None = None,
                memory: Tensor | None = None) -> Tensor:
        """x: (B, S, H), mask: (B, 1, 1, S) bool or None -> (B, S, H); or the real tokens
        x: (N, H) with `Unpadded` -> (N, H). With `memory` (B, T, H) (a cross-attention
        `attn`) the mask is over the memory: (B, 1, 1, T)."""
        if self.norm == "post":
            x = self.attn_norm(x + self.drop(self.attn(x, mask, memory)))
            return self.ffn_norm(x + self.drop(self.ffn(x)))
        x = x + self.drop(self.attn(self.attn_norm(x), mask, memory))
        return x + self.drop(self.ffn(self.ffn_norm(x)))
