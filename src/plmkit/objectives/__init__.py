"""Pretraining objectives by name: `loss, metrics = objective(model, batch)`."""

from __future__ import annotations

from plmkit.errors import UserError
from plmkit.objectives.mlm import MaskedLM
from plmkit.objectives.nsp import MaskedLMWithNSP

OBJECTIVES = {o.name: o for o in (MaskedLM, MaskedLMWithNSP)}


def get_objective(name: str):
    """A fresh objective called `name` (`mlm`, `mlm+nsp`, ...)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
