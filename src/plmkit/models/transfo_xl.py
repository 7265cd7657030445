"""Transformer-XL (Dai et al. 2019): a causal language model over segments with recurrence (each
layer attends to a cached memory of the previous segment) and relative positional encodings.

The stack is `nn/rel_attention.py`'s, causal and without segment encodings; the output layer is
the tied token embedding with a bias (the paper's WikiText-103 models use an adaptive softmax
instead, which plmkit does not have). Trained and evaluated by `objectives/clm.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.models.registry import Family, register, size
from plmkit.nn.dropout import Dropout
from plmkit.nn.encoder import init_weights
from plmkit.nn.rel_attention import (
    AttnType,
    RelativeConfig,
    RelativeEncoder,
    RelativeOutput,
    init_relative,
)


@dataclass
class TransfoXLConfig(RelativeConfig):
    """The WikiText-103 base model by default: L16 H410 A10 FF2100, memory and segment length
    150 (Dai et al. 2019, section 4.1 and the released configuration); ReLU, dropout 0.1."""

    family: str = "transfo-xl"
    vocab_size: int = 32000
    hidden_size: int = 410
    num_layers: int = 16
    num_heads: int = 10
    intermediate_size: int = 2100
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    attn_type: AttnType = "uni"
    segments: bool = False
    mem_len: int | None = 150


PRESETS = {
    "transfo-xl-tiny": size(2, 128, mem_len=32),
    "transfo-xl-base": {},
}


class TransfoXL(nn.Module):
    """Token embedding, the causal relative stack with memory, a tied output layer."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = RelativeEncoder(config)
        self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.drop = Dropout(config.dropout)
        init_weights(self, config.initializer_range)
        init_relative(self, config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, *, mems: list[Tensor] | None = None,
                use_mems: bool = False) -> RelativeOutput:
        """input_ids: (B, S), mems: per layer (B, M, H) -> last_hidden_state (B, S, H), mems."""
        h = self.word_embedding(input_ids)  # (B, S, H)
        return self.encoder(h, attention_mask, mems=mems, use_mems=use_mems)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """hidden: (B, S, H) -> next-token logits (B, S, V)."""
        return F.linear(self.drop(hidden), self.word_embedding.weight, self.lm_bias)


FAMILY = register(Family(
    name="transfo-xl", config=TransfoXLConfig, model=TransfoXL, presets=PRESETS,
    default_objective="clm", tokenizer="bpe",
))
