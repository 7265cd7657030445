"""XLNet (Yang et al. 2019): a Transformer-XL stack (relative positions, segment recurrence)
with relative segment encodings and two-stream attention, pretrained by permutation language
modelling (`objectives/plm.py`). The LM head is tied to the token embedding, with a bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.models.registry import Family, HFSpec, register, size
from plmkit.nn.dropout import Dropout
from plmkit.nn.encoder import init_weights
from plmkit.nn.rel_attention import RelativeConfig, RelativeEncoder, RelativeOutput, init_relative


@dataclass
class XLNetConfig(RelativeConfig):
    """XLNet-base by default: L12 H768 A12 FF3072, GELU, LayerNorm eps 1e-12, N(0, 0.02);
    pretraining memory 384 with the first half of each 512-token segment reused (section 3.1,
    Appendix A.2). The SentencePiece vocabulary has 32000 pieces, <pad> = 5."""

    family: str = "xlnet"
    pad_token_id: int = 5
    mem_len: int | None = 384
    reuse_len: int | None = 256


# base / large as released (section 3.1, memory 384, the first 256 of 512 reused); tiny for
# tests: sequences of 64, half reused.
PRESETS = {
    "xlnet-tiny": size(2, 128, mem_len=64, reuse_len=32),
    "xlnet-small": size(4, 512),  # not released: BERT-Small's shape
    "xlnet-base": size(12, 768),  # 117M with the 32000-piece vocabulary
    "xlnet-large": size(24, 1024),  # 361M
}


class XLNet(nn.Module):
    """Token embedding, the learned mask embedding that starts the query stream, the relative
    stack; `forward` returns the content stream as `last_hidden_state` (and, given
    `target_mapping`, the query stream of the targets), objectives call `lm_logits` on it."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.word_embedding = nn.Embedding(config.vocab_size, h)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, h))
        self.encoder = RelativeEncoder(config)
        self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.drop = Dropout(config.dropout)
        init_weights(self, config.initializer_range)
        init_relative(self, config.initializer_range)
        nn.init.normal_(self.mask_emb, std=config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, *, perm_mask: Tensor | None = None,
                target_mapping: Tensor | None = None, mems: list[Tensor] | None = None,
                use_mems: bool = False) -> RelativeOutput:
        """input_ids: (B, S); perm_mask: (B, S, S), 1 = query i may not see token j;
        target_mapping: (B, P, S) one-hot target positions; mems: per layer (B, M, H).
        -> last_hidden_state (B, S, H), query_hidden_state (B, P, H), mems."""
        h = self.word_embedding(input_ids)  # (B, S, H)
        g = None
        if target_mapping is not None:
            g = self.mask_emb.expand(input_ids.shape[0], target_mapping.shape[1], -1)
        return self.encoder(h, attention_mask, token_type_ids, g=g, perm_mask=perm_mask,
                            target_mapping=target_mapping, mems=mems, use_mems=use_mems)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """hidden: (B, S|P, H) -> (B, S|P, V) over the tied token embedding."""
        return F.linear(self.drop(hidden), self.word_embedding.weight, self.lm_bias)


_L = "transformer.layer.{i}."
HF_KEYS = {
    "word_embedding.weight": "transformer.word_embedding.weight",
    "mask_emb": "transformer.mask_emb",
    "encoder.layers.{i}.attn.{p}": _L + "rel_attn.{p}",  # q k v o r, biases, seg_embed
    "encoder.layers.{i}.attn.norm.{p}": _L + "rel_attn.layer_norm.{p}",
    "encoder.layers.{i}.ffn.up.{p}": _L + "ff.layer_1.{p}",
    "encoder.layers.{i}.ffn.down.{p}": _L + "ff.layer_2.{p}",
    "encoder.layers.{i}.ffn_norm.{p}": _L + "ff.layer_norm.{p}",
    "lm_bias": "lm_loss.bias",
}

HF_CONFIG = {
    "hidden_size": "d_model",
    "num_layers": "n_layer",
    "num_heads": "n_head",
    "intermediate_size": "d_inner",
    "activation": "ff_activation",
    **{name: name for name in ("vocab_size", "dropout", "layer_norm_eps", "initializer_range",
                               "pad_token_id", "attn_type", "mem_len", "reuse_len", "clamp_len")},
}

FAMILY = register(Family(
    name="xlnet", config=XLNetConfig, model=XLNet, presets=PRESETS,
    default_objective="plm", tokenizer="unigram",
    optim_defaults={"eps": 1e-6},  # Adam epsilon 1e-6 (Appendix A.2)
    hf=HFSpec("xlnet", "XLNetLMHeadModel", "transformer.", HF_KEYS, HF_CONFIG,
              ignored=("lm_loss.weight",),
              fixed={"bi_data": False, "same_length": False, "untie_r": True}),
))
