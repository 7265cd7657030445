"""The BERT-style bidirectional encoder that BERT, RoBERTa, ALBERT, ELECTRA and ERNIE share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.block import EncoderBlock, Norm
from plmkit.nn.embeddings import Embeddings
from plmkit.nn.masks import Unpadded, over_real_tokens


@dataclass
class EncoderConfig:
    """Shape and regularisation of an encoder; each model file subclasses it with its
    `family` and paper defaults (here: BERT-base, Devlin et al. 2019, Table/section 3)."""

    family: str = "encoder"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    task_type_vocab_size: int = 0  # > 0: an extra input embedding table (ERNIE's task type)
    embedding_size: int | None = None
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    norm: Norm = "post"
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.norm not in ("post", "pre"):
            raise UserError(f"norm must be 'post' or 'pre', not {self.norm!r}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_positions"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class EncoderOutput:
    """What every plmkit encoder returns; `pooler_output` is None for models without one."""

    last_hidden_state: Tensor  # (B, S, H)
    pooler_output: Tensor | None = None  # (B, H)


class Encoder(nn.Module):
    """Embeddings, then `num_layers` encoder blocks (a final LayerNorm when pre-LN)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.embeddings = Embeddings(
            cfg.vocab_size, cfg.hidden_size, cfg.max_positions, cfg.type_vocab_size,
            embedding_size=cfg.embedding_size, pad_token_id=cfg.pad_token_id,
            eps=cfg.layer_norm_eps, dropout=cfg.dropout, task_types=cfg.task_type_vocab_size,
        )
        self.layers = nn.ModuleList(block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = (
            nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else None
        )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        task_type_ids: Tensor | None = None,
    ) -> Tensor:
        """input_ids: (B, S), position_ids: (B|1, S) or None for 0..S-1 -> hidden (B, S, H)."""
        x = self.embeddings(input_ids, token_type_ids, position_ids, task_type_ids)
        return over_real_tokens(self._layers, x, attention_mask)  # (B, S, H)

    def _layers(self, x: Tensor, mask: Tensor | Unpadded | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x) if self.final_norm is not None else x


def block(cfg: EncoderConfig) -> EncoderBlock:
    """One encoder block shaped by `cfg`."""
    return EncoderBlock(
        cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, act=cfg.activation,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
        eps=cfg.layer_norm_eps, norm=cfg.norm,
    )


class Pooler(nn.Module):
    """Sentence vector: tanh(W h_[CLS] + b) (BERT section 3)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncation-free N(0, std) for weights, zeros for biases, LayerNorm at identity."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                m.weight.data[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def encoder_hf_keys(ours: str, theirs: str) -> dict[str, str | tuple[str, ...]]:
    """The parameters of an `Encoder` at prefix `ours` onto the transformers BERT-layout encoder
    at prefix `theirs` (BERT, RoBERTa, ELECTRA): a key map for `plmkit.interop`."""
    layer = theirs + "encoder.layer.{i}."
    return {
        ours + "embeddings.tokens.weight": theirs + "embeddings.word_embeddings.weight",
        ours + "embeddings.positions.weight": theirs + "embeddings.position_embeddings.weight",
        ours + "embeddings.segments.weight": theirs + "embeddings.token_type_embeddings.weight",
        ours + "embeddings.task_types.weight": theirs + "embeddings.task_type_embeddings.weight",
        ours + "embeddings.norm.{p}": theirs + "embeddings.LayerNorm.{p}",
        ours + "embeddings.project.{p}": theirs + "embeddings_project.{p}",
        ours + "layers.{i}.attn.qkv.{p}": tuple(
            layer + f"attention.self.{n}.{{p}}" for n in ("query", "key", "value")
        ),
        ours + "layers.{i}.attn.out.{p}": layer + "attention.output.dense.{p}",
        ours + "layers.{i}.attn_norm.{p}": layer + "attention.output.LayerNorm.{p}",
        ours + "layers.{i}.ffn.up.{p}": layer + "intermediate.dense.{p}",
        ours + "layers.{i}.ffn.down.{p}": layer + "output.dense.{p}",
        ours + "layers.{i}.ffn_norm.{p}": layer + "output.LayerNorm.{p}",
    }


# `EncoderConfig` fields and their names in a transformers BERT-layout config.json.
ENCODER_HF_CONFIG = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
    "pad_token_id": "pad_token_id",
    "initializer_range": "initializer_range",
}
