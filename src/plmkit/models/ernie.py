"""ERNIE 1.0 (Sun et al. 2019, "ERNIE: Enhanced Representation through kNowledge IntEgration"):
BERT's encoder over Chinese characters, pretrained with knowledge masking and a dialogue
language model.

- Knowledge masking in three stages, basic (characters), phrase and entity (section 3.2):
  units in `data/masking.py` (`unit_starts`, `mask_units`), units from the corpus text
  in `data/ernie.py`, the stages in `objectives/ernie.py`.
- Dialogue language model (section 3.3): query / response roles as the segment embedding,
  real or fake dialogue on the pooled [CLS]: `objectives/dlm.py`.
- Character tokenization (section 4.1): the `char` tokenizer kind (`tokenizers/pipeline.py`).
- The task-type embedding of the released checkpoints (`use_task_id`, transformers' Ernie):
  `TaskTypeEmbeddings` below, BERT's embeddings with one more table.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from plmkit.models.registry import Family, encoder_spec, register, size
from plmkit.nn.config import EncoderConfig
from plmkit.nn.embeddings import Embeddings, lookup
from plmkit.nn.encoder import ENCODER_HF_CONFIG, Encoder, EncoderWithHeads, pretraining_hf_keys


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


# ERNIE section 4.1: the BERT-base shape; tiny is for tests and demos.
PRESETS = {
    "ernie-tiny": size(2, 128),
    "ernie-small": size(4, 512),  # not in the paper: BERT-Small's shape
    "ernie-base": size(12, 768),  # 99.9M with 18k tokens (BERT-base's 110M has 30,522)
}


class TaskTypeEmbeddings(Embeddings):
    """BERT's embeddings and, with `use_task_id`, the task-type table, summed in before the
    LayerNorm (id 0 when `task_type_ids` is not given), as transformers' ErnieEmbeddings."""

    def __init__(self, cfg: ErnieConfig):
        super().__init__(cfg)
        self.task_types = (nn.Embedding(cfg.task_type_vocab_size, self.size) if cfg.use_task_id
                           else None)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                task_type_ids: Tensor | None = None) -> Tensor:
        """input_ids, token_type_ids (segments or dialogue roles), task_type_ids: (B, S) ->
        (B, S, H)."""
        tasks = None if self.task_types is None else lookup(self.task_types, task_type_ids)
        return super().forward(input_ids, token_type_ids, extra=tasks)


class Ernie(EncoderWithHeads):
    """BERT's encoder, pooler, MLM and two-way [CLS] heads (next sentence, or real / fake
    dialogue for the DLM), with the optional task-type embedding; `forward` takes
    `task_type_ids` besides BERT's inputs."""

    def __init__(self, config: ErnieConfig):
        super().__init__(config, Encoder(config, TaskTypeEmbeddings(config)), sentence="nsp")


FAMILY = register(Family(
    name="ernie", config=ErnieConfig, model=Ernie, presets=PRESETS,
    default_objective="ernie", tokenizer="char",
    hf=encoder_spec(
        "ernie", "ErnieForPreTraining", "ernie.",
        {**pretraining_hf_keys("ernie."),
         "encoder.embeddings.task_types.weight": "ernie.embeddings.task_type_embeddings.weight"},
        {**ENCODER_HF_CONFIG, "task_type_vocab_size": "task_type_vocab_size",
         "use_task_id": "use_task_id"},
        mlm="cls.predictions."),
))
