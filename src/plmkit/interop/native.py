"""plmkit's own directories read back into models: a checkpoint (`plmkit.json` + weights, as
`plmkit.training.modeldir` writes it) becomes its family's model, wrapped in its task's head
when fine-tuned; `load` takes that or a transformers directory. A fine-tuned OUT also holds its
tokenizer (`tokenizer/`) and options (`finetune.json`): `load_finetuned` reads all of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import nn

from plmkit.errors import UserError
from plmkit.interop import preflight
from plmkit.interop.hf import load_hf
from plmkit.models import get_family
from plmkit.tasks import build_task_model
from plmkit.tasks.base import Task, resolve_options, task_of_model
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer
from plmkit.training.modeldir import NATIVE_CONFIG, WEIGHTS, is_native, read_description

TOKENIZER_DIR = "tokenizer"
FINETUNE_CONFIG = "finetune.json"  # the FinetuneOptions of the run, reused by evaluate/predict


def load(path: str | os.PathLike[str]) -> nn.Module:
    """A model from a plmkit checkpoint directory or a Hugging Face model directory
    (`config.json` + `model.safetensors` or `pytorch_model.bin`; family from `model_type`)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such model directory")
    if is_native(path):
        return load_model(path)
    if (path / "config.json").is_file():
        return load_hf(path)
    raise UserError(f"{path}: not a model directory (no plmkit.json or config.json)")


def load_model(directory: str | os.PathLike[str]) -> nn.Module:
    """A model from a native plmkit directory (see `plmkit.training.modeldir`); its config is
    checked against the weights' header before the model is allocated (`preflight`)."""
    directory = Path(directory)
    path = directory / NATIVE_CONFIG
    family, config, task = read_native_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{directory}: no {WEIGHTS} (the run has not saved a model yet?)")
    shapes = preflight.weight_shapes(weights)

    def build(config: Any) -> nn.Module:
        model = family.model(config)
        return model if task is None else build_task_model(model, task)

    def check(model: nn.Module) -> None:
        preflight.check_state_shapes(model, shapes, weights, NATIVE_CONFIG)

    preflight.checked_on_meta(config, build, check, preflight.layers_held(shapes), str(path))
    model = build(config)
    try:
        safetensors.torch.load_model(model, str(weights))
    except (RuntimeError, OSError, safetensors.SafetensorError) as e:
        raise UserError(f"{weights}: cannot load weights ({str(e).splitlines()[0]})") from None
    return model


def read_native_config(directory: str | os.PathLike[str]) -> tuple[Any, Any, dict | None]:
    """The family, the config (each field of its type and size) and the task dict (None for a
    pretrained model) of a native plmkit directory; a UserError naming `plmkit.json` else."""
    path = Path(directory) / NATIVE_CONFIG
    meta = read_description(directory)
    family = get_family(_entry(meta, "family", str, path))
    values = _entry(meta, "config", dict, path)
    task = meta.get("task")
    if task is not None and not isinstance(task, dict):
        raise UserError(f"{path}: \"task\" is not an object")
    preflight.check_fields(family.config, values, str(path))
    try:
        return family, family.config(**values), task
    except TypeError as e:
        raise UserError(f"{path}: bad model config ({e})") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _entry(meta: dict, key: str, kind: type, path: Path) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind):
        what = "an object" if kind is dict else "a string"
        raise UserError(f"{path}: {key!r} is missing or not {what}")
    return value


def tokenizer_dir(model_dir: Path) -> Path:
    """Where a model's tokenizer is: `DIR/tokenizer/` (plmkit runs), else DIR itself
    (transformers directories)."""
    nested = Path(model_dir) / TOKENIZER_DIR
    return nested if nested.is_dir() else Path(model_dir)


def saved_options(model_dir: Path) -> FinetuneOptions:
    """The options a fine-tuned model was trained with (defaults when unknown)."""
    path = Path(model_dir) / FINETUNE_CONFIG
    if not path.is_file():
        return FinetuneOptions()
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a JSON file of fine-tuning options ({e})") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a JSON object of fine-tuning options")
    known = {f.name for f in dataclasses.fields(FinetuneOptions)}
    options = {k: v for k, v in saved.items() if k in known}
    preflight.check_fields(FinetuneOptions, options, str(path))
    return FinetuneOptions(**options)


@dataclass
class Finetuned:
    """A fine-tuned model directory loaded for evaluation or prediction."""

    model: nn.Module
    task: Task
    tokenizer: Tokenizer
    options: FinetuneOptions


def load_finetuned(model_dir: Path, batch_size: int | None = None) -> Finetuned:
    """The model in `model_dir` (a fine-tuning OUT), its task, tokenizer and options."""
    model = load(model_dir)
    task = task_of_model(model, model_dir)
    options = resolve_options(task, saved_options(model_dir))
    if batch_size is not None:
        options = dataclasses.replace(options, batch_size=batch_size)
    return Finetuned(model, task, Tokenizer.load(tokenizer_dir(model_dir)), options)
