"""Hugging Face `transformers` checkpoints in and out, driven by each family's `HFSpec`."""

from __future__ import annotations

import json
import re
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.registry import FAMILIES, Family, HFSpec
from plmkit.nn.attention import unpruned_state_dict

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"


def family_for_model_type(model_type: str | None, where: Path) -> Family:
    """The family whose HF `model_type` is `model_type`."""
    for family in FAMILIES.values():
        if family.hf is not None and family.hf.model_type == model_type:
            return family
    known = sorted(f.hf.model_type for f in FAMILIES.values() if f.hf)
    raise UserError(f"{where}: model_type {model_type!r} is not supported; known: {known}")


def load_hf(directory: str | Path) -> nn.Module:
    """A plmkit model holding the weights of a transformers directory (config.json plus
    model.safetensors or pytorch_model.bin), with or without the base-model prefix and heads."""
    directory = Path(directory)
    hf_config = _read_json(directory / "config.json")
    family = family_for_model_type(hf_config.get("model_type"), directory / "config.json")
    spec = family.hf
    assert spec is not None
    parts = [(directory, spec)] + [(directory / sub, part) for sub, part in spec.parts.items()
                                   if (directory / sub / "config.json").is_file()]
    kwargs: dict[str, Any] = {}
    for where, part in parts:
        _merge_config(kwargs, _config_kwargs(part, _read_json(where / "config.json"), where),
                      where)
    model = family.model(family.config(**kwargs))
    for where, part in parts:
        state = _with_prefix(_read_weights(where), part)
        model.load_state_dict(_import_state(model, state, part, where), strict=False)
    return model


def save_hf(model: nn.Module, directory: str | Path) -> Path:
    """Write `model` as a transformers directory that `AutoModel` and the family's
    `*ForPreTraining` class load with identical outputs; each of `spec.parts` (ELECTRA's
    generator) goes, as a model of its own, into its subdirectory."""
    spec = _spec_of(model)
    directory = Path(directory)
    targets = [(directory, spec), *((directory / sub, p) for sub, p in spec.parts.items())]
    state = unpruned_state_dict(model)  # transformers >= 5 has no pruned heads: zeros instead
    for key in state:
        if not any(_maps(s, key) for _, s in targets):  # e.g. ALBERT's partial sharing
            raise UserError(f"cannot export to Hugging Face: {key} has no name in the "
                            f"{spec.model_type} key map")
    for where, part in targets:
        _write_hf(part, {k: v for k, v in state.items() if _maps(part, k)}, model, where)
    return directory


def _write_hf(spec: HFSpec, state: dict[str, Tensor], model: nn.Module, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in state.items():
        names = hf_names(spec, key)
        for name, part in zip(names, value.chunk(len(names)), strict=True):
            tensors[name] = part.detach().contiguous().cpu()
    config = {"model_type": spec.model_type, "architectures": [spec.architecture],
              **config_to_hf(spec, model.config), **spec.fixed}  # type: ignore[attr-defined]
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    safetensors.torch.save_file(tensors, str(directory / SAFETENSORS), metadata={"format": "pt"})


def config_from_hf(spec: HFSpec, config_cls: type, hf: dict[str, Any], where: Path) -> Any:
    """The plmkit config for a transformers `config.json` dict."""
    return config_cls(**_config_kwargs(spec, hf, where))


def _config_kwargs(spec: HFSpec, hf: dict[str, Any], where: Path) -> dict[str, Any]:
    for name, value in spec.fixed.items():
        if hf.get(name, value) != value:
            raise UserError(f"{where}: {name}={hf[name]!r} is not supported (only {value!r})")
    kwargs = {}
    for ours, theirs in spec.config.items():
        if theirs in hf:
            value = hf[theirs]
            inverse = {v: k for k, v in spec.value_maps.get(ours, {}).items()}
            if inverse and value not in inverse:
                raise UserError(f"{where}: {theirs}={value!r} is not supported")
            kwargs[ours] = inverse.get(value, value)
    return kwargs


def _merge_config(kwargs: dict[str, Any], more: dict[str, Any], where: Path) -> None:
    """Add a part's config fields to `kwargs`; a field both give must agree."""
    for name, value in more.items():
        if kwargs.get(name, value) != value:
            raise UserError(f"{where / 'config.json'}: {name}={value!r} differs from "
                            f"{kwargs[name]!r} in the main model (not supported)")
        kwargs[name] = value


def config_to_hf(spec: HFSpec, config: Any) -> dict[str, Any]:
    """The transformers `config.json` fields for a plmkit config."""
    out = {}
    for ours, theirs in spec.config.items():
        value = getattr(config, ours)
        out[theirs] = spec.value_maps.get(ours, {}).get(value, value)
    return out


def hf_names(spec: HFSpec, key: str) -> tuple[str, ...]:
    """The HF parameter name(s) for plmkit parameter `key`."""
    for pattern, target in _compiled(spec):
        m = pattern.fullmatch(key)
        if m:
            names = (target,) if isinstance(target, str) else target
            return tuple(n.format(**m.groupdict()) for n in names)
    raise KeyError(f"{key} has no Hugging Face name in the {spec.model_type} key map")


def _maps(spec: HFSpec, key: str) -> bool:
    """Whether `spec` names plmkit parameter `key`."""
    return any(pattern.fullmatch(key) for pattern, _ in _compiled(spec))


@cache
def _compiled(spec: HFSpec) -> list[tuple[re.Pattern[str], str | tuple[str, ...]]]:
    def regex(key: str) -> re.Pattern[str]:
        text = re.escape(key).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>\w+)")
        return re.compile(text)

    return [(regex(k), v) for k, v in spec.keys.items()]


