"""Resumable checkpoints: `out_dir/checkpoints/step-000123/` and RNG state capture.

A checkpoint directory holds the model as `save_model` writes it (`plmkit.json` and
`model.safetensors`) and `trainer_state.pt`: optimizer, scheduler, step, RNG states and data
positions, only tensors and primitives, so that it loads with `torch.load(weights_only=True)`.
It is written in a temporary directory, fsynced and renamed into place: a `step-*` directory
that exists is complete.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from plmkit.io import WEIGHTS

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
_NAME = re.compile(r"step-(\d+)")

SaveModel = Callable[[nn.Module, Path], Any]


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints under `out_dir/checkpoints`, as (step, directory), oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and (path / TRAINER_STATE).is_file() and (path / WEIGHTS).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    save_model: SaveModel,
    keep_last: int | None = 3,
) -> Path:
    """Write `step-{step:06d}` atomically, then delete all but the newest `keep_last`."""
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(model, tmp)
        torch.save(state, tmp / TRAINER_STATE)
        _fsync_tree(tmp)
        if final.exists():  # an earlier run's checkpoint of the same step: move it aside
            final.rename(tmp.with_name(tmp.name + ".old"))
        tmp.rename(final)
        _fsync(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(root, keep_last)
    return final


def load_checkpoint(model: nn.Module, checkpoint: Path) -> dict[str, Any]:
    """Read the weights of `checkpoint` into `model` and return its trainer state."""
    safetensors.torch.load_model(model, checkpoint / WEIGHTS)
    return torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)


def _prune(root: Path, keep_last: int | None) -> None:
    """Remove leftovers of interrupted writes and checkpoints beyond the newest `keep_last`."""
    for path in root.iterdir():
        if path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)
    if keep_last is not None:
        for _, path in list_checkpoints(root.parent)[:-keep_last]:
            shutil.rmtree(path)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync(directory)


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (+ CUDA), as tensors and primitives."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states `rng_state()` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
