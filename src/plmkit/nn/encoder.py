"""The BERT-style bidirectional encoder that BERT, RoBERTa, ALBERT, ELECTRA and ERNIE share,
and the pretraining model around it (pooler, masked-LM and sentence heads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.block import EncoderBlock
from plmkit.nn.config import EncoderConfig
from plmkit.nn.embeddings import Embeddings
from plmkit.nn.heads import MaskedLMHead, SentenceHead
from plmkit.nn.induced import InducedAttention
from plmkit.nn.masks import Unpadded, over_real_tokens


@dataclass
class EncoderOutput:
    """What every plmkit encoder returns; `pooler_output` is None for models without one."""

    last_hidden_state: Tensor  # (B, S, H)
    pooler_output: Tensor | None = None  # (B, H)


class Layers(nn.ModuleList):
    """Blocks applied one after the other."""

    def forward(self, x: Tensor, mask: Tensor | Unpadded | None) -> Tensor:
        """x: (B, S, H), mask: (B, 1, 1, S) or None -> (B, S, H); or (N, H) with `Unpadded`."""
        for layer in self:
            x = layer(x, mask)
        return x


class Encoder(nn.Module):
    """Embeddings, then the layers (`num_layers` encoder blocks unless a model brings its own
    stack, such as ALBERT's shared ones), then a final LayerNorm when pre-LN. A model with
    inputs of its own (RoBERTa's position numbering, ERNIE's task types) brings its
    `embeddings`; `forward` passes them the further keyword inputs."""

    def __init__(self, cfg: EncoderConfig, embeddings: nn.Module | None = None,
                 layers: nn.Module | None = None):
        super().__init__()
        self.embeddings = Embeddings(cfg) if embeddings is None else embeddings
        if layers is None:
            layers = Layers(block(cfg) for _ in range(cfg.num_layers))
        self.layers = layers
        self.final_norm = (
            nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else None
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, **inputs: Tensor | None) -> Tensor:
        """input_ids: (B, S), attention_mask: (B, S) 1/0 -> hidden (B, S, H)."""
        x = self.embeddings(input_ids, token_type_ids, **inputs)  # (B, S, H)
        return over_real_tokens(self._stack, x, attention_mask)  # (B, S, H)

    def _stack(self, x: Tensor, mask: Tensor | Unpadded | None) -> Tensor:
        x = self.layers(x, mask)
        return self.final_norm(x) if self.final_norm is not None else x


def block(cfg: EncoderConfig) -> EncoderBlock:
    """One encoder block shaped by `cfg`: full self-attention, or an ISAB for
    `attention="induced"` (`nn/induced.py`)."""
    return EncoderBlock(
        cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, act=cfg.activation,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
        eps=cfg.layer_norm_eps, norm=cfg.norm,
        attn=InducedAttention(cfg) if cfg.attention == "induced" else None,
    )


class Pooler(nn.Module):
    """Sentence vector: tanh(W h_[CLS] + b) (BERT section 3)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class EncoderWithHeads(nn.Module):
    """A BERT-layout pretraining model: `encoder`, the [CLS] `pooler`, the masked-LM head `mlm`
    tied to the token embedding and the two-way sentence head, held under the family's
    checkpoint name `sentence` ("nsp", "sop"; None: no sentence head). `forward` returns the
    encoder outputs; the objectives call `mlm_logits` / `sentence_logits` on them."""

    def __init__(self, config: EncoderConfig, encoder: nn.Module, sentence: str | None = "nsp"):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.encoder = encoder
        self.pooler = Pooler(h)
        self.mlm = MaskedLMHead(h, config.embedding_size or h, config.vocab_size,
                                config.activation, config.layer_norm_eps)
        self.sentence = sentence
        if sentence is not None:
            self.add_module(sentence, SentenceHead(h))
        init_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, **inputs: Tensor | None) -> EncoderOutput:
        """input_ids: (B, S) -> last_hidden_state (B, S, H), pooler_output (B, H); `inputs`
        go to the embeddings (ERNIE's task_type_ids)."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, **inputs)
        return EncoderOutput(hidden, self.pooler(hidden))

    def mlm_logits(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """hidden: (B, S, H), positions: (B, P) -> (B, P, V); all positions when None."""
        return self.mlm(hidden, self.encoder.embeddings.tokens.weight, positions)

    def sentence_logits(self, pooled: Tensor) -> Tensor:
        """pooled: (B, H) -> (B, 2); class 0 = the segments as the text has them (B follows A,
        in order, a real dialogue), 1 = B random, swapped or fake."""
        if self.sentence is None:
            raise UserError(f"this {self.config.family} model has no sentence head (config "
                            "sentence_head)")
        return self.get_submodule(self.sentence)(pooled)


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
    at prefix `theirs` (BERT, RoBERTa, ELECTRA, ERNIE): a key map for `plmkit.interop`."""
    layer = theirs + "encoder.layer.{i}."
    return {
        ours + "embeddings.tokens.weight": theirs + "embeddings.word_embeddings.weight",
        ours + "embeddings.positions.weight": theirs + "embeddings.position_embeddings.weight",
        ours + "embeddings.segments.weight": theirs + "embeddings.token_type_embeddings.weight",
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


def pretraining_hf_keys(base: str) -> dict[str, str | tuple[str, ...]]:
    """The key map of an `EncoderWithHeads` laid out as transformers' BertForPreTraining
    (BERT, ERNIE): the encoder and pooler under `base`, the MLM and sentence heads under
    `cls.`."""
    return {
        **encoder_hf_keys("encoder.", base),
        "pooler.dense.{p}": base + "pooler.dense.{p}",
        "mlm.dense.{p}": "cls.predictions.transform.dense.{p}",
        "mlm.norm.{p}": "cls.predictions.transform.LayerNorm.{p}",
        "mlm.bias": "cls.predictions.bias",
        "nsp.{p}": "cls.seq_relationship.{p}",
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
