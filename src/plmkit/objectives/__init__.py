"""Pretraining objectives by name: `loss, metrics = objective(model, batch)`; each also makes
its own batches from a prepared corpus (`objective.batches(...)`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from plmkit.errors import UserError
from plmkit.objectives.clm import CausalLM
from plmkit.objectives.dlm import DialogueLM
from plmkit.objectives.ernie import KnowledgeMasking, KnowledgeMaskingWithDialogues
from plmkit.objectives.mlm import MaskedLM
from plmkit.objectives.nsp import MaskedLMWithNSP
from plmkit.objectives.plm import PermutationLM
from plmkit.objectives.rtd import ReplacedTokenDetection
from plmkit.objectives.seq2seq import Seq2Seq
from plmkit.objectives.sop import MaskedLMWithSOP

if TYPE_CHECKING:
    from torch import Tensor

    from plmkit.data.batches import Batches
    from plmkit.data.options import DataOptions
    from plmkit.data.parallel import Pair
    from plmkit.data.shards import ShardedCorpus


class Objective(Protocol):
    """A pretraining task: its batches (masking policy included) and its loss.

    An objective may also have `stages`, a tuple of `DataOptions` overrides: the pipeline then
    splits the steps evenly into one phase per stage (ERNIE's knowledge-masking levels);
    `model_needs`, config fields its batches need of the model (a sentence head), and
    `model_fields(seq_len)`, those that follow the run's longest sequence (XLNet's cached
    half); `corpus = "pairs"` when its corpus holds sentence pairs (`seq2seq`, read with
    `plmkit.data.parallel.read_pairs`) rather than documents tokenized into shards."""

    name: str

    def batches(self, corpus: ShardedCorpus | Sequence[Pair], vocab: Any, options: DataOptions,
                seq_len: int, seed: int) -> Batches: ...

    def __call__(self, model: Any, batch: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and metrics of `batch`; `objectives/protocols.py` names what each objective
        calls on its model."""
        ...


OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "mlm": MaskedLM,
    "mlm+nsp": MaskedLMWithNSP,
    "mlm+sop": MaskedLMWithSOP,
    "electra": ReplacedTokenDetection,
    "seq2seq": Seq2Seq,
    "plm": PermutationLM,
    "clm": CausalLM,
    "ernie": KnowledgeMasking,
    "ernie+dlm": KnowledgeMaskingWithDialogues,
    "dlm": DialogueLM,
}


def get_objective(name: str) -> Objective:
    """A fresh objective called `name` (`mlm`, `mlm+nsp`, ...)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
