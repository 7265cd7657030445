"""Output heads shared by several models: the masked-LM head over a tied vocabulary matrix, and
the two-way sentence head on the pooled [CLS]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.block import activation


class MaskedLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> projection on the (tied) token embedding + bias.

    `positions` (B, P) restricts the vocabulary projection to the masked positions: on small
    models that projection is most of the compute, and only ~15% of the tokens need it.
    """

    def __init__(self, hidden: int, embedding_size: int, vocab_size: int, act: str = "gelu",
                 eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, embedding_size)
        self.act = activation(act)
        self.norm = nn.LayerNorm(embedding_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, decoder: Tensor, positions: Tensor | None = None) -> Tensor:
        """hidden: (B, S, H), decoder: (V, E), positions: (B, P) or None -> (B, P|S, V)."""
        if positions is not None:
            hidden = gather_positions(hidden, positions)  # (B, P, H)
        x = self.norm(self.act(self.dense(hidden)))  # (B, P, E)
        return F.linear(x, decoder, self.bias)  # (B, P, V)


def gather_positions(hidden: Tensor, positions: Tensor) -> Tensor:
    """hidden: (B, S, H), positions: (B, P) int64 -> (B, P, H)."""
    index = positions[..., None].expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)


class SentenceHead(nn.Linear):
    """The two-way classifier on the pooled [CLS] of a BERT-layout model, whichever sentence
    task trains it: next sentence (BERT), sentence order (ALBERT) or real / fake dialogue
    (ERNIE's DLM). Class 0: the pair is as the text has it; 1: random, swapped or fake."""

    def __init__(self, hidden: int):
        super().__init__(hidden, 2)

