"""RoBERTa (Liu et al. 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach"): BERT's
encoder, trained longer on more data with dynamic masking, no NSP, FULL-SENTENCES inputs and a
byte-level BPE vocabulary. What differs in the model itself: one segment type, LayerNorm eps
1e-5, and learned positions that start past the padding index (as the released fairseq
checkpoints number them), so the position table has 2 more rows (514 for 512 tokens).

`sentence_head` adds BERT's two-way [CLS] classifier for the paper's SEGMENT-PAIR+NSP ablation
(section 4.2, Table 2); `mlm+nsp` / `mlm+sop` turn it on, with a second segment type."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from plmkit.errors import UserError
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


def _size(layers: int, hidden: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": hidden // 64,
            "intermediate_size": 4 * hidden}


# RoBERTa section 5 / Table 9 (BASE and LARGE); tiny is for tests and demos, small (the shape
# of BERT-Small, Turc et al. 2019) for the benchmark's middle size.
PRESETS = {
    "roberta-tiny": _size(2, 128),
    "roberta-small": _size(4, 512),
    "roberta-base": _size(12, 768),  # 125M
    "roberta-large": _size(24, 1024),  # 355M
}


def position_ids(input_ids: Tensor, pad_token_id: int) -> Tensor:
    """fairseq / transformers numbering: pad + 1, pad + 2, ... over the real tokens, pad on
    padding. input_ids: (B, S) -> (B, S) int64."""
    real = (input_ids != pad_token_id).long()  # (B, S)
    return real.cumsum(1) * real + pad_token_id  # (B, S)


class Roberta(nn.Module):
    """Encoder + pooler + the MLM head (lm_head: dense -> GELU -> LayerNorm -> tied decoder),
    and the sentence head when the config asks for it."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.encoder = Encoder(config)
        self.pooler = Pooler(h)
        self.mlm = MaskedLMHead(h, h, config.vocab_size, config.activation, config.layer_norm_eps)
        self.nsp = SentenceHead(h) if config.sentence_head else None
        init_weights(self, config.initializer_range)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids: (B, S) -> last_hidden_state (B, S, H), pooler_output (B, H)."""
        longest = self.config.max_positions - self.config.pad_token_id - 1
        if input_ids.shape[1] > longest:
            raise UserError(f"sequence length {input_ids.shape[1]} exceeds the model's {longest} "
                            "positions; truncate the input or use a shorter --seq-len")
        positions = position_ids(input_ids, self.config.pad_token_id)  # (B, S)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, positions)
        return EncoderOutput(hidden, self.pooler(hidden))

    def mlm_logits(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """hidden: (B, S, H), positions: (B, P) -> (B, P, V); all positions when None."""
        return self.mlm(hidden, self.encoder.embeddings.tokens.weight, positions)

    def sentence_logits(self, pooled: Tensor) -> Tensor:
        """pooled: (B, H) -> (B, 2); class 0 = B follows A, 1 = B is random (or swapped)."""
        if self.nsp is None:
            raise UserError("this RoBERTa model has no sentence head (config sentence_head)")
        return self.nsp(pooled)


HF_KEYS = {
    **encoder_hf_keys("encoder.", "roberta."),
    "pooler.dense.{p}": "roberta.pooler.dense.{p}",
    "mlm.dense.{p}": "lm_head.dense.{p}",
    "mlm.norm.{p}": "lm_head.layer_norm.{p}",
    "mlm.bias": "lm_head.bias",
}

FAMILY = register(Family(
    name="roberta",
    config=RobertaConfig,
    model=Roberta,
    presets=PRESETS,
    default_objective="mlm",
    tokenizer="bpe",
    data_defaults={"masking": "dynamic", "input_format": "full-sentences"},
    optim_defaults={"betas": (0.9, 0.98), "eps": 1e-6},  # RoBERTa section 3.1
    hf=HFSpec(
        model_type="roberta",
        architecture="RobertaForMaskedLM",
        base_prefix="roberta.",
        keys=HF_KEYS,
        config=ENCODER_HF_CONFIG,
        aliases={"lm_head.bias": "lm_head.decoder.bias"},
        ignored=("lm_head.decoder.weight", "lm_head.decoder.bias",
                 "roberta.embeddings.position_ids", "roberta.embeddings.token_type_ids"),
        value_maps={"activation": {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}},
        fixed={"position_embedding_type": "absolute"},
        unexported=("nsp.",),
    ),
))
