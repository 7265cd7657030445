"""Pretraining objectives by name: `loss, metrics = objective(model, batch)`; each also makes
its own batches from a prepared corpus (`objective.batches(...)`)."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from plmkit.data.batches import Batches
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.errors import UserError
from plmkit.objectives.mlm import MaskedLM
from plmkit.objectives.nsp import MaskedLMWithNSP


class Objective(Protocol):
    """A pretraining task: its batches (masking policy included) and its loss."""

    name: str

    def batches(self, corpus: ShardedCorpus, vocab: Any, options: DataOptions, seq_len: int,
                seed: int) -> Batches: ...

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]: ...


OBJECTIVES: dict[str, type[Objective]] = {o.name: o for o in (MaskedLM, MaskedLMWithNSP)}


def get_objective(name: str) -> Objective:
    """A fresh objective called `name` (`mlm`, `mlm+nsp`, ...)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
