"""BERT (Devlin et al. 2019): a post-LN bidirectional encoder pretrained with masked-LM and
next-sentence prediction. Pooler on [CLS], MLM head tied to the token embedding, and the
two-way sentence head (NSP by default; `mlm+sop` trains it on sentence order)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from plmkit.models.registry import Family, HFSpec, register
from plmkit.nn.encoder import (
    ENCODER_HF_CONFIG,
    Encoder,
    EncoderConfig,
    EncoderOutput,
    Pooler,
    encoder_hf_keys,
    init_weights,
)
from plmkit.nn.heads import MaskedLMHead, SentenceHead


@dataclass
class BertConfig(EncoderConfig):
    """BERT-base by default: L12 H768 A12 FF3072, GELU, LayerNorm eps 1e-12, N(0, 0.02)."""

    family: str = "bert"


def _size(layers: int, hidden: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": hidden // 64,
            "intermediate_size": 4 * hidden}


# The paper's base/large and the compact models of Turc et al. 2019 ("Well-Read Students").
PRESETS = {
    "bert-tiny": _size(2, 128),
    "bert-mini": _size(4, 256),
    "bert-small": _size(4, 512),
    "bert-medium": _size(8, 512),
    "bert-base": _size(12, 768),  # 110M
    "bert-large": _size(24, 1024),  # 340M
}


class Bert(nn.Module):
    """Encoder + pooler + MLM and sentence heads; `forward` returns the encoder outputs and
    the objectives call `mlm_logits` / `sentence_logits` on them."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.encoder = Encoder(config)
        self.pooler = Pooler(h)
        e = config.embedding_size or h
        self.mlm = MaskedLMHead(h, e, config.vocab_size, config.activation, config.layer_norm_eps)
        self.nsp = SentenceHead(h)
        init_weights(self, config.initializer_range)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids: (B, S) -> last_hidden_state (B, S, H), pooler_output (B, H)."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return EncoderOutput(hidden, self.pooler(hidden))

    def mlm_logits(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """hidden: (B, S, H), positions: (B, P) -> (B, P, V); all positions when None."""
        return self.mlm(hidden, self.encoder.embeddings.tokens.weight, positions)

    def sentence_logits(self, pooled: Tensor) -> Tensor:
        """pooled: (B, H) -> (B, 2); class 0 = B follows A (in order, real), 1 = random
        (swapped, fake)."""
        return self.nsp(pooled)


def pretraining_hf_keys(base: str) -> dict[str, str]:
    """plmkit -> transformers keys of a model laid out as BertForPreTraining: the encoder and
    pooler under `base`, the MLM and sentence heads under `cls.`."""
    return {
        **encoder_hf_keys("encoder.", base),
        "pooler.dense.{p}": base + "pooler.dense.{p}",
        "mlm.dense.{p}": "cls.predictions.transform.dense.{p}",
        "mlm.norm.{p}": "cls.predictions.transform.LayerNorm.{p}",
        "mlm.bias": "cls.predictions.bias",
        "nsp.{p}": "cls.seq_relationship.{p}",
    }


HF_KEYS = pretraining_hf_keys("bert.")

FAMILY = register(Family(
    name="bert",
    config=BertConfig,
    model=Bert,
    presets=PRESETS,
    default_objective="mlm+nsp",
    hf=HFSpec(
        model_type="bert",
        architecture="BertForPreTraining",
        base_prefix="bert.",
        keys=HF_KEYS,
        config=ENCODER_HF_CONFIG,
        aliases={"cls.predictions.bias": "cls.predictions.decoder.bias"},
        ignored=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                 "bert.embeddings.position_ids"),
        value_maps={"activation": {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}},
        fixed={"position_embedding_type": "absolute"},
    ),
))
