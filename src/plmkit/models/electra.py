"""ELECTRA (Clark et al. 2020): a small masked-LM generator proposes replacements for masked
tokens and a discriminator learns to tell, for every token, whether it was replaced.

Both are BERT-style post-LN encoders with the embedding size E separate from the hidden size.
They share one embedding table set (tokens, positions, segments and their LayerNorm: the
paper's best setting, section 3.2); each projects E to its own hidden size. The generator's MLM
output is tied to the shared token embedding. `forward` is the discriminator, the encoder used
for fine-tuning; the `electra` objective (objectives/rtd.py) drives both.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.registry import Family, encoder_spec, register, size
from plmkit.nn.block import activation
from plmkit.nn.config import EncoderConfig
from plmkit.nn.encoder import (
    ENCODER_HF_CONFIG,
    Encoder,
    EncoderOutput,
    encoder_hf_keys,
    init_weights,
)
from plmkit.nn.heads import MaskedLMHead, gather_positions

SHARED_EMBEDDINGS = ("tokens", "positions", "segments", "norm")  # not the E -> H projection


@dataclass
class ElectraConfig(EncoderConfig):
    """The discriminator's shape (ELECTRA-Small by default: L12 H256 A4 FF1024 E128) and the
    generator's, as a multiplier of the discriminator's hidden size, heads and FFN size (Clark
    et al. 2020, Table 6: 1/4 small, 1/3 base, 1/4 large; same number of layers). The
    `generator_*` sizes, when given, override the multiplier (a checkpoint's exact shape).
    `mask_prob` is the pretraining masking rate (Table 6: 15%, 25% for large).
    `generator_baseline` adds the adversarial generator's learned baseline (appendix F; the
    `electra` objective turns it on with `generator_training="adversarial"`)."""

    family: str = "electra"
    hidden_size: int = 256
    num_heads: int = 4
    intermediate_size: int = 1024
    embedding_size: int | None = 128
    generator_size: float | None = None  # None: the paper's ratio for this hidden size
    generator_hidden_size: int | None = None
    generator_num_heads: int | None = None
    generator_intermediate_size: int | None = None
    mask_prob: float = 0.15
    generator_baseline: bool = False

    def check(self) -> None:
        super().check()
        if self.generator_size is None:
            self.generator_size = generator_ratio(self.hidden_size)
        if self.generator_size <= 0:
            raise UserError(f"generator_size must be positive, got {self.generator_size}")
        if not 0.0 < self.mask_prob < 1.0:
            raise UserError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        m = self.generator_size
        self.embedding_size = self.embedding_size or self.hidden_size
        self.generator_hidden_size = self.generator_hidden_size or round(self.hidden_size * m)
        self.generator_num_heads = self.generator_num_heads or max(1, round(self.num_heads * m))
        self.generator_intermediate_size = (self.generator_intermediate_size
                                            or round(self.intermediate_size * m))
        self.generator_config()  # validates the generator's shape

    def generator_config(self) -> EncoderConfig:
        """The generator encoder: the discriminator's config at the generator's sizes."""
        fields = {k: v for k, v in vars(self).items() if k in EncoderConfig.__dataclass_fields__}
        return EncoderConfig(**{
            **fields, "family": "electra-generator", "hidden_size": self.generator_hidden_size,
            "num_heads": self.generator_num_heads,
            "intermediate_size": self.generator_intermediate_size,
        })


# Clark et al. 2020, Table 6 (and the released configs); tiny is for tests and demos.
PRESETS = {
    "electra-tiny": size(2, 128, embedding_size=128, generator_size=0.5),
    "electra-small": size(12, 256, embedding_size=128, generator_size=1 / 4),  # 14M
    "electra-base": size(12, 768, embedding_size=768, generator_size=1 / 3),  # 110M
    "electra-large": size(24, 1024, embedding_size=1024, generator_size=1 / 4,
                          mask_prob=0.25),  # 335M
}


def generator_ratio(hidden_size: int) -> float:
    """The paper's generator size for a discriminator of `hidden_size` (Table 6: 1/3 at base's
    768, 1/4 at small's 256 and large's 1024, and elsewhere)."""
    return 1 / 3 if hidden_size == PRESETS["electra-base"]["hidden_size"] else 1 / 4


class DiscriminatorHead(nn.Module):
    """Per-token "replaced?" logit: dense H -> H, activation, dense H -> 1."""

    def __init__(self, hidden: int, act: str = "gelu"):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.act = activation(act)
        self.out = nn.Linear(hidden, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.out(self.act(self.dense(hidden))).squeeze(-1)  # (B, S)


class Electra(nn.Module):
    """Generator + discriminator with shared embeddings; `forward` is the discriminator."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        gen = config.generator_config()
        self.discriminator = Encoder(config)
        self.generator = Encoder(gen)
        for name in SHARED_EMBEDDINGS:  # the same modules, so the same Parameters
            setattr(self.generator.embeddings, name, getattr(self.discriminator.embeddings, name))
        self.rtd = DiscriminatorHead(config.hidden_size, config.activation)
        # ElectraGeneratorPredictions: dense H_g -> E, gelu, LayerNorm, tied decoder + bias
        self.mlm = MaskedLMHead(gen.hidden_size, config.embedding_size, config.vocab_size,
                                "gelu", config.layer_norm_eps)
        # b = -log sigmoid(w^T h_G) (Clark et al. 2020, appendix F): no bias
        self.baseline = (nn.Linear(gen.hidden_size, 1, bias=False) if config.generator_baseline
                         else None)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> EncoderOutput:
        """input_ids: (B, S) -> the discriminator's last_hidden_state (B, S, H)."""
        return EncoderOutput(self.discriminator(input_ids, attention_mask, token_type_ids))

    def generator_hidden(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                         token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids: (B, S) -> the generator's hidden states (B, S, H_g)."""
        return self.generator(input_ids, attention_mask, token_type_ids)

    def mlm_logits(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """Generator hidden (B, S, H_g), positions (B, P) -> (B, P, V); all when None."""
        return self.mlm(hidden, self.discriminator.embeddings.tokens.weight, positions)

    def baseline_logits(self, hidden: Tensor, positions: Tensor) -> Tensor:
        """Generator hidden (B, S, H_g), positions (B, P) -> (B, P) logits u of the adversarial
        generator's learned baseline b = -log sigmoid(u) (appendix F)."""
        if self.baseline is None:
            raise UserError("this ELECTRA model has no generator baseline (generator_baseline)")
        return self.baseline(gather_positions(hidden, positions)).squeeze(-1)

    def rtd_logits(self, hidden: Tensor) -> Tensor:
        """Discriminator hidden (B, S, H) -> (B, S) logits of "this token was replaced"."""
        return self.rtd(hidden)

    def init_discriminator_from_generator(self) -> None:
        """Two-stage training (Clark et al. 2020, section 3.2): after the generator alone has
        been trained, start the discriminator from its weights. Needs equal sizes."""
        cfg, gen = self.config, self.config.generator_config()
        shape = ("hidden_size", "num_heads", "intermediate_size")
        if any(getattr(gen, k) != getattr(cfg, k) for k in shape):
            raise UserError("two-stage training needs generator_size 1.0 (the discriminator "
                            "starts from the generator's weights)")
        self.discriminator.load_state_dict(self.generator.state_dict())


# The config fields both parts write; each adds its own sizes.
_SHARED_CONFIG = {k: v for k, v in ENCODER_HF_CONFIG.items()
                  if k not in ("hidden_size", "num_heads", "intermediate_size")}
_SHARED_CONFIG["embedding_size"] = "embedding_size"

# The generator as transformers' ElectraForMaskedLM, in the `generator/` subdirectory.
GENERATOR_HF = encoder_spec(
    "electra", "ElectraForMaskedLM", "electra.",
    {
        **encoder_hf_keys("generator.", "electra."),
        "mlm.dense.{p}": "generator_predictions.dense.{p}",
        "mlm.norm.{p}": "generator_predictions.LayerNorm.{p}",
        "mlm.bias": "generator_lm_head.bias",
    },
    {**_SHARED_CONFIG, "generator_hidden_size": "hidden_size",
     "generator_num_heads": "num_attention_heads",
     "generator_intermediate_size": "intermediate_size"},
    ignored=("generator_lm_head.weight",),
)

FAMILY = register(Family(
    name="electra", config=ElectraConfig, model=Electra, presets=PRESETS,
    default_objective="electra",
    hf=encoder_spec(
        "electra", "ElectraForPreTraining", "electra.",
        {
            **encoder_hf_keys("discriminator.", "electra."),
            "rtd.dense.{p}": "discriminator_predictions.dense.{p}",
            "rtd.out.{p}": "discriminator_predictions.dense_prediction.{p}",
        },
        {**_SHARED_CONFIG, "hidden_size": "hidden_size",
         "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size"},
        parts={"generator": GENERATOR_HF}, unexported=("baseline.",)),
))
