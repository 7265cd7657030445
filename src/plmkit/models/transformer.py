"""The Transformer (Vaswani et al. 2017, "Attention Is All You Need"): an encoder-decoder of
post-LN blocks (Add & Norm after every sub-layer), ReLU feed-forward layers 4x wide, fixed
sinusoidal positions added to token embeddings scaled by sqrt(d_model), dropout on the embedding
sums, attention weights and sub-layer outputs. One embedding matrix over a joint BPE vocabulary
serves as source embedding, target embedding and pre-softmax projection (section 3.4).

The model exposes `encode` and `decode` (with an optional `DecoderCache` for one-step
incremental decoding); `plmkit.deploy.generate` runs greedy and beam search on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.registry import Family, register, size
from plmkit.nn.block import EncoderBlock
from plmkit.nn.config import StackConfig
from plmkit.nn.decoder import DecoderBlock, DecoderCache
from plmkit.nn.dropout import Dropout
from plmkit.nn.masks import padding_mask
from plmkit.nn.positions import sinusoidal_positions


@dataclass
class TransformerConfig(StackConfig):
    """Transformer base by default (Table 3): N=6 layers in the encoder and in the decoder,
    d_model 512, 8 heads, d_ff 2048, P_drop 0.1, a 37k joint vocabulary (WMT En-De).

    `max_positions` only sizes the sinusoid table (no parameters). LayerNorm eps 1e-6 is the
    reference tensor2tensor value. The special ids are those of plmkit's byte-level BPE
    (<s> = 0 starts a target, <pad> = 1, </s> = 2 ends a source and a target).
    """

    family: str = "transformer"
    vocab_size: int = 37000
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 2048
    max_positions: int = 1024
    activation: str = "relu"
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2

    positive: ClassVar[tuple[str, ...]] = (*StackConfig.positive, "max_positions")

    def check(self) -> None:
        super().check()
        if self.hidden_size % 2:
            raise UserError(f"hidden_size {self.hidden_size} must be even (sinusoidal "
                            "positions)")


PRESETS = {
    "transformer-tiny": size(2, 128, 4),
    "transformer-small": size(3, 256),  # not in the paper: half base's depth and width
    "transformer-base": size(6, 512),  # 63.1M with 37k tokens (paper: 65M)
    "transformer-big": size(6, 1024, dropout=0.3),  # 214.2M (paper: 213M)
}


@dataclass
class Seq2SeqOutput:
    """`last_hidden_state`: the encoder output (B, S, H); `logits`: (B, T, V) when the model
    was given `decoder_input_ids`."""

    last_hidden_state: Tensor
    logits: Tensor | None = None


class Transformer(nn.Module):
    """Shared embedding, N encoder blocks, N decoder blocks, tied output projection."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.register_buffer("positions", sinusoidal_positions(config.max_positions, d),
                             persistent=False)  # (P, d)
        self.drop = Dropout(config.dropout)
        common = {"act": config.activation, "dropout": config.dropout,
                  "attention_dropout": config.attention_dropout, "eps": config.layer_norm_eps}
        shape = (d, config.num_heads, config.intermediate_size)
        self.encoder = nn.ModuleList(
            EncoderBlock(*shape, **common, norm="post") for _ in range(config.num_layers))
        self.decoder = nn.ModuleList(DecoderBlock(*shape, **common)
                                     for _ in range(config.num_layers))
        init_weights(self, d)

    def embed_tokens(self, ids: Tensor, start: int = 0) -> Tensor:
        """ids: (B, S) at positions start.. -> dropout(sqrt(d) * E[ids] + PE) (B, S, H)."""
        end = start + ids.shape[1]
        if end > self.positions.shape[0]:
            raise UserError(f"sequence length {end} exceeds the model's max_positions "
                            f"{self.positions.shape[0]}")
        x = self.embed(ids) * math.sqrt(self.config.hidden_size)  # (B, S, H)
        return self.drop(x + self.positions[start:end])

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids: (B, S), attention_mask: (B, S) 1/0 -> memory (B, S, H)."""
        x = self.embed_tokens(input_ids)
        mask = padding_mask(attention_mask)  # (B, 1, 1, S) or None
        for block in self.encoder:
            x = block(x, mask)
        return x

    def decode(self, decoder_input_ids: Tensor, memory: Tensor,
               memory_mask: Tensor | None = None, cache: DecoderCache | None = None) -> Tensor:
        """decoder_input_ids: (B, T) (the newest position (B, 1) with a cache), memory:
        (B, S, H), memory_mask: (B, 1, 1, S) bool or None -> logits (B, T, V)."""
        start = cache.length if cache is not None else 0
        x = self.embed_tokens(decoder_input_ids, start)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, memory_mask, cache.layers[i] if cache is not None else None)
        return x @ self.embed.weight.T  # (B, T, V): the tied pre-softmax projection

    def new_cache(self) -> DecoderCache:
        """An empty key/value cache for incremental `decode`."""
        return DecoderCache.empty(len(self.decoder))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None,
                decoder_input_ids: Tensor | None = None) -> Seq2SeqOutput:
        """input_ids: (B, S) source; decoder_input_ids: (B, T) shifted target (starting with
        <s>) or None. `token_type_ids` is accepted for plmkit's common signature and ignored."""
        memory = self.encode(input_ids, attention_mask)
        if decoder_input_ids is None:
            return Seq2SeqOutput(memory)
        logits = self.decode(decoder_input_ids, memory, padding_mask(attention_mask))
        return Seq2SeqOutput(memory, logits)


def init_weights(module: nn.Module, hidden: int) -> None:
    """Xavier-uniform linear weights and zero biases (tensor2tensor / fairseq); embeddings
    N(0, d^-0.5), so that the sqrt(d)-scaled embedding has unit variance; pad row zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=hidden**-0.5)
            m.weight.data[m.padding_idx].zero_()


FAMILY = register(Family(
    name="transformer", config=TransformerConfig, model=Transformer, presets=PRESETS,
    default_objective="seq2seq", tokenizer="bpe",
    optim_defaults={"betas": (0.9, 0.98), "eps": 1e-9, "weight_decay": 0.0},  # section 5.3
    schedule="inverse_sqrt",  # section 5.3
    clip_norm=None,  # none in the paper (nor in tensor2tensor's transformer_base)
))
