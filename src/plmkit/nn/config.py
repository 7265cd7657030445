"""The configs of the shared stacks: what every plmkit Transformer has (`StackConfig`) and the
BERT-style encoder's (`EncoderConfig`). Each model file subclasses one with its `family` and
its paper's defaults."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar, Literal

from plmkit.errors import UserError
from plmkit.nn.block import Norm

Attention = Literal["full", "induced"]


@dataclass
class StackConfig:
    """Vocabulary, depth, width, heads, feed-forward size and activation, dropout, LayerNorm
    eps and the padding id; BERT-base's values (Devlin et al. 2019, section 3) by default."""

    family: str = "stack"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    activation: str = "gelu"
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    positive: ClassVar[tuple[str, ...]] = ("vocab_size", "hidden_size", "num_layers",
                                           "num_heads")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """A UserError for a config no model can be built from (a field of the wrong type or
        outside its Literal's values; a size that is not positive); subclasses extend it (and
        may fill fields that follow from others)."""
        for name, kinds in field_types(type(self)).items():
            setattr(self, name, typed(name, getattr(self, name), kinds))
        for name in self.positive:
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )


@dataclass
class EncoderConfig(StackConfig):
    """The BERT-style encoder's shape and regularisation (BERT-base by default): learned
    positions and segments, an optional embedding size E below H (factorized embeddings),
    post- or pre-LN blocks, and the blocks' attention: "full" self-attention, or "induced"
    (`nn/induced.py`: `num_inducing` learned points in between, O(n m) instead of O(n^2))."""

    family: str = "encoder"
    max_positions: int = 512
    type_vocab_size: int = 2
    embedding_size: int | None = None
    attention_dropout: float = 0.1
    norm: Norm = "post"
    initializer_range: float = 0.02
    attention: Attention = "full"
    num_inducing: int = 32  # m, the inducing points of "induced" attention
    # plmkit once wrote ERNIE's task-type table size into every encoder config (0 outside
    # ERNIE, whose config has the field): read, so that those checkpoints load, and dropped
    task_type_vocab_size: InitVar[int] = 0

    positive: ClassVar[tuple[str, ...]] = (*StackConfig.positive, "max_positions",
                                           "num_inducing")

    # (no argument for ErnieConfig, where it is a field)
    def __post_init__(self, task_type_vocab_size: int = 0) -> None:  # noqa: RUF033
        if task_type_vocab_size:
            raise UserError(f"task_type_vocab_size {task_type_vocab_size}: only ERNIE has a "
                            "task-type embedding")
        super().__post_init__()

    def check(self) -> None:
        super().check()


@functools.cache
def field_types(cls: type) -> dict[str, tuple[Any, ...]]:
    """The types each field of the config dataclass `cls` takes (`int | None`: int, NoneType)."""
    hints = typing.get_type_hints(cls)
    return {f.name: (typing.get_args(hints[f.name])
                     if typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType)
                     else (hints[f.name],))
            for f in dataclasses.fields(cls)}


def typed(name: str, value: Any, kinds: tuple[Any, ...]) -> Any:
    """`value` of field `name` if it is of one of `kinds` (an int where a float goes becomes
    that float), else a UserError."""
    kind = next((k for k in kinds if _fits(value, k)), None)
    if kind is None:
        raise UserError(f"{name} must be {' or '.join(map(kind_name, kinds))}, not {value!r}")
    return float(value) if kind is float else value


def _fits(value: Any, kind: Any) -> bool:
    """Whether `value` is of `kind`: a Literal's values only, an int not a bool, a float or an
    int where a float goes."""
    if typing.get_origin(kind) is Literal:
        return value in typing.get_args(kind)
    if kind in (int, float):
        return isinstance(value, int if kind is int else int | float) and \
            not isinstance(value, bool)
    return isinstance(value, kind)


def kind_name(kind: Any) -> str:
    """How an error message names a value of `kind`."""
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    return {int: "an integer", float: "a number", bool: "true or false", str: "text",
            type(None): "unset"}[kind]
