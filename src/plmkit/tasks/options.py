"""Options shared by every fine-tuning task (`plmkit finetune`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (largest hidden size, fine-tuning learning rate): smaller models take larger rates
LR_BY_SIZE = ((128, 1e-3), (256, 3e-4), (512, 1e-4))
BERT_LR = 3e-5  # BERT-base / large (Devlin et al. 2019, A.3: 5e-5, 3e-5 or 2e-5)


def default_lr(config: Any) -> float:
    """The fine-tuning learning rate for a model of `config`'s hidden size, the one rule the
    CLI, the demo and the Python API share. BERT-base and larger: 3e-5, in BERT's {5e-5, 3e-5,
    2e-5} (Devlin et al. 2019, A.3). The compact BERTs (Turc et al. 2019, "Well-Read Students
    Learn Better") were fine-tuned with rates up to 3e-4, the smallest taking the largest:
    3e-4 up to H256, 1e-4 up to H512. At H128 and below (bert-tiny) 1e-3 is what learns within
    `plmkit demo`'s budget; at 3e-5 the README's run stays on the majority class."""
    hidden = config.hidden_size
    return next((lr for size, lr in LR_BY_SIZE if hidden <= size), BERT_LR)


@dataclass
class FinetuneOptions:
    """Defaults from BERT's fine-tuning recipe (Devlin et al. 2019, section A.3): batch 32,
    2-4 epochs, 10% warmup, weight decay 0.01; lr None: `default_lr` of the model's size."""

    lr: float | None = None
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
