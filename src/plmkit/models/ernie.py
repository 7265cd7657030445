"""ERNIE 1.0 (Sun et al. 2019, "ERNIE: Enhanced Representation through kNowledge IntEgration"):
BERT's encoder over Chinese characters, pretrained with knowledge masking and a dialogue
language model.

- Knowledge masking in three stages, basic (characters), phrase and entity (section 3.2):
  units in `objectives/masking.py` (`unit_starts`, `mask_units`), units from the corpus text
  in `data/ernie.py`, the stages in `objectives/ernie.py`.
- Dialogue language model (section 3.3): query / response roles as the segment embedding,
  real or fake dialogue on the pooled [CLS]: `objectives/dlm.py`.
- Character tokenization (section 4.1): the `char` tokenizer kind (`tokenizers/pipeline.py`).
- The task-type embedding of the released checkpoints (`use_task_id`, transformers' Ernie):
  the shared encoder's optional extra embedding table (`EncoderConfig.task_type_vocab_size`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

from plmkit.models.bert import Bert, pretraining_hf_keys
from plmkit.models.registry import Family, HFSpec, register
from plmkit.nn.encoder import ENCODER_HF_CONFIG, EncoderConfig, EncoderOutput


@dataclass
class ErnieConfig(EncoderConfig):
    """ERNIE 1.0 base by default, as its released checkpoint: BERT-base's shape, 18,000
    characters and word pieces, ReLU, 513 positions, LayerNorm eps 1e-5; the task-type table
    (`task_type_vocab_size` rows) exists only with `use_task_id`, as in transformers."""

    family: str = "ernie"
    vocab_size: int = 18000
    max_positions: int = 513
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    task_type_vocab_size: int = 3
    use_task_id: bool = False


def _size(layers: int, hidden: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": hidden // 64,
            "intermediate_size": 4 * hidden}


# ERNIE section 4.1: the BERT-base shape; tiny is for tests and demos.
PRESETS = {
    "ernie-tiny": _size(2, 128),
    "ernie-small": _size(4, 512),  # not in the paper: BERT-Small's shape
    "ernie-base": _size(12, 768),  # 99.9M with 18k tokens (BERT-base's 110M has 30,522)
}


class Ernie(Bert):
    """BERT's encoder, pooler, MLM and two-way [CLS] heads (next sentence, or real / fake
    dialogue for the DLM), with the optional task-type embedding; `forward` returns the
    encoder outputs, the objectives call the heads."""

    def __init__(self, config: ErnieConfig):
        task_types = config.task_type_vocab_size if config.use_task_id else 0
        super().__init__(dataclasses.replace(config, task_type_vocab_size=task_types))
        self.config = config

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        task_type_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids: (B, S) -> last_hidden_state (B, S, H), pooler_output (B, H).
        `token_type_ids` are segments, or the dialogue roles of the DLM."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids,
                              task_type_ids=task_type_ids)
        return EncoderOutput(hidden, self.pooler(hidden))


HF_KEYS = pretraining_hf_keys("ernie.")

FAMILY = register(Family(
    name="ernie",
    config=ErnieConfig,
    model=Ernie,
    presets=PRESETS,
    default_objective="ernie",
    tokenizer="char",
    hf=HFSpec(
        model_type="ernie",
        architecture="ErnieForPreTraining",
        base_prefix="ernie.",
        keys=HF_KEYS,
        config={**ENCODER_HF_CONFIG, "task_type_vocab_size": "task_type_vocab_size",
                "use_task_id": "use_task_id"},
        aliases={"cls.predictions.bias": "cls.predictions.decoder.bias"},
        ignored=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                 "ernie.embeddings.position_ids", "ernie.embeddings.token_type_ids"),
        value_maps={"activation": {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}},
        fixed={"position_embedding_type": "absolute"},
    ),
))
