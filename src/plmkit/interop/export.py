"""`save_hf`: any plmkit model out to the transformers directory its family (or, fine-tuned,
its task class: `interop.heads`) loads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.interop.heads import save_task_hf
from plmkit.interop.hf import config_to_hf, hf_tensors, maps_key, spec_of, write_hf_files
from plmkit.models.registry import HFSpec
from plmkit.nn.attention import unpruned_state_dict


def save_hf(model: nn.Module, directory: str | Path,
            source: Mapping[str, dict[str, Any]] | None = None) -> Path:
    """Write `model` as a transformers directory that `AutoModel` and the family's
    `*ForPreTraining` class load with identical outputs; each of `spec.parts` (ELECTRA's
    generator) goes, as a model of its own, into its subdirectory. `source`: the config.json
    of the checkpoint the model was continued from, per part ("" the main one); its fields
    that plmkit does not write are kept (a tokenizer's ids, `_name_or_path`, ...)."""
    if getattr(model, "task", None) is not None:
        return save_task_hf(model, Path(directory), (source or {}).get("", {}))
    spec = spec_of(model)
    directory = Path(directory)
    targets = [(directory, spec), *((directory / sub, p) for sub, p in spec.parts.items())]
    state = {k: v for k, v in unpruned_state_dict(model).items()  # transformers >= 5 has no
             if not k.startswith(spec.unexported)}  # pruned heads: zeros instead
    for key in state:
        if not any(maps_key(s, key) for _, s in targets):  # e.g. ALBERT's partial sharing
            raise UserError(f"cannot export to Hugging Face: {key} has no name in the "
                            f"{spec.model_type} key map")
    for where, part in targets:
        kept = (source or {}).get(where.relative_to(directory).as_posix().strip("."), {})
        _write_hf(part, {k: v for k, v in state.items() if maps_key(part, k)}, model, where, kept)
    return directory


def _write_hf(spec: HFSpec, state: dict[str, Tensor], model: nn.Module, directory: Path,
              kept: Mapping[str, Any]) -> None:
    config = {**kept, "model_type": spec.model_type, "architectures": [spec.architecture],
              **config_to_hf(spec, model.config), **spec.fixed}  # type: ignore[attr-defined]
    write_hf_files(directory, config, hf_tensors(spec, state))
