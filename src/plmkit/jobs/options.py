"""The options of `plmkit pretrain`: one dataclass that the CLI, `compare`, the demo and the
run record (`run.json`) share. The CLI builds `plmkit pretrain`'s options from it
(`plmkit.cli.add_options`): a field's flag, type and default come from the field, its help
from its metadata (`plmkit.tasks.options.cli`), so a new field is a new option."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.interop.start import is_checkpoint
from plmkit.nn.config import field_types, kind_name
from plmkit.objectives import OBJECTIVES
from plmkit.tasks.options import Registry, cli

# Options that a resumed run may change; every other one must equal the run's (`run.json`).
# `grad_accum` and `fsdp` change with the number of processes (the global batch stays).
RESUMABLE_CHANGES = frozenset({
    "out", "steps", "tokenizer", "save_every", "keep_checkpoints", "eval_every", "log_every",
    "eval_batches", "progress", "resume", "overwrite", "max_bad_steps", "spike_rollback",
    "compile", "fsdp", "grad_accum", "tensorboard"})

SCRATCH_LR = 1e-4  # BERT's (Devlin et al. 2019, section A.2)
SCRATCH_WARMUP = 0.01
# Continued pretraining (Gururangan et al. 2020, "Don't Stop Pretraining", appendix: 6% warmup
# and linear decay; peak lr 5e-4 at batch 2048 for DAPT, 1e-4 at batch 256 for TAPT). At
# plmkit's batch of 32, 5e-5, the learning rate of transformers' run_mlm.py, which continues
# the same checkpoints; the warmup fraction is theirs (and RoBERTa's fine-tuning recipe's).
CONTINUED_LR = 5e-5
CONTINUED_WARMUP = 0.06

CORPUS_HELP = ("comma-separated corpus files: txt (a blank line between documents), jsonl, "
               "parquet, arrow or a datasets save_to_disk directory; txt and jsonl may be "
               ".gz or .zst")


@dataclass
class PretrainArgs:
    """The options of `plmkit pretrain` (see `plmkit pretrain --help`). `model`: a preset, or
    a directory to continue from (a plmkit run or a transformers model; `generator`: an
    ELECTRA discriminator's generator, a transformers directory of its own)."""

    model: str = field(metadata=cli(
        "preset, e.g. bert-tiny, bert-base, or PRESET[:OBJECTIVE][:KEY=VALUE...] as in compare; "
        "or a model directory (a plmkit run or a transformers model) to continue pretraining "
        "from, with its config and tokenizer"))
    corpus: list[Path] = field(metadata=cli(CORPUS_HELP))
    out: Path = field(metadata=cli(
        "the run: the latest model, metrics.jsonl, checkpoints, tokenizer"))
    text_field: str = field(default="text", metadata=cli(
        "the field or column holding the text in jsonl and table corpora (default: text)",
        metavar="NAME"))
    objective: str | None = field(default=None, metadata=cli(
        f"{', '.join(OBJECTIVES)} (default: the model's own)"))
    steps: int = field(default=1000, metadata=cli("optimizer steps"))
    tokenizer: Path | None = field(default=None, metadata=cli(
        "tokenizer directory (default: train one)"))
    vocab_size: int | None = field(default=None, metadata=cli(
        "when training a tokenizer (default: the family's: %(names)s)",
        names="plmkit.jobs.options:family_vocabularies"))
    batch_size: int = field(default=32, metadata=cli("sequences per micro-batch"))
    seq_len: int = field(default=128, metadata=cli("tokens per sequence"))
    seed: int = field(default=0, metadata=cli("seed of weights, data order and masks"))
    lr: float | None = field(default=None, metadata=cli(
        "peak learning rate (default 1e-4; from a checkpoint 5e-5); the Transformer: a factor "
        "of its schedule (default 1)"))
    warmup: int | None = field(default=None, metadata=cli(
        "warmup steps (default 1% of steps, the Transformer 10% up to 4000; from a "
        "checkpoint 6%)"))
    grad_accum: int = field(default=1, metadata=cli(
        "micro-batches per optimizer step (a batch of B x N)"))
    save_every: int = field(default=500, metadata=cli("steps between checkpoints"))
    keep_checkpoints: int = field(default=3, metadata=cli(
        "how many of the newest checkpoints to keep (0: all of them, for learning curves)",
        minimum=0))
    eval_every: int = field(default=100, metadata=cli("steps between evaluations"))
    log_every: int = field(default=10, metadata=cli(
        "steps between metrics.jsonl lines (and progress lines in a log file)"))
    masking: str | None = field(default=None, metadata=cli(
        "static (BERT, dupe factor 10) or dynamic (RoBERTa); default: the model's",
        choices="plmkit.data.options:DataOptions.masking"))
    input_format: str | None = field(default=None, metadata=cli(
        "BERT segments, or RoBERTa packing (default: the model's)",
        choices="plmkit.data.options:DataOptions.input_format"))
    max_ngram: int | None = field(default=None, metadata=cli(
        "mask n-grams up to this length, p(n) ~ 1/n (ALBERT: 3)"))
    dupe_factor: int | None = field(default=None, metadata=cli(
        "static masking: N masked copies of the data, epoch e using copy e % N (default 10, as "
        "BERT)", metavar="N"))
    entities: Path | None = field(default=None, metadata=cli(
        "ernie: entity names masked whole, one a line, instead of People's Daily's; 'jieba': "
        "those of jieba's dictionary",
        metavar="FILE"))
    dialogues: Path | None = field(default=None, metadata=cli(
        "ernie+dlm: dialogues, one turn a line, a blank line between dialogues (default: "
        "chatterbot-corpus's Chinese conversations)", metavar="FILE"))
    whole_word: bool = field(default=False, metadata=cli("whole-word masking"))
    generator_training: str | None = field(default=None, metadata=cli(
        "electra: how the generator learns: mle (its masked-LM loss, the paper's choice) or "
        "adversarial (REINFORCE on the discriminator's loss, Clark et al. 2020 appendix F); "
        "default mle", choices="plmkit.objectives.rtd:GENERATOR_TRAININGS"))
    long_fraction: float = field(default=0.0, metadata=cli(
        "fraction of steps at sequence length 512 (BERT: 0.1)"))
    bf16: bool | None = field(default=None, metadata=cli(
        "bf16 autocast (weights stay float32); default: on where the hardware runs bf16 fast "
        "(CUDA with bf16; CPUs with AVX512-BF16 or AMX whose bf16 matmuls measure >= 1.2x "
        "float32: `plmkit env`)"))
    compile: bool = field(default=False, metadata=cli(
        "torch.compile the forward and backward (on a CPU it pays for tiny models only; "
        "BENCHMARKS.md)"))
    optimizer: str = field(default="adamw", metadata=cli(
        "AdamW, or LAMB for large batches (ALBERT)", choices="plmkit.training.optim:OPTIMIZERS"))
    dropout_off_step: int | None = field(default=None, metadata=cli(
        "from step N on, train without dropout (ALBERT section 4.9)", metavar="N", minimum=0))
    bad_utf8: str = field(default="skip", metadata=cli(
        "corpus lines that are not UTF-8: skip and count them, or stop",
        choices="plmkit.data.corpus:BadUtf8"))
    resume: bool = field(default=False, metadata=cli("continue from the newest checkpoint"))
    overwrite: bool = field(default=False, metadata=cli(
        "replace a non-empty --out (its old contents go once the run has started)"))
    max_bad_steps: int = field(default=50, metadata=cli(
        "stop after N steps in a row with a non-finite loss (0: never)", metavar="N",
        minimum=0))
    spike_rollback: float | None = field(default=None, metadata=cli(
        "on a loss over FACTOR x the recent mean, go back to the last checkpoint",
        metavar="FACTOR"))
    fsdp: bool = field(default=False, metadata=cli(
        "under torchrun: shard the model with FSDP2 (default: DDP)"))
    progress: bool = field(default=True, metadata=cli(  # the option is --no-progress
        "no progress bar (terminal) or progress lines (a file or pipe)"))
    tensorboard: bool = field(default=False, metadata=cli(
        "also write TensorBoard event files to OUT/tensorboard (pip install "
        "'plmkit[tensorboard]')"))
    heldout: list[Path] = field(default_factory=list, metadata=cli(
        "comma-separated held-out files, evaluated every --eval-every steps"))
    eval_batches: int = field(default=20, metadata=cli("held-out batches per evaluation"))
    # model config fields, e.g. sharing: set by --model PRESET::KEY=VALUE, no option of its own
    overrides: dict[str, Any] = field(default_factory=dict)
    generator: Path | None = field(default=None, metadata=cli(
        "with --model DISC (a transformers ELECTRA discriminator): its generator (default: "
        "DISC/generator if there, else a fresh one at the paper's size)", metavar="DIR"))


# The `plmkit pretrain` options that one model of a spec (`PRESET:OBJECTIVE:KEY=VALUE`) may set:
# its recipe. The rest (corpus, out, steps, seed, batch shape, ...) belong to the whole command.
SPEC_OPTIONS = frozenset({
    "masking", "input_format", "max_ngram", "dupe_factor", "whole_word", "entities",
    "dialogues", "generator_training", "long_fraction", "optimizer", "dropout_off_step", "lr",
    "warmup", "bf16"})


@dataclass
class Entry:
    """A model spec, `preset[:objective][:key=value...]` (`plmkit pretrain --model`, an arm of
    `plmkit compare`). A key is a `plmkit pretrain` option of `SPEC_OPTIONS` (masking,
    input_format, max_ngram, whole_word, generator_training, ...) or, failing that, a field of
    the model's config (sharing, embedding_size, generator_size, ...). A control arm of a
    comparison is pretrained for one step."""

    preset: str
    objective: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    control: bool = False

    @property
    def name(self) -> str:
        extra = [f"{k}={v}" for k, v in {**self.options, **self.overrides}.items()]
        name = "_".join([self.preset, *([self.objective] if self.objective else []), *extra])
        return f"control-{name}" if self.control else name


def parse_entry(spec: str, option: str = "--models") -> Entry:
    """`bert-tiny`, `bert-tiny:mlm`, `roberta-tiny:mlm:masking=static`, `albert-tiny::sharing=
    none` or `albert-tiny:sharing=none` (a second part with `=` is a key, the objective the
    family's own) -> Entry (`option`: the command-line option it came from, for errors)."""
    parts = spec.split(":")
    if len(parts) > 1 and "=" in parts[1]:
        parts.insert(1, "")
    objective = parts[1].strip() if len(parts) > 1 else ""
    entry = Entry(parts[0].strip(), objective or None)
    options = {f.name for f in dataclasses.fields(PretrainArgs)}
    for pair in parts[2:]:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{option} {spec!r}: expected key=value, got {pair!r}")
        key = key.replace("-", "_")
        if key in options:
            entry.options[key] = _option_value(key, value.strip(), f"{option} {spec!r}")
        else:
            entry.overrides[key] = _value(value)
    return entry


def _value(text: str) -> Any:
    """A model config value: int, float, true / false, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def _option_value(key: str, text: str, where: str) -> Any:
    """`text` as the value of the `plmkit pretrain` option `key`, of the option's type and among
    its choices; an option of the whole command (`--out`, `--steps`, ...) is refused."""
    flag = "--" + key.replace("_", "-")
    if key not in SPEC_OPTIONS:
        raise UserError(f"{where}: {key} is an option of the command ({flag}), not of one "
                        f"model; the model keys are {', '.join(sorted(SPEC_OPTIONS))} and the "
                        "fields of its config")
    meta = next(f.metadata for f in dataclasses.fields(PretrainArgs) if f.name == key)
    kind = next(t for t in field_types(PretrainArgs)[key] if t is not type(None))
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise UserError(f"{where}: {key}={text}: expected {kind_name(bool)}")
        return text.lower() == "true"
    if kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            raise UserError(f"{where}: {key}={text}: expected {kind_name(kind)}") from None
        if meta.get("minimum") is not None and number < meta["minimum"]:
            raise UserError(f"{where}: {key}={text}: must be at least {meta['minimum']}")
        return number
    if meta.get("choices") and text not in Registry(meta["choices"]):
        raise UserError(f"{where}: {key}={text}: expected one of "
                        f"{', '.join(Registry(meta['choices']))}")
    return text


def family_vocabularies() -> list[str]:
    """Each family's vocabulary size, "bert 30522", the tokenizer size `plmkit pretrain`
    trains for it without --vocab-size (its presets' config)."""
    from plmkit.models import preset_config
    from plmkit.models.registry import FAMILIES

    return [f"{name} {preset_config(next(iter(family.presets))).vocab_size}"
            for name, family in sorted(FAMILIES.items())]


def default_lr(args: PretrainArgs, schedule: str) -> float:
    """--lr, else the base rate of the family's `schedule`: 1 for "inverse_sqrt" (its factor is
    the learning rate itself), else BERT's 1e-4 from scratch or `CONTINUED_LR` from a
    checkpoint."""
    if args.lr is not None:
        return args.lr
    if schedule == "inverse_sqrt":
        return 1.0
    return CONTINUED_LR if is_checkpoint(args.model) else SCRATCH_LR


def default_warmup(args: PretrainArgs) -> int:
    """--warmup, else 1% of the steps from scratch or 6% from a checkpoint."""
    if args.warmup is not None:
        return args.warmup
    share = CONTINUED_WARMUP if is_checkpoint(args.model) else SCRATCH_WARMUP
    return int(args.steps * share)
