"""Attention masks: True means "may attend"."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

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


class Unpadded(NamedTuple):
    """A padded batch's real tokens as the rows of one (N, D) matrix: the encoder runs its
    position-wise work (projections, feed-forward, LayerNorm, dropout) on real tokens only and
    lays them out as (B, S, D) for attention alone, so no FLOPs go to padding. Padded
    positions come out as zeros (no real position reads them: attention masks them)."""

    index: Tensor  # (N,) positions of the real tokens in the flattened (B * S) batch
    batch: int
    seq: int
    mask: Tensor  # (B, 1, 1, S) bool, the attention mask

    def unpad(self, x: Tensor) -> Tensor:
        """(B, S, D) -> (N, D)."""
        return x.flatten(0, 1).index_select(0, self.index)

    def pad(self, x: Tensor) -> Tensor:
        """(N, D) -> (B, S, D), zeros at the padded positions."""
        out = x.new_zeros(self.batch * self.seq, x.shape[-1])
        return out.index_copy(0, self.index, x).view(self.batch, self.seq, -1)


def encoder_mask(attention_mask: Tensor | None) -> Tensor | Unpadded | None:
    """What an encoder's layers take: None when nothing is padded (`padding_mask`), the
    real tokens (`Unpadded`) when something is, or the bool mask under tracing (where shapes
    may not depend on the data)."""
    mask = padding_mask(attention_mask)
    if mask is None or torch.compiler.is_compiling():
        return mask
    assert attention_mask is not None
    batch, seq = attention_mask.shape
    index = attention_mask.flatten().nonzero().squeeze(1)  # (N,)
    return Unpadded(index, batch, seq, mask)


def over_real_tokens(layers: Callable[[Tensor, Tensor | Unpadded | None], Tensor], x: Tensor,
                     attention_mask: Tensor | None) -> Tensor:
    """`layers(x, mask)` of an encoder on x (B, S, H), on the real tokens alone when some are
    padded (`encoder_mask`) -> (B, S, H)."""
    mask = encoder_mask(attention_mask)
    if not isinstance(mask, Unpadded):
        return layers(x, mask)
    return mask.pad(layers(mask.unpad(x), mask))  # (N, H) in between
