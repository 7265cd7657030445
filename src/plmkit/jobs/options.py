"""The options of `plmkit pretrain`: one dataclass that the CLI, `compare`, the demo and the
run record (`run.json`) share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Options that a resumed run may change; every other one must equal the run's (`run.json`).
# `grad_accum` and `fsdp` change with the number of processes (the global batch stays).
RESUMABLE_CHANGES = frozenset({
    "out", "steps", "tokenizer", "save_every", "eval_every", "log_every", "eval_batches",
    "progress", "resume", "overwrite", "max_bad_steps", "spike_rollback", "compile", "fsdp",
    "grad_accum", "tensorboard"})


@dataclass
class PretrainArgs:
    """The options of `plmkit pretrain` (see `plmkit pretrain --help`). `model`: a preset, or
    a directory to continue from (a plmkit run or a transformers model; `generator`: an
    ELECTRA discriminator's generator, a transformers directory of its own)."""

    model: str
    corpus: list[Path]
    out: Path
    text_field: str = "text"  # the jsonl field or table column holding the text
    objective: str | None = None
    steps: int = 1000
    tokenizer: Path | None = None
    vocab_size: int | None = None  # None: the family's (`tokenizer_vocab_size`)
    batch_size: int = 32
    seq_len: int = 128
    seed: int = 0
    lr: float | None = None  # None: `default_lr`
    warmup: int | None = None
    grad_accum: int = 1
    save_every: int = 500
    eval_every: int = 100
    log_every: int = 10
    masking: str | None = None  # None: the family's default (also below)
    input_format: str | None = None
    max_ngram: int | None = None
    dupe_factor: int | None = None  # static masking's copies (None: 10, as BERT)
    entities: Path | None = None  # ernie: extra entity names, one a line
    dialogues: Path | None = None  # ernie+dlm: the dialogue file (None: chatterbot's)
    whole_word: bool = False
    long_fraction: float = 0.0
    bf16: bool | None = None  # None: bf16 autocast where the hardware runs it fast
    compile: bool = False
    optimizer: str = "adamw"
    dropout_off_step: int | None = None
    bad_utf8: str = "skip"
    resume: bool = False
    overwrite: bool = False
    max_bad_steps: int = 50
    spike_rollback: float | None = None
    fsdp: bool = False
    progress: bool = True
    tensorboard: bool = False
    heldout: list[Path] = field(default_factory=list)
    eval_batches: int = 20
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. sharing
    generator: Path | None = None
