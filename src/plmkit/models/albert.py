"""ALBERT (Lan et al. 2020, "ALBERT: A Lite BERT for Self-supervised Learning of Language
Representations"): BERT's encoder with two parameter reductions and a better sentence task.

- Factorized embedding parameterization (section 3.1): tokens embed in E (128) and a linear map
  projects them to H, so the vocabulary costs V*E + E*H instead of V*H (`nn.Embeddings` with
  `embedding_size`).
- Cross-layer parameter sharing (section 3.1, Table 4): "all" shares one block across the
  layers (the released models), "attention" / "ffn" share only that sublayer, "none" shares
  nothing. Layers can also come in `num_groups` contiguous runs that each share a block
  (transformers' `num_hidden_groups`); "none" is one group per layer.
- Sentence-order prediction (section 3.2) on the pooled [CLS]: `objectives/sop.py`; the same
  sentence head takes next-sentence prediction (`mlm+nsp`, the ablation of Table 5).

No dropout (the v2 models, section 4.8), GELU with the tanh approximation ("gelu_new")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.registry import Family, encoder_spec, register, size
from plmkit.nn.config import EncoderConfig
from plmkit.nn.encoder import ENCODER_HF_CONFIG, Encoder, EncoderWithHeads, Layers, block
from plmkit.nn.masks import Unpadded

Sharing = Literal["all", "attention", "ffn", "none"]


@dataclass
class AlbertConfig(EncoderConfig):
    """ALBERT-base by default: L12 H768 A12 FF3072, E128, vocabulary 30,000 (SentencePiece),
    every layer sharing one block, no dropout."""

    family: str = "albert"
    vocab_size: int = 30000
    embedding_size: int | None = 128
    activation: str = "gelu_tanh"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    sharing: Sharing = "all"
    num_groups: int = 1

    def check(self) -> None:
        super().check()
        if self.embedding_size is None or self.embedding_size == self.hidden_size:
            raise UserError(f"ALBERT needs an embedding_size below hidden_size {self.hidden_size}"
                            f" (got {self.embedding_size})")
        if self.sharing == "none":
            self.num_groups = self.num_layers
        if not 1 <= self.num_groups <= self.num_layers:
            raise UserError(f"num_groups must be in [1, {self.num_layers}], not {self.num_groups}")
        if self.sharing in ("attention", "ffn") and self.num_groups != 1:
            raise UserError(f"sharing {self.sharing!r} works with num_groups 1 only")


# ALBERT Table 1 (counts of transformers' AlbertModel with a 30,000 vocabulary in comments).
PRESETS = {
    "albert-tiny": size(4, 128, embedding_size=64),
    "albert-small": size(4, 512),  # not in the paper: BERT-Small's shape, E = 128
    "albert-base": size(12, 768),  # 11.7M ("12M")
    "albert-large": size(24, 1024),  # 17.7M ("18M")
    "albert-xlarge": size(24, 2048, 16),  # 58.7M ("60M")
    "albert-xxlarge": size(12, 4096),  # 222.6M (the paper says 235M)
}


class GroupedLayers(nn.Module):
    """`num_layers` layers over `num_groups` blocks, layer i running block
    int(i / (num_layers / num_groups)) as transformers' AlbertTransformer does."""

    def __init__(self, cfg: AlbertConfig):
        super().__init__()
        self.groups = nn.ModuleList(block(cfg) for _ in range(cfg.num_groups))
        self.schedule = [int(i / (cfg.num_layers / cfg.num_groups)) for i in range(cfg.num_layers)]

    def forward(self, x: Tensor, mask: Tensor | Unpadded | None) -> Tensor:
        """x: (B, S, H), mask: (B, 1, 1, S) or None -> (B, S, H)."""
        for g in self.schedule:
            x = self.groups[g](x, mask)
        return x


class PartlySharedLayers(nn.Module):
    """The "attention" / "ffn" ablations of Table 4: one block per layer, all of them holding
    the same attention (or feed-forward) sublayer and its LayerNorm."""

    def __init__(self, cfg: AlbertConfig):
        super().__init__()
        self.blocks = Layers(block(cfg) for _ in range(cfg.num_layers))
        shared = ("attn", "attn_norm") if cfg.sharing == "attention" else ("ffn", "ffn_norm")
        for b in self.blocks[1:]:
            for name in shared:
                setattr(b, name, getattr(self.blocks[0], name))

    def forward(self, x: Tensor, mask: Tensor | Unpadded | None) -> Tensor:
        """x: (B, S, H), mask: (B, 1, 1, S) or None -> (B, S, H)."""
        return self.blocks(x, mask)


class Albert(EncoderWithHeads):
    """Factorized embeddings (V -> E, LayerNorm, E -> H) and the shared layers, pooler, MLM
    head (H -> E, tied to the E-sized token embedding) and the sentence head `sop` (SOP by
    default, NSP with `mlm+nsp`)."""

    def __init__(self, config: AlbertConfig):
        partial = config.sharing in ("attention", "ffn")
        layers = PartlySharedLayers(config) if partial else GroupedLayers(config)
        super().__init__(config, Encoder(config, layers=layers), sentence="sop")


# Only GroupedLayers has a transformers layout; PartlySharedLayers' `blocks` have no HF name,
# so `save_hf` refuses sharing "attention" / "ffn" with a UserError.
_G = "albert.encoder.albert_layer_groups.{i}.albert_layers.0."
HF_KEYS = {
    "encoder.embeddings.tokens.weight": "albert.embeddings.word_embeddings.weight",
    "encoder.embeddings.positions.weight": "albert.embeddings.position_embeddings.weight",
    "encoder.embeddings.segments.weight": "albert.embeddings.token_type_embeddings.weight",
    "encoder.embeddings.norm.{p}": "albert.embeddings.LayerNorm.{p}",
    "encoder.embeddings.project.{p}": "albert.encoder.embedding_hidden_mapping_in.{p}",
    "encoder.layers.groups.{i}.attn.qkv.{p}": tuple(
        _G + f"attention.{n}.{{p}}" for n in ("query", "key", "value")
    ),
    "encoder.layers.groups.{i}.attn.out.{p}": _G + "attention.dense.{p}",
    "encoder.layers.groups.{i}.attn_norm.{p}": _G + "attention.LayerNorm.{p}",
    "encoder.layers.groups.{i}.ffn.up.{p}": _G + "ffn.{p}",
    "encoder.layers.groups.{i}.ffn.down.{p}": _G + "ffn_output.{p}",
    "encoder.layers.groups.{i}.ffn_norm.{p}": _G + "full_layer_layer_norm.{p}",
    "pooler.dense.{p}": "albert.pooler.{p}",
    "mlm.dense.{p}": "predictions.dense.{p}",
    "mlm.norm.{p}": "predictions.LayerNorm.{p}",
    "mlm.bias": "predictions.bias",
    "sop.{p}": "sop_classifier.classifier.{p}",
}

FAMILY = register(Family(
    name="albert", config=AlbertConfig, model=Albert, presets=PRESETS,
    default_objective="mlm+sop", tokenizer="unigram",
    hf=encoder_spec(
        "albert", "AlbertForPreTraining", "albert.", HF_KEYS,
        {**ENCODER_HF_CONFIG, "embedding_size": "embedding_size",
         "num_groups": "num_hidden_groups"},
        mlm="predictions.", fixed={"inner_group_num": 1}),
))
