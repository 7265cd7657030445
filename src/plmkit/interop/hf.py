"""Hugging Face `transformers` checkpoints in and out, driven by each family's `HFSpec`."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.interop.preflight import (
    Shapes,
    check_fields,
    checked_on_meta,
    layers_held,
    weight_shapes,
)
from plmkit.models.registry import FAMILIES, Family, HFSpec

V = TypeVar("V")
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"


def family_for_model_type(model_type: str | None, where: Path) -> Family:
    """The family whose HF `model_type` is `model_type`."""
    for family in FAMILIES.values():
        if family.hf is not None and family.hf.model_type == model_type:
            return family
    known = sorted(f.hf.model_type for f in FAMILIES.values() if f.hf)
    raise UserError(f"{where}: model_type {model_type!r} is not supported; known: {known}")


def load_hf(directory: str | Path, parts: Mapping[str, Path] | None = None) -> nn.Module:
    """A plmkit model holding the weights of a transformers directory (config.json plus
    model.safetensors or pytorch_model.bin), with or without the base-model prefix and heads.
    `parts`: where a part of `spec.parts` is when not in its subdirectory (ELECTRA's
    generator given as a directory of its own).

    The config is checked against the weight files' headers before the model is allocated
    (`plmkit.interop.preflight`). `model.fresh_weights` names the tensors no file held (heads
    that keep their fresh initialisation; `plmkit.deploy.fill_mask` refuses an untrained MLM
    head)."""
    model, fresh = load_hf_fresh(directory, parts)
    model.fresh_weights = frozenset(fresh)
    return model


def hf_parts(directory: Path, spec: HFSpec,
             parts: Mapping[str, Path] | None = None) -> list[tuple[Path, HFSpec]]:
    """The directories a checkpoint's weights are in, each with its key map: the main one and
    each of `spec.parts` found (in `parts`, else in its subdirectory of `directory`)."""
    given = dict(parts or {})
    if unknown := sorted(set(given) - set(spec.parts)):
        raise UserError(f"{directory}: a {spec.model_type} checkpoint has no {unknown[0]} part")
    return [(directory, spec)] + [
        (given.get(sub, directory / sub), part) for sub, part in spec.parts.items()
        if sub in given or (directory / sub / "config.json").is_file()]


def read_hf_config(directory: str | Path,
                   parts: Mapping[str, Path] | None = None) -> tuple[Family, Any]:
    """The family and plmkit config of a transformers directory (and of its parts: the
    fields two parts share must agree), from the config.json files alone."""
    directory = Path(directory)
    hf_config = _read_json(directory / "config.json")
    family = family_for_model_type(hf_config.get("model_type"), directory / "config.json")
    assert family.hf is not None
    kwargs: dict[str, Any] = {}
    for where, part in hf_parts(directory, family.hf, parts):
        more = _config_kwargs(part, family.config, _read_json(where / "config.json"), where)
        _merge_config(kwargs, more, where)
    return family, _build_config(family.config, kwargs, directory / "config.json")


def load_hf_fresh(directory: str | Path,
                  parts: Mapping[str, Path] | None = None) -> tuple[nn.Module, list[str]]:
    """`load_hf`, and the names of the model's tensors that no weight file held (they keep
    their fresh initialisation: heads the checkpoint has not, a part it lacks)."""
    directory = Path(directory)
    family, config = read_hf_config(directory, parts)
    spec = family.hf
    assert spec is not None
    found = hf_parts(directory, spec, parts)
    shapes = {at: _with_prefix(weight_shapes(_weights_file(at)), part) for at, part in found}

    def check(meta: nn.Module) -> None:
        for at, part in found:
            _plan(meta, shapes[at], part, at)

    checked_on_meta(config, family.model, check, max(layers_held(s) for s in shapes.values()),
                    str(directory / "config.json"), spec.config)
    model = family.model(config)
    loaded: set[str] = set()
    for at, part in found:
        state = _import_state(model, _with_prefix(_read_weights(at), part), part, at)
        model.load_state_dict(state, strict=False)
        loaded |= set(state)
    return model, sorted(set(model.state_dict()) - loaded)


def _build_config(config_cls: type, kwargs: dict[str, Any], where: Path) -> Any:
    try:
        return config_cls(**kwargs)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def hf_tensors(spec: HFSpec, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The HF tensors of plmkit tensors `state` (a fused tensor split into its parts)."""
    tensors = {}
    for key, value in state.items():
        names = hf_names(spec, key)
        for name, part in zip(names, value.chunk(len(names)), strict=True):
            tensors[name] = part.detach().contiguous().cpu()
    return tensors


