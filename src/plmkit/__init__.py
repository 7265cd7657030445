"""plmkit: pretrain, fine-tune, compare and ship the classic pretrained Transformer models."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from plmkit.errors import UserError
from plmkit.interop import load_hf, save_hf
from plmkit.io import is_native, load_model, save_model
from plmkit.models import build, preset_config

__version__ = "0.1.0"
__all__ = ["UserError", "build", "load", "preset_config", "save_hf", "save_model"]


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
