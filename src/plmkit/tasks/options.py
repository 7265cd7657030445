"""Options shared by every fine-tuning task (`plmkit finetune`); `cli`, the field metadata
from which the command line builds an options dataclass's flags (`plmkit.cli.add_options`), and
`Registry`, the names its `choices` refer to."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plmkit.errors import UserError
from plmkit.tasks.files import Columns

# (largest hidden size, fine-tuning learning rate): smaller models take larger rates
LR_BY_SIZE = ((128, 1e-3), (256, 3e-4), (512, 1e-4))
BERT_LR = 3e-5  # BERT-base / large (Devlin et al. 2019, A.3: 5e-5, 3e-5 or 2e-5)


def cli(help: str, metavar: str | None = None, choices: str | None = None,
        names: str | None = None, minimum: int | None = None) -> dict[str, Any]:
    """A field's `metadata`: its command-line help and metavar; `choices`: the registry that
    lists the values, as "module:NAME" (a dict, tuple or Literal) or "module:Class.field" (a
    Literal field); `names`: a registry the help names as %(names)s; `minimum`: the smallest
    value the option takes. Registries are read only when the command line needs them."""
    return {"help": help, "metavar": metavar, "choices": choices, "names": names,
            "minimum": minimum}


class Registry(Sequence[str]):
    """The names of a registry, `ref` "module:NAME" (a dict, tuple, Literal or a function
    returning names) or "module:Class.field" (a Literal field), imported only when argparse
    first needs them (to check a value or show help): building the parser imports no heavy
    module. As `choices`, or named in a help text as %(names)s (`_lists`)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        module, _, path = self.ref.partition(":")
        name, _, field = path.partition(".")
        value = getattr(importlib.import_module(module), name)
        if field:
            value = typing.get_type_hints(value)[field]
        if isinstance(value, types.FunctionType):  # one that lists the names
            value = value()
        return tuple(typing.get_args(value) or value)

    def __getitem__(self, i: Any) -> Any:
        return self.names[i]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __str__(self) -> str:
        return ", ".join(self.names)


def default_lr(config: Any) -> float:
    """The fine-tuning learning rate for a model of `config`'s hidden size, the one rule the
    CLI, the demo and the Python API share. BERT-base and larger: 3e-5, in BERT's {5e-5, 3e-5,
    2e-5} (Devlin et al. 2019, A.3). The compact BERTs (Turc et al. 2019, "Well-Read Students
    Learn Better") were fine-tuned with rates up to 3e-4, the smallest taking the largest:
    3e-4 up to H256, 1e-4 up to H512. At H128 and below (bert-tiny) 1e-3 is what learns within
    `plmkit demo`'s budget; at 3e-5 the README's run stays on the majority class."""
    hidden = config.hidden_size
    return next((lr for size, lr in LR_BY_SIZE if hidden <= size), BERT_LR)


COLUMN_FIELDS = ("text_field", "text_pair_field", "label_field")  # classify's file columns
# options of some tasks only: the tasks that take each (`plmkit finetune` refuses the others)
TASK_ONLY = {"pooling": ("classify",), "regression": ("classify",), "head": ("similarity",),
             **dict.fromkeys(COLUMN_FIELDS, ("classify", "similarity"))}


@dataclass
class FinetuneOptions:
    """Defaults from BERT's fine-tuning recipe (Devlin et al. 2019, section A.3): batch 32,
    2-4 epochs, 10% warmup, weight decay 0.01; lr None: `default_lr` of the model's size;
    head_lr None: lr times the task's `head_lr_scale` (`plmkit.jobs.finetune.head_lrs`). The
    options of `plmkit finetune` beside --task, --model, --train, --eval and --out (and
    classify's --pooling and --regression); written to OUT/finetune.json. The column fields
    are those of classify and similarity, `head` similarity's (`TASK_ONLY`)."""

    epochs: float = field(default=3.0, metadata=cli("BERT: 2-4 (default 3)"))
    lr: float | None = field(default=None, metadata=cli(
        "default by the model's hidden size: 1e-3 up to 128, 3e-4 up to 256, 1e-4 up to 512, "
        "else BERT's 3e-5"))
    head_lr: float | None = field(default=None, metadata=cli(
        "learning rate of the task head's freshly initialised weights (default: --lr; "
        "similarity 10 x --lr)"))
    batch_size: int = field(default=32, metadata=cli("examples per batch", minimum=1))
    max_seq_len: int | None = field(default=None, metadata=cli(  # None: the task's default
        "tokens per example (default: 128, squad 384)", minimum=1))
    warmup_fraction: float = field(default=0.1, metadata=cli(
        "share of the steps spent warming up (default: BERT's 0.1)"))
    weight_decay: float = field(default=0.01, metadata=cli("AdamW weight decay (default 0.01)"))
    seed: int = field(default=0, metadata=cli("seed of the head's weights and the data order"))
    eval_every: int = field(default=0, metadata=cli("steps (default: every epoch)", minimum=0))
    patience: int = field(default=3, metadata=cli(
        "stop after this many evaluations without improvement (0: never)", minimum=0))
    bf16: bool = field(default=False, metadata=cli(
        "bf16 autocast, in training and in the evaluations (plmkit evaluate too)"))
    progress: bool = field(default=True, metadata=cli(  # the option is --no-progress
        "no progress bar (terminal) or progress lines (a file or pipe)"))
    tensorboard: bool = field(default=False, metadata=cli(
        "also write TensorBoard event files to OUT/tensorboard (pip install "
        "'plmkit[tensorboard]')"))
    text_field: str = field(default="text", metadata=cli(
        "classify, similarity: the column of csv, tsv, jsonl and table files holding the text "
        "(with --text-pair-field the first text; text_a when this is text)", metavar="NAME"))
    text_pair_field: str | None = field(default=None, metadata=cli(
        "classify, similarity: the column holding the second text of sentence pairs (without "
        "it: text_b when the file has text_a and text_b)", metavar="NAME"))
    label_field: str = field(default="label", metadata=cli(
        "classify, similarity: the column holding the label", metavar="NAME"))
    head: str | None = field(default=None, metadata=cli(  # None: the task's default
        "similarity: ntn (a neural tensor layer on the two sentence vectors), cosine (of the "
        "two vectors) or cross (both sentences in one input) (default: cosine)",
        choices="plmkit.tasks.similarity:HEADS"))

    def __post_init__(self) -> None:
        """Refuse values no fine-tuning runs with, each naming its option."""
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise UserError(f"--epochs must be a positive number, got {self.epochs:g}")
        for name in ("lr", "head_lr", "weight_decay"):  # a learning rate of 0 freezes
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {value:g}")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction:g}")

    def columns(self) -> Columns:
        """The task file columns these options name."""
        return Columns(self.text_field, self.text_pair_field, self.label_field)

    def given(self, values: Mapping[str, Any] | None) -> FinetuneOptions:
        """These options with `values` (those given for one command, e.g. `plmkit evaluate
        --batch-size`) in place of theirs; a None value keeps the option as it is."""
        return dataclasses.replace(self, **{k: v for k, v in (values or {}).items()
                                            if v is not None})
