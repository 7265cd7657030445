"""Attention masks: True means "may attend"."""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, S) 1/0 key mask -> (B, 1, 1, S) bool, or None when nothing is padded."""
    if attention_mask is None:
        return None
    return attention_mask.bool()[:, None, None, :]


def causal_mask(length: int, device: torch.device | None = None) -> Tensor:
    """(S, S) lower-triangular bool mask: position i sees positions <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()
