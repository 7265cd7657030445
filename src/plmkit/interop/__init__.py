"""Checkpoints in and out of the Hugging Face format."""

from plmkit.interop.export import save_hf
from plmkit.interop.hf import load_hf

__all__ = ["load_hf", "save_hf"]