def write_hf_files(directory: Path, config: Mapping[str, Any],
                   tensors: dict[str, Tensor]) -> None:
    """Write `config.json` and `model.safetensors` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    safetensors.torch.save_file(tensors, str(directory / SAFETENSORS), metadata={"format": "pt"})


def _config_kwargs(spec: HFSpec, config_cls: type, hf: dict[str, Any],
                   where: Path) -> dict[str, Any]:
    """The plmkit config fields a config.json dict gives, each of the field's type."""
    for name, value in spec.fixed.items():
        if hf.get(name, value) != value:
            raise UserError(f"{where}: {name}={hf[name]!r} is not supported (only {value!r})")
    kwargs = {}
    for ours, theirs in spec.config.items():
        if theirs in hf:
            value = hf[theirs]
            inverse = {v: k for k, v in spec.value_maps.get(ours, {}).items()}
            if inverse:  # compared, not looked up: the value may be a list
                if not any(value == v and type(value) is type(v) for v in inverse):
                    raise UserError(f"{where}: {theirs}={value!r} is not supported")
                value = inverse[value]
            kwargs[ours] = value
    check_fields(config_cls, kwargs, str(where / "config.json"), spec.config)
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


def maps_key(spec: HFSpec, key: str) -> bool:
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
    own = model.state_dict()
    plan, heads = _plan(model, {k: tuple(v.shape) for k, v in state.items()}, spec, where)
    if heads:
        warnings.warn(f"{where}: no weights for {len(heads)} head parameters "
                      f"({', '.join(heads[:4])}...); they keep their fresh initialisation",
                      stacklevel=3)
    unused = sorted(set(state) - {n for names in plan.values() for n in names}
                    - set(spec.ignored))
    if unused:
        warnings.warn(f"{where}: ignored {len(unused)} weights: {', '.join(unused[:5])}",
                      stacklevel=3)
    return {key: (torch.cat([state[n] for n in names]) if len(names) > 1
                  else state[names[0]]).to(own[key].dtype) for key, names in plan.items()}


def _plan(model: nn.Module, shapes: Shapes, spec: HFSpec,
          where: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The HF tensor names each parameter of `model` in `spec` is read from (several are
    concatenated on dim 0), and the head parameters the checkpoint has none for. A UserError
    on a shape that differs or a backbone parameter that is missing. `shapes`: the checkpoint's
    tensor shapes, so that a meta-device model is checked before the real one is built."""
    plan, missing = {}, []
    for key, param in model.state_dict().items():
        if not maps_key(spec, key):
            continue
        names = [_lookup(shapes, spec, n) for n in hf_names(spec, key)]
        if None in names:
            missing.append(key)
            continue
        shape = _concatenated([shapes[n] for n in names])  # type: ignore[index]
        if shape != tuple(param.shape):
            raise UserError(f"{where}: {names[0]} has shape {shapes[names[0]]}, "  # type: ignore[index]
                            f"config.json implies {tuple(param.shape)}")
        plan[key] = names
    return plan, _missing_heads(missing, spec, where)  # type: ignore[return-value]


def _concatenated(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The shape of the tensors of `shapes` concatenated on dim 0 (None: they do not fit)."""
    first = shapes[0]
    if len(shapes) == 1:
        return first
    if not first or any(s[1:] != first[1:] or not s for s in shapes):
        return None
    return (sum(s[0] for s in shapes), *first[1:])


def _lookup(state: Mapping[str, Any], spec: HFSpec, name: str) -> str | None:
    if name in state:
        return name
    alias = spec.aliases.get(name)
    return alias if alias in state else None


def _missing_heads(missing: list[str], spec: HFSpec, where: Path) -> list[str]:
    """The head parameters among `missing`; a UserError if a backbone parameter is."""
    # the pooler counts as a head: *ForMaskedLM checkpoints (RoBERTa's) have none
    heads = [k for k in missing
             if k.startswith("pooler.") or not hf_names(spec, k)[0].startswith(spec.base_prefix)]
    backbone = [k for k in missing if k not in heads]
    if backbone:
        raise UserError(f"{where}: not a complete {spec.model_type} checkpoint; "
                        f"missing {hf_names(spec, backbone[0])[0]} and {len(backbone) - 1} more")
    return heads


def _with_prefix(state: dict[str, V], spec: HFSpec) -> dict[str, V]:
    """Give a base-model checkpoint (no `bert.` prefix) the prefixed *ForPreTraining names."""
    if any(k.startswith(spec.base_prefix) for k in state):
        return state
    return {spec.base_prefix + k: v for k, v in state.items()}


def _weights_file(directory: Path) -> Path:
    for name in (SAFETENSORS, PYTORCH_BIN):
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"{directory}: no {SAFETENSORS} or {PYTORCH_BIN}")


def _read_weights(directory: Path) -> dict[str, Tensor]:
    """The tensors of a directory's weight file (`weight_shapes` has read it once already)."""
    path = _weights_file(directory)
    if path.name == SAFETENSORS:
        return safetensors.torch.load_file(str(path))
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (not a model directory)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def spec_of(model: nn.Module) -> HFSpec:
    config = getattr(model, "config", None)
    family = FAMILIES.get(getattr(config, "family", ""))
    if family is None or family.hf is None:
        raise UserError(f"{type(model).__name__} has no Hugging Face equivalent to export to")
    if getattr(config, "attention", "full") != "full":
        raise UserError(f"cannot export to Hugging Face: transformers has no "
                        f"{config.attention} attention (config attention={config.attention!r})")
    return family.hf
