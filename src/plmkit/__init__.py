"""plmkit: pretrain, fine-tune, compare and ship the classic pretrained Transformer models."""

from __future__ import annotations

from plmkit.errors import UserError
from plmkit.interop import save_hf
from plmkit.interop.native import load
from plmkit.models import build, preset_config
from plmkit.training.modeldir import save_model

__version__ = "0.1.0"
__all__ = ["UserError", "build", "load", "preset_config", "save_hf", "save_model"]
