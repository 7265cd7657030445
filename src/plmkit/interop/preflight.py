"""A model directory checked before anything is allocated: the config's fields (types and
sizes) and the weight file's tensor shapes, read from its header, against the same model built
on the meta device (no memory). A config.json that says 1,000,000 layers or a hidden size of
10^9 is then one line naming the file, not gigabytes allocated and a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from torch import nn

from plmkit.errors import UserError

Shapes = dict[str, tuple[int, ...]]

# config fields that size a tensor or a stack: positive and below a tensor dimension's limit
SIZE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
               "max_positions", "embedding_size", "num_groups", "generator_hidden_size",
               "generator_num_heads", "generator_intermediate_size", "batch_size",
               "max_seq_len")
COUNT_FIELDS = ("type_vocab_size", "task_type_vocab_size")  # may be 0
LAYER_FIELDS = ("num_layers", "num_groups")  # stacks whose length the weights' indices show
MAX_SIZE = 2**31
_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_fields(config_cls: type, values: Mapping[str, Any], where: str,
                 names: Mapping[str, str] | None = None) -> None:
    """A UserError naming `where` and the field (by its name in the file, `names[field]`)
    unless each value has its config field's type, sizes are positive integers below 2^31 and
    dropout probabilities lie in [0, 1]. Fields the config does not have are left to it."""
    hints = typing.get_type_hints(config_cls)
    for field, value in values.items():
        if field not in hints:
            continue
        problem = _type_problem(hints[field], value) or _range_problem(field, value)
        if problem:
            name = (names or {}).get(field, field)
            raise UserError(f"{where}: {name} {_short(value)} {problem}")


def _type_problem(hint: Any, value: Any) -> str | None:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if any(_fits(option, value) for option in options):
        return None
    return "is not " + " or ".join(_describe(option) for option in options)


def _fits(hint: Any, value: Any) -> bool:
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    return True  # a type this check does not know: the config's own checks decide


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return {bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string"}.get(hint, str(hint))


def _range_problem(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if field in SIZE_FIELDS and not 0 < value < MAX_SIZE:
        return "is not a positive size below 2^31"
    if field in COUNT_FIELDS and not 0 <= value < MAX_SIZE:
        return "is not a count in [0, 2^31)"
    if field.endswith("dropout") and not 0 <= value <= 1:
        return "is not a probability in [0, 1]"
    if field.endswith("_eps") and not value > 0:
        return "is not positive"
    return None


def weight_shapes(path: Path) -> Shapes:
    """The shape of every tensor in a safetensors file (its header only) or a
    pytorch_model.bin (memory-mapped, tensors and primitives only): nothing is read into memory."""
    try:
        if path.suffix == ".safetensors":
            with safetensors.safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (OSError, ValueError, safetensors.SafetensorError) as e:
        raise UserError(f"{path}: cannot read the tensor shapes ({_first_line(e)})") from None
    except RuntimeError:  # torch.load: not the zip format, which alone can be memory-mapped
        raise UserError(f"{path}: not a zip-format torch file, whose tensor shapes could be read "
                        "without loading it (save it with torch.save, or as safetensors)") from None
    except Exception as e:  # a pickle with code in it: weights_only refuses it
        raise UserError(f"{path}: not a plain tensor file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise UserError(f"{path}: not a dict of tensors")
    return {k: tuple(v.shape) for k, v in state.items()}


def layers_held(names: Iterable[str]) -> int:
    """An upper bound on the stack length the tensor `names` show: one more than the largest
    numeric component ("encoder.layer.11.output..." -> 12), at most the number of names."""
    names = list(names)
    indices = [int(i) for name in names for i in _INDEX.findall(name)]
    return min(max(indices, default=-1) + 1, len(names))


def checked_on_meta(config: Any, build: Callable[[Any], nn.Module],
                    check: Callable[[nn.Module], None], layers: int, where: str,
                    names: Mapping[str, str] | None = None) -> None:
    """Build `config`'s model on the meta device and `check` it against the weights (`check`
    raises a UserError on a shape or name that does not fit).

    A config with longer stacks (`LAYER_FIELDS`) than the `layers` the weights hold is first
    checked with its stacks cut to `layers`, then to `layers + 1`: a model whose layers each
    have weights fails the second, so 1,000,000 layers are refused without being built, while
    a model that shares one block across its layers (ALBERT) passes and is built in full.
    """
    longest = max(getattr(config, f, 0) or 0 for f in LAYER_FIELDS)
    if longest > layers:
        check(_meta(_cut(config, max(layers, 1), where), build, where))
        try:
            check(_meta(_cut(config, layers + 1, where), build, where))
        except UserError:
            field = max(LAYER_FIELDS, key=lambda f: getattr(config, f, 0) or 0)
            name = (names or {}).get(field, field)
            raise UserError(f"{where}: {name} {getattr(config, field)} does not fit the "
                            f"weights, which hold {layers} layers") from None
    check(_meta(config, build, where))


def _cut(config: Any, layers: int, where: str) -> Any:
    cut = {f: min(getattr(config, f), layers) for f in LAYER_FIELDS
           if getattr(config, f, None) is not None}
    try:
        return dataclasses.replace(config, **cut)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _meta(config: Any, build: Callable[[Any], nn.Module], where: str) -> nn.Module:
    try:
        with torch.device("meta"):
            return build(config)
    except (AssertionError, RuntimeError, ValueError, TypeError, OverflowError, IndexError) as e:
        raise UserError(f"{where}: cannot build the model it describes "
                        f"({type(e).__name__}: {_first_line(e)})") from None


def check_state_shapes(model: nn.Module, shapes: Shapes, weights: Path, config_name: str) -> None:
    """A UserError unless the tensors of `weights` (`shapes`) are exactly the model's state:
    no unknown name, each parameter present (one name of tied ones is enough, as safetensors
    saves them), each shape the model's."""
    state = model.state_dict(keep_vars=True)
    pruned = tuple(k.removesuffix("kept_heads") for k in shapes if k.endswith(".kept_heads"))
    # a pruned attention (`plmkit prune`) has fewer heads than the config: its load hook
    # rebuilds it at the size of its tensors
    shapes = {k: v for k, v in shapes.items() if not (pruned and k.startswith(pruned))}
    unknown = sorted(set(shapes) - set(state))
    if unknown:
        raise UserError(f"{weights}: holds {_and_more(unknown)}, which the model that "
                        f"{config_name} describes does not have")
    tied: dict[int, list[str]] = {}
    for key, tensor in state.items():
        tied.setdefault(id(tensor), []).append(key)
    missing = [keys[0] for keys in tied.values() if not any(k in shapes for k in keys)
               and not (pruned and keys[0].startswith(pruned))]
    if missing:
        raise UserError(f"{weights}: no {_and_more(missing)} for the model that {config_name} "
                        "describes")
    for key, shape in shapes.items():
        if shape != tuple(state[key].shape):
            raise UserError(f"{weights}: {key} has shape {shape}, {config_name} implies "
                            f"{tuple(state[key].shape)}")


def _and_more(names: list[str]) -> str:
    return names[0] + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]