def _import_state(model: nn.Module, state: dict[str, Tensor], spec: HFSpec,
                  where: Path) -> dict[str, Tensor]:
    own = {k: v for k, v in model.state_dict().items() if _maps(spec, k)}
    out, used, missing = {}, set(), []
    for key, param in own.items():
        names = [_lookup(state, spec, n) for n in hf_names(spec, key)]
        if None in names:
            missing.append(key)
            continue
        used.update(names)
        value = torch.cat([state[n] for n in names]) if len(names) > 1 else state[names[0]]
        if value.shape != param.shape:
            raise UserError(f"{where}: {names[0]} has shape {tuple(value.shape)}, "
                            f"config.json implies {tuple(param.shape)}")
        out[key] = value.to(param.dtype)
    _check_missing(missing, spec, where)
    unused = sorted(set(state) - used - set(spec.ignored))
    if unused:
        warnings.warn(f"{where}: ignored {len(unused)} weights: {', '.join(unused[:5])}",
                      stacklevel=3)
    return out


def _lookup(state: dict[str, Tensor], spec: HFSpec, name: str) -> str | None:
    if name in state:
        return name
    alias = spec.aliases.get(name)
    return alias if alias in state else None


def _check_missing(missing: list[str], spec: HFSpec, where: Path) -> None:
    # the pooler counts as a head: *ForMaskedLM checkpoints (RoBERTa's) have none
    heads = [k for k in missing
             if k.startswith("pooler.") or not hf_names(spec, k)[0].startswith(spec.base_prefix)]
    backbone = [k for k in missing if k not in heads]
    if backbone:
        raise UserError(f"{where}: not a complete {spec.model_type} checkpoint; "
                        f"missing {hf_names(spec, backbone[0])[0]} and {len(backbone) - 1} more")
    if heads:
        warnings.warn(f"{where}: no weights for {len(heads)} head parameters "
                      f"({', '.join(heads[:4])}...); they keep their fresh initialisation",
                      stacklevel=3)


def _with_prefix(state: dict[str, Tensor], spec: HFSpec) -> dict[str, Tensor]:
    """Give a base-model checkpoint (no `bert.` prefix) the prefixed *ForPreTraining names."""
    if any(k.startswith(spec.base_prefix) for k in state):
        return state
    return {spec.base_prefix + k: v for k, v in state.items()}


def _read_weights(directory: Path) -> dict[str, Tensor]:
    if (directory / SAFETENSORS).is_file():
        return safetensors.torch.load_file(str(directory / SAFETENSORS))
    if (directory / PYTORCH_BIN).is_file():
        try:
            return torch.load(directory / PYTORCH_BIN, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with code, a truncated file
            raise UserError(f"{directory / PYTORCH_BIN}: cannot read weights ({e})") from None
    raise UserError(f"{directory}: no {SAFETENSORS} or {PYTORCH_BIN}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (not a model directory)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def _spec_of(model: nn.Module) -> HFSpec:
    family = FAMILIES.get(getattr(getattr(model, "config", None), "family", ""))
    if family is None or family.hf is None:
        raise UserError(f"{type(model).__name__} has no Hugging Face equivalent to export to")
    return family.hf
