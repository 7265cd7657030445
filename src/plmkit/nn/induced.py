"""Induced-set attention and pooling by multi-head attention, from the Set Transformer (Lee et
al. 2019, "Set Transformer: A Framework for Attention-based Permutation-Invariant Neural
Networks", section 3.1-3.2), for the BERT-style encoder.

- `mab`: the multihead attention block MAB(X, Y) = LayerNorm(H + rFF(H)),
  H = LayerNorm(X + Multihead(X, Y, Y)): a post-LN `EncoderBlock` whose attention
  is a cross-attention from X to Y (the feed-forward is the encoder's, FF wide).
- `PoolingByAttention`: PMA_k(Z) = MAB(S, Z), k learned seed vectors S (k, H) attending over
  the padded set Z. The paper writes MAB(S, rFF(Z)); over an encoder's output, which
  has just come out of a feed-forward sublayer, that rFF is left out (as the authors' released
  code does).
- `InducedAttention`: the attention sublayer of an ISAB (section 3.1): m learned inducing points
  I (m, H) attend to the n tokens, H = MAB(I, X) = PMA_m(X) with the padding masked out; then
  the tokens attend to those m vectors (all real: no mask). Inside an `EncoderBlock`, whose
  residuals, LayerNorms and feed-forward complete the second MAB(X, H), the block computes
  ISAB_m(X) = MAB(X, MAB(I, X)) in O(n m) instead of self-attention's O(n^2).

Norm placement: the inducing MAB is post-LN, as in the paper, whatever the encoder's `norm`;
the second MAB is the block's own sublayers and follows `norm` (pre-LN: the tokens enter the
attention normalized and the output joins the residual stream unnormalized). Pre-LN matters
for a residual stream that runs through many layers; the inducing MAB's runs through one (each
layer has its own I), and its LayerNorm-ed output H is what pre-LN would feed the second
attention anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.block import EncoderBlock
from plmkit.nn.config import EncoderConfig, StackConfig
from plmkit.nn.masks import Unpadded


def mab(cfg: StackConfig) -> EncoderBlock:
    """MAB(X, Y) (section 3.1) shaped by `cfg`: call it as `mab(x, mask, memory=y)` with x
    (B, S, H), y (B, T, H), mask (B, 1, 1, T) over y -> (B, S, H)."""
    attention_dropout = getattr(cfg, "attention_dropout", cfg.dropout)
    return EncoderBlock(
        cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, act=cfg.activation,
        dropout=cfg.dropout, attention_dropout=attention_dropout, eps=cfg.layer_norm_eps,
        norm="post",
        attn=MultiHeadAttention(cfg.hidden_size, cfg.num_heads, attention_dropout, cross=True),
    )


class PoolingByAttention(nn.Module):
    """PMA_k (section 3.2): `seeds` = k learned vectors attend over a set -> (B, k, H).

    The seeds start as N(0, 1) draws, the scale of the LayerNorm-ed states they attend over;
    every other parameter is initialised by the model around it (`nn.encoder.init_weights`).
    """

    def __init__(self, cfg: StackConfig, seeds: int):
        super().__init__()
        if seeds <= 0:
            raise ValueError(f"pooling by attention needs at least one seed, got {seeds}")
        self.seeds = nn.Parameter(torch.randn(seeds, cfg.hidden_size))  # (k, H)
        self.mab = mab(cfg)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """z: (B, T, H), mask: (B, 1, 1, T) bool (True = real) or None -> (B, k, H)."""
        seeds = self.seeds.expand(z.shape[0], -1, -1)  # (B, k, H)
        return self.mab(seeds, mask, z)


class InducedAttention(nn.Module):
    """ISAB's attention with `cfg.num_inducing` inducing points (see the module docstring),
    the `attn` of an `EncoderBlock`: same calls as self-attention, (B, S, H) with a
    (B, 1, 1, S) mask or None, or the real tokens (N, H) with `Unpadded`. The inducing points
    are `induce.seeds`."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.induce = PoolingByAttention(cfg, cfg.num_inducing)
        self.attend = MultiHeadAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout,
                                         cross=True)

    def forward(self, x: Tensor, mask: Tensor | Unpadded | None = None,
                memory: Tensor | None = None) -> Tensor:
        if memory is not None:
            raise ValueError("induced attention is a self-attention; it takes no memory")
        if isinstance(mask, Unpadded):
            return mask.unpad(self._attend(mask.pad(x), mask.mask))  # (N, H)
        return self._attend(x, mask)

    def _attend(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        """tokens: (B, S, H) (padding zero or masked), mask: (B, 1, 1, S) or None -> (B, S, H)."""
        induced = self.induce(tokens, mask)  # (B, m, H)
        return self.attend(tokens, memory=induced)  # (B, S, H): every inducing point is real
