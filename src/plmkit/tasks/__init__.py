"""Fine-tuning tasks. Each task module registers a head class in `TASK_HEADS` under its name:
`cls(backbone, **task)` rebuilds a saved fine-tuned model from its `plmkit.json` "task" dict."""

from __future__ import annotations

from typing import Any

from torch import nn

from plmkit.errors import UserError

TASK_HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str):
    """Class decorator: make a task model class loadable by `plmkit.load`."""
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        TASK_HEADS[name] = cls
        return cls
    return wrap


def build_task_model(backbone: nn.Module, task: dict[str, Any]) -> nn.Module:
    """The fine-tuned model described by `task` (its "name" and the head's arguments)."""
    _import_task_modules()
    name = task.get("name")
    if name not in TASK_HEADS:
        raise UserError(f"unknown task {name!r} in a saved model; known: {sorted(TASK_HEADS)}")
    kwargs = {k: v for k, v in task.items() if k != "name"}
    return TASK_HEADS[name](backbone, **kwargs)


def _import_task_modules() -> None:
    """Import every task module so that each registers its head."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
