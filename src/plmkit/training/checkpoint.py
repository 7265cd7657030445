"""Resumable checkpoints: `out_dir/checkpoints/step-000123/` and RNG state capture.

A checkpoint directory holds the model as `save_model` writes it (`plmkit.json` and
`model.safetensors`), `trainer_state.pt` (optimizer, scheduler, step, RNG states and data
positions, only tensors and primitives, so that it loads with `torch.load(weights_only=True)`)
and `manifest.json`: the size and sha256 of every other file. It is written in a temporary
directory, fsynced and renamed into place, so a `step-*` directory that exists is complete; the
manifest catches what happens to it later (a truncated or corrupted file): `load_latest` then
warns and falls back to the newest checkpoint that verifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from plmkit.errors import UserError
from plmkit.io import NATIVE_CONFIG, WEIGHTS
from plmkit.outputs import clean_leftovers, fix_modes, no_space_is_user_error

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
MANIFEST = "manifest.json"
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
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint directory (verified or not), or None."""
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
    with no_space_is_user_error(root, f"the checkpoint of step {step}"):
        _write_checkpoint(final, model, state, save_model)
    _prune(root, keep_last)
    return final


def _write_checkpoint(final: Path, model: nn.Module, state: dict[str, Any],
                      save_model: SaveModel) -> None:
    root = final.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(model, tmp)
        torch.save(state, tmp / TRAINER_STATE)
        manifest = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                    for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"files": manifest}, indent=2) + "\n")
        fix_modes(tmp)
        _fsync_tree(tmp)
        if final.exists():  # an earlier run's checkpoint of the same step: move it aside
            final.rename(tmp.with_name(tmp.name + ".old"))
        tmp.rename(final)
        _fsync(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify_checkpoint(checkpoint: Path) -> str | None:
    """What is wrong with `checkpoint` by its manifest (a missing, truncated or altered file),
    or None when every file matches."""
    try:
        files = json.loads((checkpoint / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no valid {MANIFEST} (an incomplete write?)"
    for name in (WEIGHTS, TRAINER_STATE):
        if name not in files:
            return f"{MANIFEST} lists no {name}"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} is corrupted (sha256 differs from the manifest)"
    return None


def load_latest(out_dir: str | os.PathLike[str], load: Callable[[Path], dict[str, Any]]
                ) -> tuple[Path, dict[str, Any]]:
    """`load(checkpoint)` (e.g. `partial(load_checkpoint, model)`) of the newest checkpoint
    that verifies; returns it and what `load` returned.

    Each one that does not verify is skipped with a warning naming the problem; none at all
    is a `UserError`.
    """
    found = list_checkpoints(out_dir)
    if not found:
        raise UserError(f"{Path(out_dir) / CHECKPOINTS}: no checkpoint to resume from")
    for _, path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            return path, load(path)
        warnings.warn(f"{path}: {problem}; falling back to an earlier checkpoint", stacklevel=2)
    raise UserError(f"{Path(out_dir) / CHECKPOINTS}: no intact checkpoint to resume from")


def load_checkpoint(model: nn.Module, checkpoint: Path) -> dict[str, Any]:
    """Read the weights of `checkpoint` into `model` and return its trainer state.

    The checkpoint's model config (`plmkit.json`) must be the one `model` was built with.
    """
    check_config(model, checkpoint)
    safetensors.torch.load_model(model, checkpoint / WEIGHTS)
    return torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)


def check_config(model: nn.Module, checkpoint: Path) -> None:
    """A `UserError` naming the family or the config fields in which the model saved in
    `checkpoint` differs from `model` (e.g. a vocabulary of another size)."""
    path = checkpoint / NATIVE_CONFIG
    config = getattr(model, "config", None)
    if config is None or not path.is_file():
        return
    saved = json.loads(path.read_text())
    ours = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, like the file
    if saved.get("family") != config.family:
        family = config.family
        raise UserError(f"{path}: the checkpoint holds a {saved.get('family')} model, this run "
                        f"a{'n' if family[0] in 'aeiou' else ''} {family} model (another "
                        "--model, or another --out?)")
    theirs = saved.get("config", {})
    diff = [f"{k} {theirs.get(k)!r} there, {v!r} here" for k, v in ours.items()
            if theirs.get(k) != v]
    if diff:
        raise UserError(f"{path}: the checkpoint's model differs from this run's: "
                        f"{'; '.join(diff)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def clean_temporaries(out_dir: str | os.PathLike[str]) -> None:
    """Remove what interrupted saves left in a run directory: hidden staging folders of the
    model and of checkpoints (a run killed while saving)."""
    out_dir = Path(out_dir)
    clean_leftovers(out_dir)
    if (out_dir / CHECKPOINTS).is_dir():
        _remove_hidden(out_dir / CHECKPOINTS)


def _remove_hidden(root: Path) -> None:
    for path in root.iterdir():
        if path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)


def _prune(root: Path, keep_last: int | None) -> None:
    """Remove leftovers of interrupted writes and checkpoints beyond the newest `keep_last`."""
    _remove_hidden(root)
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
