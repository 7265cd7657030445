"""The configs of the shared stacks: what every plmkit Transformer has (`StackConfig`) and the
BERT-style encoder's (`EncoderConfig`). Each model file subclasses one with its `family` and
its paper's defaults."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import ClassVar, Literal

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
        """A UserError for a config no model can be built from; subclasses extend it (and may
        fill fields that follow from others)."""
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
        if self.norm not in ("post", "pre"):
            raise UserError(f"norm must be 'post' or 'pre', not {self.norm!r}")
        if self.attention not in ("full", "induced"):
            raise UserError(f"attention must be 'full' or 'induced', not {self.attention!r}")
