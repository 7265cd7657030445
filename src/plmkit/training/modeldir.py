"""A model directory: `plmkit.json`, what the model is as plain JSON (family, class name,
config, task), and `model.safetensors`, its state dict; written atomically.

This layer knows no model and no task: it reads the description from the attributes every
plmkit model has (`.config`, a dataclass with a `family` field; on a fine-tuned model `.task`,
a JSON-able dict) and writes tensors by name. Turning a description back into a model is
`plmkit.interop.native.load_model`'s job.
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
from torch import nn

from plmkit.errors import UserError
from plmkit.outputs import STAGING, fix_modes, no_space_is_user_error

NATIVE_CONFIG = "plmkit.json"
WEIGHTS = "model.safetensors"


def describe(model: nn.Module) -> dict[str, Any]:
    """The `plmkit.json` of `model`: family, class name, config (a plain dict), task if any."""
    config = model.config  # type: ignore[attr-defined]
    meta = {"family": config.family, "kind": type(model).__name__,
            "config": dataclasses.asdict(config)}
    if getattr(model, "task", None) is not None:
        meta["task"] = model.task  # type: ignore[attr-defined]
    return meta


def save_model(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
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


def _save_into(model: nn.Module, directory: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=STAGING, dir=directory))
    try:
        (tmp / NATIVE_CONFIG).write_text(json.dumps(describe(model), indent=2) + "\n")
        safetensors.torch.save_model(model, str(tmp / WEIGHTS))
        fix_modes(tmp)
        fsync_files(tmp)
        _replace_files(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_files(src: Path, dst: Path) -> None:
    """Move every file of `src` into `dst`, each by an atomic rename, `plmkit.json` last,
    keeping other files; then fsync `dst` so that the renames are durable."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir(), key=lambda p: p.name == NATIVE_CONFIG):
        os.replace(path, dst / path.name)
    fsync_dir(dst)


def fsync_files(directory: Path) -> None:
    """fsync every file directly in `directory`."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """fsync `directory` itself, so that renames into it are durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_native(directory: str | os.PathLike[str]) -> bool:
    """Whether `directory` holds a plmkit checkpoint (rather than a transformers one)."""
    return (Path(directory) / NATIVE_CONFIG).is_file()


def read_description(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The `plmkit.json` of `directory` as a dict; a UserError naming the file and line else."""
    path = Path(directory) / NATIVE_CONFIG
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a JSON object")
    return meta
