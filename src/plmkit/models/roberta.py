"""RoBERTa (Liu et al. 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach"): BERT's
encoder, trained longer on more data with dynamic masking, no NSP, FULL-SENTENCES inputs and a
byte-level BPE vocabulary. What differs in the model itself: one segment type, LayerNorm eps
1e-5, and learned positions that start past the padding index (as the released fairseq
checkpoints number them), so the position table has 2 more rows (514 for 512 tokens).

`sentence_head` adds BERT's two-way [CLS] classifier for the paper's SEGMENT-PAIR+NSP ablation
(section 4.2, Table 2); `mlm+nsp` / `mlm+sop` turn it on, with a second segment type."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from plmkit.errors import UserError
from plmkit.models.registry import Family, encoder_spec, register, size
from plmkit.nn.config import EncoderConfig
from plmkit.nn.embeddings import Embeddings
from plmkit.nn.encoder import ENCODER_HF_CONFIG, Encoder, EncoderWithHeads, encoder_hf_keys


@dataclass
class RobertaConfig(EncoderConfig):
    """RoBERTa-base by default: BERT-base's shape, vocabulary 50,265 (GPT-2 byte-level BPE),
    514 positions, one segment type, LayerNorm eps 1e-5, <pad> = 1 (fairseq's dictionary);
    no sentence head unless `sentence_head` (the NSP ablation)."""

    family: str = "roberta"
    vocab_size: int = 50265
    max_positions: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    sentence_head: bool = False


# RoBERTa section 5 / Table 9 (BASE and LARGE); tiny is for tests and demos, small (the shape
# of BERT-Small, Turc et al. 2019) for the benchmark's middle size.
PRESETS = {
    "roberta-tiny": size(2, 128),
    "roberta-small": size(4, 512),
    "roberta-base": size(12, 768),  # 125M
    "roberta-large": size(24, 1024),  # 355M
}


def position_ids(input_ids: Tensor, pad_token_id: int) -> Tensor:
    """fairseq / transformers numbering: pad + 1, pad + 2, ... over the real tokens, pad on
    padding. input_ids: (B, S) -> (B, S) int64."""
    real = (input_ids != pad_token_id).long()  # (B, S)
    return real.cumsum(1) * real + pad_token_id  # (B, S)


class RobertaEmbeddings(Embeddings):
    """BERT's embeddings with the positions numbered past the padding index (`position_ids`)."""

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids: (B, S) -> (B, S, H)."""
        pad = self.tokens.padding_idx
        assert pad is not None  # Embeddings sets it
        longest = self.positions.num_embeddings - pad - 1
        if input_ids.shape[1] > longest:
            raise UserError(f"sequence length {input_ids.shape[1]} exceeds the model's "
                            f"{longest} positions; truncate the input or use a shorter "
                            "--seq-len / --max-seq-len")
        return super().forward(input_ids, token_type_ids, position_ids(input_ids, pad))


class Roberta(EncoderWithHeads):
    """Encoder + pooler + the MLM head (lm_head: dense -> GELU -> LayerNorm -> tied decoder),
    and the sentence head `nsp` when the config asks for it."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config, Encoder(config, RobertaEmbeddings(config)),
                         sentence="nsp" if config.sentence_head else None)


FAMILY = register(Family(
    name="roberta", config=RobertaConfig, model=Roberta, presets=PRESETS,
    default_objective="mlm", tokenizer="bpe",
    data_defaults={"input_format": "full-sentences"},  # section 4.2; masking: data/masking.py
    optim_defaults={"betas": (0.9, 0.98), "eps": 1e-6},  # RoBERTa section 3.1
    hf=encoder_spec(
        "roberta", "RobertaForMaskedLM", "roberta.",
        {
            **encoder_hf_keys("encoder.", "roberta."),
            "pooler.dense.{p}": "roberta.pooler.dense.{p}",
            "mlm.dense.{p}": "lm_head.dense.{p}",
            "mlm.norm.{p}": "lm_head.layer_norm.{p}",
            "mlm.bias": "lm_head.bias",
        },
        ENCODER_HF_CONFIG, mlm="lm_head.", unexported=("nsp.",)),
))
