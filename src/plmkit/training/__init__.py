"""One objective-agnostic trainer, AdamW and schedules, checkpoints, metric plots."""

from __future__ import annotations

from plmkit.training.checkpoint import latest_checkpoint, list_checkpoints
from plmkit.training.optim import (
    Lamb,
    build_optimizer,
    constant_warmup,
    inverse_sqrt,
    linear_warmup_decay,
    param_groups,
)
from plmkit.training.plot import plot_metrics
from plmkit.training.trainer import Phase, TrainConfig, Trainer

__all__ = [
    "Lamb",
    "Phase",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "constant_warmup",
    "inverse_sqrt",
    "latest_checkpoint",
    "linear_warmup_decay",
    "list_checkpoints",
    "param_groups",
    "plot_metrics",
]
