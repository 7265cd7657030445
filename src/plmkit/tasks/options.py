"""Options shared by every fine-tuning task (`plmkit finetune`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FinetuneOptions:
    """Defaults from BERT's fine-tuning recipe (Devlin et al. 2019, section A.3): batch 32,
    lr among {5e-5, 3e-5, 2e-5}, 2-4 epochs, 10% warmup, weight decay 0.01."""

    lr: float = 3e-5
    batch_size: int = 32
    epochs: float = 3.0
    max_seq_len: int | None = None  # None: the task's default_max_seq_len (128; SQuAD 384)
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 0  # steps between evaluations; 0 = once per epoch
    patience: int = 3  # evaluations without improvement before stopping early; 0 = never
    bf16: bool = False
    progress: bool = True
    tensorboard: bool = False  # event files in OUT/tensorboard
