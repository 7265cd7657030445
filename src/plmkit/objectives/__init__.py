"""Pretraining objectives by name: `loss, metrics = objective(model, batch)`; each also makes
its own batches from a prepared corpus (`objective.batches(...)`).

The table names each objective's class as "module:Class" and imports it on demand, so that
`objectives.masking` can be imported by the data code without importing every objective.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from plmkit.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from plmkit.data.batches import Batches
    from plmkit.data.options import DataOptions
    from plmkit.data.shards import ShardedCorpus


class Objective(Protocol):
    """A pretraining task: its batches (masking policy included) and its loss.

    An objective may also have `stages`, a tuple of `DataOptions` overrides: the pipeline then
    splits the steps evenly into one phase per stage (ERNIE's knowledge-masking levels)."""

    name: str

    def batches(self, corpus: ShardedCorpus, vocab: Any, options: DataOptions, seq_len: int,
                seed: int) -> Batches: ...

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]: ...


OBJECTIVES: dict[str, str] = {
    "mlm": "plmkit.objectives.mlm:MaskedLM",
    "mlm+nsp": "plmkit.objectives.nsp:MaskedLMWithNSP",
    "mlm+sop": "plmkit.objectives.sop:MaskedLMWithSOP",
    "electra": "plmkit.objectives.rtd:ReplacedTokenDetection",
    "seq2seq": "plmkit.objectives.seq2seq:Seq2Seq",
    "plm": "plmkit.objectives.plm:PermutationLM",
    "clm": "plmkit.objectives.clm:CausalLM",
    "ernie": "plmkit.objectives.ernie:KnowledgeMasking",
    "ernie+dlm": "plmkit.objectives.ernie:KnowledgeMaskingWithDialogues",
    "dlm": "plmkit.objectives.dlm:DialogueLM",
}


def get_objective(name: str) -> Objective:
    """A fresh objective called `name` (`mlm`, `mlm+nsp`, ...)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
