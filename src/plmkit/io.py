"""The native plmkit checkpoint directory: `plmkit.json` (family + config) and `model.safetensors`.

Any plmkit model has a `.config` dataclass with a `family` field; the family's model file
registers how to build the model from that config (see `plmkit.models.registry`). A fine-tuned
model (`plmkit.tasks`) also has a `.task` dict whose "name" picks the head that wraps the
backbone; it is saved under "task" and rebuilt by `plmkit.tasks.build_task_model`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from plmkit.errors import UserError
from plmkit.outputs import STAGING, fix_modes, no_space_is_user_error

NATIVE_CONFIG = "plmkit.json"
WEIGHTS = "model.safetensors"


def save_model(model: torch.nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write `model` to `directory` atomically (temporary directory, fsync, rename).

    Each file is renamed into place whole, the weights before `plmkit.json`, so an interrupted
    save leaves the previous model or the new one, never part of a file (the config of a run
    does not change between its saves). The temporary folder is a hidden one inside
    `directory` (removed by the next `plmkit.outputs.clean_leftovers`), never beside it.
    """
    directory = Path(directory)
    if not directory.exists():
        directory.mkdir(parents=True)
        fix_modes(directory)
    with no_space_is_user_error(directory, "the model"):
        _save_into(model, directory)
    return directory


def _save_into(model: torch.nn.Module, directory: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=STAGING, dir=directory))
    try:
        config = model.config  # type: ignore[attr-defined]
        meta = {"family": config.family, "kind": type(model).__name__,
                "config": dataclasses.asdict(config)}
        if getattr(model, "task", None) is not None:
            meta["task"] = model.task  # type: ignore[attr-defined]
        (tmp / NATIVE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        safetensors.torch.save_model(model, str(tmp / WEIGHTS))
        fix_modes(tmp)
        _fsync_dir(tmp)
        _replace_files(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _replace_files(src: Path, dst: Path) -> None:
    """Move every file of `src` into `dst`, each by an atomic rename, `plmkit.json` last,
    keeping other files; then fsync `dst` so that the renames are durable."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir(), key=lambda p: p.name == NATIVE_CONFIG):
        os.replace(path, dst / path.name)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_model(directory: str | os.PathLike[str]) -> torch.nn.Module:
    """A model from a native plmkit directory (see `save_model`); its config is checked
    against the weights' header before the model is allocated (`plmkit.interop.preflight`)."""
    from plmkit.interop import preflight

    directory = Path(directory)
    path = directory / NATIVE_CONFIG
    family, config, task = read_native_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{directory}: no {WEIGHTS} (the run has not saved a model yet?)")
    shapes = preflight.weight_shapes(weights)

    def build(config: Any) -> torch.nn.Module:
        from plmkit.tasks import build_task_model

        model = family.model(config)
        return model if task is None else build_task_model(model, task)

    def check(model: torch.nn.Module) -> None:
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
    from plmkit.interop.preflight import check_fields
    from plmkit.models import get_family

    path = Path(directory) / NATIVE_CONFIG
    meta = _read_meta(path)
    family = get_family(_entry(meta, "family", str, path))
    values = _entry(meta, "config", dict, path)
    task = meta.get("task")
    if task is not None and not isinstance(task, dict):
        raise UserError(f"{path}: \"task\" is not an object")
    check_fields(family.config, values, str(path))
    try:
        return family, family.config(**values), task
    except TypeError as e:
        raise UserError(f"{path}: bad model config ({e})") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def is_native(directory: str | os.PathLike[str]) -> bool:
    """Whether `directory` holds a plmkit checkpoint (rather than a transformers one)."""
    return (Path(directory) / NATIVE_CONFIG).is_file()


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a JSON object")
    return meta


def _entry(meta: dict, key: str, kind: type, path: Path) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind):
        what = "an object" if kind is dict else "a string"
        raise UserError(f"{path}: {key!r} is missing or not {what}")
    return value
