"""BERT (Devlin et al. 2019): a post-LN bidirectional encoder pretrained with masked-LM and
next-sentence prediction. Pooler on [CLS], MLM head tied to the token embedding, and the
two-way sentence head (NSP by default; `mlm+sop` trains it on sentence order)."""

from __future__ import annotations

from dataclasses import dataclass

from plmkit.models.registry import Family, encoder_spec, register, size
from plmkit.nn.config import EncoderConfig
from plmkit.nn.encoder import ENCODER_HF_CONFIG, Encoder, EncoderWithHeads, pretraining_hf_keys


@dataclass
class BertConfig(EncoderConfig):
    """BERT-base by default: L12 H768 A12 FF3072, GELU, LayerNorm eps 1e-12, N(0, 0.02)."""

    family: str = "bert"


# The paper's base/large and the compact models of Turc et al. 2019 ("Well-Read Students").
PRESETS = {
    "bert-tiny": size(2, 128),
    "bert-mini": size(4, 256),
    "bert-small": size(4, 512),
    "bert-medium": size(8, 512),
    "bert-base": size(12, 768),  # 110M
    "bert-large": size(24, 1024),  # 340M
}


class Bert(EncoderWithHeads):
    """Encoder + pooler + MLM and sentence heads (`nn.encoder.EncoderWithHeads`); the sentence
    head is NSP's, `nsp` in the checkpoint."""

    def __init__(self, config: BertConfig):
        super().__init__(config, Encoder(config), sentence="nsp")


FAMILY = register(Family(
    name="bert", config=BertConfig, model=Bert, presets=PRESETS,
    default_objective="mlm+nsp",
    hf=encoder_spec("bert", "BertForPreTraining", "bert.", pretraining_hf_keys("bert."),
                    ENCODER_HF_CONFIG, mlm="cls.predictions."),
))
