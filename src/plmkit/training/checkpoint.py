"""Resumable checkpoints: `out_dir/checkpoints/step-000123/` and RNG state capture.

A checkpoint directory holds the model as `modeldir.save_model` writes it (`plmkit.json` and
`model.safetensors`), `trainer_state.pt` (optimizer, scheduler, step, RNG states and data
positions, only tensors and primitives, so that it loads with `torch.load(weights_only=True)`)
and `manifest.json`: the size and sha256 of every other file. It is written in a temporary
directory, fsynced and renamed into place, so a `step-*` directory that exists is complete; the
manifest catches what happens to it later (a truncated or corrupted file): `load_latest` then
warns (one line on stderr) and falls back to the newest checkpoint that verifies and loads. A
checkpoint whose files match a manifest of the wrong shape, or whose trainer state is not what
plmkit writes (code in the pickle, entries of the wrong type), is skipped the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from plmkit.errors import UserError
from plmkit.outputs import clean_leftovers, fix_modes, no_space_is_user_error
from plmkit.training.modeldir import NATIVE_CONFIG, WEIGHTS, describe, fsync_dir, fsync_files

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
MANIFEST = "manifest.json"
_NAME = re.compile(r"step-(\d+)")
_SHA256 = re.compile(r"[0-9a-f]{64}")

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
        fsync_files(tmp)
        fsync_dir(tmp)
        if final.exists():  # an earlier run's checkpoint of the same step: move it aside
            final.rename(tmp.with_name(tmp.name + ".old"))
        tmp.rename(final)
        fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BadCheckpoint(UserError):
    """A checkpoint whose files match its manifest but whose content plmkit did not write
    (`load_latest` falls back past it)."""


def verify_checkpoint(checkpoint: Path) -> str | None:
    """What is wrong with `checkpoint` by its manifest (a missing, truncated or altered file,
    a manifest of the wrong shape), or None when every file matches."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"no valid {MANIFEST} (an incomplete write?)"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return f"{MANIFEST} has no \"files\" object"
    for name in (WEIGHTS, TRAINER_STATE):
        if name not in files:
            return f"{MANIFEST} lists no {name}"
    for name, expected in files.items():
        problem = _entry_problem(name, expected)
        if problem:
            return f"{MANIFEST}: {problem}"
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} is corrupted (sha256 differs from the manifest)"
    return None


def _entry_problem(name: str, entry: Any) -> str | None:
    """What is wrong with a manifest entry: a plain file name -> {"size", "sha256"}."""
    if name in ("", ".", "..") or "/" in name or os.sep in name:
        return f"{name!r} is not a file name"
    if not isinstance(entry, dict):
        return f"the entry of {name} is not an object"
    size, digest = entry.get("size"), entry.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"the entry of {name} has no size in bytes"
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return f"the entry of {name} has no sha256"
    return None


def load_latest(out_dir: str | os.PathLike[str], load: Callable[[Path], dict[str, Any]]
                ) -> tuple[Path, dict[str, Any]]:
    """`load(checkpoint)` (e.g. `partial(load_checkpoint, model)`) of the newest checkpoint
    that verifies and loads; returns it and what `load` returned.

    Each one that does not verify, or whose `load` raises `BadCheckpoint`, is skipped with a
    one-line warning naming the problem; none at all is a `UserError`.
    """
    found = list_checkpoints(out_dir)
    if not found:
        raise UserError(f"{Path(out_dir) / CHECKPOINTS}: no checkpoint to resume from")
    for _, path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            try:
                return path, load(path)
            except BadCheckpoint as e:
                problem = str(e).removeprefix(f"{path}: ")
        warn(f"{path}: {problem}; falling back to an earlier checkpoint")
    raise UserError(f"{Path(out_dir) / CHECKPOINTS}: no intact checkpoint to resume from")


def warn(message: str) -> None:
    """`message` as one line on stderr (a Python warning prints two: it and a source line)."""
    print(f"plmkit: warning: {' '.join(message.splitlines())}", file=sys.stderr, flush=True)


def load_checkpoint(model: nn.Module, checkpoint: Path) -> dict[str, Any]:
    """Read the weights of `checkpoint` into `model` and return its trainer state.

    The checkpoint's model config (`plmkit.json`) must be the one `model` was built with.
    """
    check_config(model, checkpoint)
    load_weights(checkpoint, lambda path: safetensors.torch.load_model(model, path))
    return read_trainer_state(checkpoint)


def load_weights(checkpoint: Path, load: Callable[[Path], Any]) -> None:
    """`load(checkpoint / WEIGHTS)`; a file that safetensors or the model refuses (a header
    of the wrong shape, tensors that do not fit) is a `BadCheckpoint`."""
    try:
        load(checkpoint / WEIGHTS)
    except (OSError, RuntimeError, safetensors.SafetensorError) as e:
        raise BadCheckpoint(f"{checkpoint}: {WEIGHTS} does not load ({_first_line(e)})") from None


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state of `checkpoint`: a dict of tensors and primitives, read with
    `weights_only=True`; anything else (a pickle that would run code) is a `BadCheckpoint`."""
    try:
        state = torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses code (UnpicklingError); a damaged archive
        raise BadCheckpoint(f"{checkpoint}: {TRAINER_STATE} cannot be loaded safely "
                            f"({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise BadCheckpoint(f"{checkpoint}: {TRAINER_STATE} holds a {type(state).__name__}, "
                            "not a trainer state")
    return state


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def check_config(model: nn.Module, checkpoint: Path) -> None:
    """A `UserError` naming the family or the config fields in which the model saved in
    `checkpoint` differs from `model` (e.g. a vocabulary of another size)."""
    path = checkpoint / NATIVE_CONFIG
    if getattr(model, "config", None) is None or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        saved = None
    if not isinstance(saved, dict) or not isinstance(saved.get("config", {}), dict):
        raise BadCheckpoint(f"{checkpoint}: {NATIVE_CONFIG} is not a plmkit model description")
    ours = json.loads(json.dumps(describe(model)))  # tuples as lists, like the file
    if saved.get("family") != ours["family"]:
        family = ours["family"]
        raise UserError(f"{path}: the checkpoint holds a {saved.get('family')} model, this run "
                        f"a{'n' if family[0] in 'aeiou' else ''} {family} model (another "
                        "--model, or another --out?)")
    theirs = saved.get("config", {})
    diff = [f"{k} {theirs.get(k)!r} there, {v!r} here" for k, v in ours["config"].items()
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
