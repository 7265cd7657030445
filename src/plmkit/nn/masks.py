"""Attention masks: True means "may attend"."""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, S) 1/0 key mask -> (B, 1, 1, S) bool, or None when nothing is padded.

    Dropping an all-ones mask (as transformers does) is not cosmetic: without a mask,
    `scaled_dot_product_attention` skips the per-layer mask conversion and the fully-masked-row
    check of its math path, and may pick a fused kernel. The check reads the mask once per
    forward (a host sync on an accelerator); under tracing the mask is kept as given.
    """
    if attention_mask is None:
        return None
    if not torch.compiler.is_compiling() and bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def causal_mask(length: int, device: torch.device | None = None) -> Tensor:
    """(S, S) lower-triangular bool mask: position i sees positions <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()
