"""`plmkit pretrain`: corpus -> tokenizer -> token shards -> instances -> trainer.

One pipeline for every family and objective. What differs is declared, never checked by model
name: the family's tokenizer kind, data and optimizer defaults and learning-rate schedule
(`plmkit.models.registry.Family`); the objective's batches, its `stages`, the config fields it
`model_needs` (and `model_fields` for the run's length), and its `corpus`: documents tokenized
into shards, or sentence pairs (`seq2seq`, the Transformer) read as they are.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from plmkit.data.corpus import CorpusStats
from plmkit.data.masking import masking_defaults
from plmkit.data.options import DataOptions
from plmkit.data.parallel import Pair, read_pairs
from plmkit.data.shards import (
    ShardedCorpus,
    fingerprint,
    prepare,
    prepared_directory,
    source_info,
    train_on_corpus,
)
from plmkit.errors import UserError
from plmkit.interop.native import TOKENIZER_DIR
from plmkit.interop.start import (
    SOURCE_CONFIG,
    checkpoint_config,
    copy_tokenizer,
    is_checkpoint,
    load_checkpoint,
    source_configs,
    tokenizer_files,
)
from plmkit.jobs.options import (
    RESUMABLE_CHANGES,
    PretrainArgs,
    default_lr,
    default_warmup,
    parse_entry,
)
from plmkit.jobs.seq2seq import bleu_evaluator, seq2seq_warmup
from plmkit.models import Family, build, get_family, preset_config
from plmkit.objectives import Objective, get_objective
from plmkit.objectives.rtd import GENERATOR_TRAININGS, ReplacedTokenDetection
from plmkit.outputs import claim, fix_modes, keep_until_done, mark
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training import Phase, TrainConfig, Trainer, distributed
from plmkit.training.checkpoint import clean_temporaries, seed_all
from plmkit.training.optim import Schedule, inverse_sqrt

RUN_RECORD = "run.json"  # the options, tokenizer and model config a run was started with
LONG_SEQ = 512  # BERT's second phase (section A.2: 90% of steps at 128, the rest at 512)
MIN_SEQ_LEN = 8  # [CLS] a [SEP] b [SEP] with room for a few tokens


def tokenizer_for(args: PretrainArgs, kind: str, pairs: bool = False) -> Tokenizer:
    """The run's tokenizer: the saved one on resume (a --tokenizer must equal it), the given
    one, or one of `kind` trained now on the corpus (of sentence pairs with `pairs`); a new run
    saves it in `args.out / "tokenizer"`."""
    saved = args.out / TOKENIZER_DIR
    if args.resume and saved.is_dir():
        tok = Tokenizer.load(saved)
        if args.tokenizer is not None and \
                fingerprint(Tokenizer.load(args.tokenizer)) != fingerprint(tok):
            raise UserError(f"--tokenizer {args.tokenizer}: not the tokenizer of the run being "
                            f"resumed ({saved}); resume without --tokenizer")
        return tok
    if is_checkpoint(args.model):
        return checkpoint_tokenizer(args, saved)
    if args.tokenizer is not None:
        tok = Tokenizer.load(args.tokenizer)
    elif prepared_directory(args.corpus) is not None:
        raise UserError(f"--corpus {args.corpus[0]}: a prepared corpus; give the --tokenizer "
                        "it was prepared with")
    else:
        tok = (pair_tokenizer if pairs else corpus_tokenizer)(args, kind)
    tok.save(saved)
    return tok


def corpus_tokenizer(args: PretrainArgs, kind: str) -> Tokenizer:
    """A `kind` tokenizer trained on the sentences of the corpus's documents."""
    stats = CorpusStats()
    tok = train_on_corpus(kind, args.corpus, tokenizer_vocab_size(args),
                          text_field=args.text_field, bad_utf8=args.bad_utf8, stats=stats)
    for message in stats.messages():
        print(message)
    print(f"trained a {kind} tokenizer of {tok.vocab_size} tokens on the corpus")
    return tok


def pair_tokenizer(args: PretrainArgs, kind: str) -> Tokenizer:
    """A joint, cased `kind` tokenizer trained on both sides of the corpus's sentence pairs:
    one vocabulary for source and target, as a shared embedding needs (Vaswani et al. 2017,
    section 3.4)."""
    texts = (text for pair in read_pairs(args.corpus) for text in pair)
    tok = train_tokenizer(kind, texts, tokenizer_vocab_size(args), lowercase=False)
    print(f"trained a joint {kind} tokenizer of {tok.vocab_size} tokens on the pairs")
    return tok


def checkpoint_tokenizer(args: PretrainArgs, saved: Path) -> Tokenizer:
    """The tokenizer of the checkpoint `args.model`, its files copied as they are into `saved`
    (a --tokenizer must be the same one); --tokenizer when the checkpoint has none."""
    source = tokenizer_files(Path(args.model)) or args.tokenizer
    if source is None:
        raise UserError(f"--model {args.model}: holds no tokenizer (tokenizer.json or "
                        "vocab.txt); give the one it was trained with as --tokenizer")
    tok = Tokenizer.load(source)
    if args.tokenizer is not None and fingerprint(Tokenizer.load(args.tokenizer)) != \
            fingerprint(tok):
        raise UserError(f"--tokenizer {args.tokenizer}: not the tokenizer of --model "
                        f"{args.model} ({source}); leave --tokenizer out")
    size = base_config(args).vocab_size
    if tok.vocab_size > size:
        raise UserError(f"{source}: {tok.vocab_size} tokens, more than the {size} embeddings "
                        f"of --model {args.model}")
    copy_tokenizer(source, saved)
    return Tokenizer.load(saved)


def open_corpus(paths: list[Path], tok: Tokenizer, out: Path, args: PretrainArgs,
                pairs: bool, dist: distributed.Dist) -> ShardedCorpus | list[Pair]:
    """What the objective's batches read: the sentence pairs of `paths` with `pairs`, else
    their token shards in `out` (`prepare`: each process of `dist` tokenizes a part)."""
    if pairs:
        return read_pairs(paths)
    return prepare(paths, tok, out, args.bad_utf8, args.text_field, ranks=dist)


def tokenizer_vocab_size(args: PretrainArgs) -> int:
    """--vocab-size, else the family's own: its config's vocabulary size (BERT 30,522 WordPiece,
    RoBERTa 50,265 byte-level BPE, ALBERT 30,000 SentencePiece, ERNIE 18,000 characters)."""
    return args.vocab_size or preset_config(args.model).vocab_size


def base_config(args: PretrainArgs) -> Any:
    """The config the run starts from: its preset's, or its checkpoint's."""
    if is_checkpoint(args.model):
        return checkpoint_config(Path(args.model), args.generator)
    return preset_config(args.model)


def resolve(args: PretrainArgs) -> PretrainArgs:
    """`args` with `--model PRESET[:OBJECTIVE][:KEY=VALUE...]` (`plmkit compare`'s syntax)
    spread into the options it names, and the default learning rate filled in."""
    spec = args.model
    if not is_checkpoint(args.model) and ":" in args.model:
        entry = parse_entry(args.model, option="--model")
        if args.objective and entry.objective and args.objective != entry.objective:
            raise UserError(f"--objective {args.objective} differs from --model "
                            f"{args.model}'s {entry.objective}; give one of them")
        defaults = PretrainArgs(model="", corpus=[], out=Path())
        for key, value in entry.options.items():
            given = getattr(args, key)
            if given != getattr(defaults, key) and given != value:
                raise UserError(f"--{key.replace('_', '-')} {given} differs from --model "
                                f"{args.model}'s {key}={value}; give one of them")
        args = dataclasses.replace(
            args, model=entry.preset, objective=args.objective or entry.objective,
            overrides={**args.overrides, **entry.overrides}, **entry.options)
    if not is_checkpoint(args.model):
        try:  # a bad field or value: refused before any work
            preset_with(args.model, args.overrides)
        except (UserError, ValueError) as e:
            raise UserError(f"--model {spec}: {e}") from None
    schedule = get_family(base_config(args).family).schedule
    return dataclasses.replace(args, lr=default_lr(args, schedule))


def lr_schedule(args: PretrainArgs, family: Family, hidden: int) -> tuple[int, Schedule | None]:
    """The warmup steps and the learning-rate factor of the family's schedule: BERT's linear
    warmup and decay (the Trainer's default, `None`), or "inverse_sqrt", the Transformer's
    d^-0.5 * min(n^-0.5, n * warmup^-1.5) (Vaswani et al. 2017, section 5.3)."""
    if family.schedule == "inverse_sqrt":
        warmup = seq2seq_warmup(args)
        return warmup, inverse_sqrt(hidden, warmup)
    return default_warmup(args), None


def data_options(args: PretrainArgs, family: Family) -> DataOptions:
    """The batch options: the user's, else the family's pretraining defaults (its masking:
    `data/masking.py` `masking_defaults`), else BERT's."""
    given = {"masking": args.masking, "whole_word": args.whole_word or None,
             "input_format": args.input_format, "max_ngram": args.max_ngram,
             "dupe_factor": args.dupe_factor,
             "entities": str(args.entities) if args.entities else None,
             "dialogues": str(args.dialogues) if args.dialogues else None}
    given = {k: v for k, v in given.items() if v is not None}
    defaults = {**family.data_defaults, **masking_defaults(family.name, base_config(args))}
    return DataOptions(batch_size=args.batch_size, **{**defaults, **given})


def phases(objective: Objective, corpus: ShardedCorpus, tok: Tokenizer, args: PretrainArgs,
           options: DataOptions) -> list[Phase]:
    """One phase at --seq-len (one per stage of a staged objective), and one more with
    `long_fraction` of the steps at 512."""
    if not 0.0 <= args.long_fraction < 1.0:
        raise UserError(f"--long-fraction must be in [0, 1), got {args.long_fraction}")
    long_steps = round(args.steps * args.long_fraction)
    stages = getattr(objective, "stages", ({},))
    steps = np.diff(np.linspace(0, args.steps - long_steps, len(stages) + 1).round().astype(int))
    out = [Phase(int(n), objective.batches(corpus, tok, dataclasses.replace(options, **stage),
                                           args.seq_len, args.seed))
           for n, stage in zip(steps, stages, strict=True)]
    if long_steps:
        out.append(Phase(long_steps, objective.batches(corpus, tok, options, LONG_SEQ,
                                                       args.seed + 1)))
    return out


def model_config(preset: str, tok: Tokenizer, longest: int,
                 overrides: dict[str, Any] | None = None,
                 needs: dict[str, Any] | None = None) -> Any:
    """The preset's config sized for the tokenizer (its special ids: an encoder-decoder's targets
    start with [CLS] / <s> and end with [SEP] / </s>) and the longest sequence of the run, with
    what the objective `needs` (the fields the config has: a sentence head, two segment types)
    and `overrides` (config fields) applied."""
    base = preset_config(preset)
    sizes = {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id,
             "bos_token_id": tok.cls_id, "eos_token_id": tok.sep_id,
             "max_positions": max(getattr(base, "max_positions", 0), longest), **(needs or {})}
    sizes = {k: v for k, v in sizes.items() if hasattr(base, k)}
    return preset_with(preset, overrides or {}, **sizes)


def preset_with(preset: str, overrides: dict[str, Any], **sizes: Any) -> Any:
    """The preset's config with `sizes` and then `overrides` (config fields) applied; a
    UserError for a field the config does not have or a value it refuses."""
    base = preset_config(preset)
    if unknown := sorted(set(overrides) - set(vars(base))):
        raise UserError(f"{preset} has no config field {unknown[0]!r}; its fields: "
                        f"{', '.join(sorted(vars(base)))}")
    return preset_config(preset, **{**sizes, **overrides})


def checkpoint_model_config(args: PretrainArgs, needs: dict[str, Any]) -> Any:
    """The checkpoint's config with what the objective `needs` and `args.overrides` applied (a
    change of shape is refused when the weights are loaded)."""
    base = base_config(args)
    if unknown := sorted(set(args.overrides) - set(vars(base))):
        raise UserError(f"--model {args.model} has no config field {unknown[0]!r}")
    run = {**needs, **args.overrides}
    changes = {k: v for k, v in run.items() if hasattr(base, k)}
    return dataclasses.replace(base, **changes) if changes else base


def model_needs(objective: Objective, longest: int) -> dict[str, Any]:
    """The config fields the objective needs of the model: its `model_needs` (a sentence head,
    two segment types) and its `model_fields` at the run's longest sequence (XLNet's cached
    half of each segment)."""
    fields = getattr(objective, "model_fields", None)
    return {**getattr(objective, "model_needs", {}), **(fields(longest) if fields else {})}


def pretrain(args: PretrainArgs) -> list[dict[str, Any]]:
    """Pretrain `args.model` with its objective; returns the logged records.

    Nothing is written into `args.out` before every check has passed: the options, the
    directory (`plmkit.outputs.claim`), and on `--resume` that the run's options, tokenizer and
    prepared data are the ones given. A failure while setting up restores what was there.
    """
    args = resolve(args)
    check_args(args)
    existing = claim(args.out, "pretrain", overwrite=args.overwrite, resume=args.resume)
    if args.resume and not existing:
        raise UserError(f"--out {args.out}: no run to resume")
    if args.resume:
        check_resume(args)
    created = not args.out.exists()
    clean_temporaries(args.out)  # of a run killed while saving
    try:
        with keep_until_done(args.out, replace=existing and not args.resume):
            trainer = trainer_for(args)
    except BaseException:
        if created:  # a failed start leaves no half-made run directory behind
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    return trainer.train(resume=args.resume)


def check_args(args: PretrainArgs) -> None:
    """Refuse numbers that cannot make a run, each in one line naming its option."""
    positive = {"steps": args.steps, "batch-size": args.batch_size, "seq-len": args.seq_len,
                "vocab-size": args.vocab_size, "grad-accum": args.grad_accum,
                "log-every": args.log_every, "eval-batches": args.eval_batches,
                "dupe-factor": args.dupe_factor}
    for name, value in positive.items():
        if value is not None and value < 1:
            raise UserError(f"--{name} must be a positive number, not {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive finite number, not {args.lr}")
    at_least_0 = {"warmup": args.warmup, "max-bad-steps": args.max_bad_steps,
                  "save-every": args.save_every, "eval-every": args.eval_every}  # 0: at the end
    for name, value in at_least_0.items():
        if value is not None and value < 0:
            raise UserError(f"--{name} must be >= 0, not {value}")
    if args.max_ngram is not None and args.max_ngram < 1:
        raise UserError(f"--max-ngram must be >= 1, not {args.max_ngram}")
    if args.spike_rollback is not None and not args.spike_rollback > 1:
        raise UserError(f"--spike-rollback must be a factor > 1, not {args.spike_rollback}")
    if args.seq_len < MIN_SEQ_LEN:
        raise UserError(f"--seq-len {args.seq_len}: below the minimum of {MIN_SEQ_LEN}")
    if is_checkpoint(args.model):
        check_checkpoint_args(args)
    elif args.generator is not None:
        raise UserError(f"--generator {args.generator}: only with --model DIR, an ELECTRA "
                        "discriminator's directory")
    base = base_config(args)
    positions = args.overrides.get("max_positions", getattr(base, "max_positions", None))
    longest = LONG_SEQ if args.long_fraction > 0 else args.seq_len
    if positions is not None and longest > positions:
        more = ("" if is_checkpoint(args.model) else
                f" (more with --model {args.model}::max_positions={longest})")
        flag = f"--seq-len {args.seq_len}" if longest == args.seq_len else "--long-fraction"
        raise UserError(f"{flag}: {args.model} has {positions} positions, the run needs "
                        f"{longest}{more}")


def check_checkpoint_args(args: PretrainArgs) -> None:
    """Refuse, in one line, the options that would contradict the checkpoint to continue."""
    base = base_config(args)
    if args.vocab_size is not None and args.vocab_size != base.vocab_size:
        raise UserError(f"--vocab-size {args.vocab_size}: --model {args.model} has "
                        f"{base.vocab_size} tokens (its tokenizer is used; leave it out)")
    if args.generator is not None and base.family != "electra":
        raise UserError(f"--generator {args.generator}: only an ELECTRA discriminator has a "
                        f"generator, --model {args.model} is {base.family}")


def _record_args(args: PretrainArgs) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(args), default=str))


def write_record(args: PretrainArgs, trainer: Trainer) -> None:
    """`run.json`: what `--resume` checks against, and the `.plmkit` marker of the run (a new
    run's, on the main process)."""
    if args.resume or not trainer.dist.is_main:
        return
    record = {"args": _record_args(args), "corpus": source_info(args.corpus),
              "tokenizer": fingerprint(Tokenizer.load(args.out / TOKENIZER_DIR)),
              "config": dataclasses.asdict(trainer.model.config)}
    (args.out / RUN_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    fix_modes(args.out / RUN_RECORD)
    mark(args.out, "pretrain")


def check_resume(args: PretrainArgs) -> None:
    """Refuse a `--resume` whose options, tokenizer or corpus differ from the run's."""
    path = args.out / RUN_RECORD
    try:
        record = json.loads(path.read_text())
        saved = record["args"]
        tok = Tokenizer.load(args.out / TOKENIZER_DIR)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: cannot read the run's record ({e}); not resumable") from None
    if fingerprint(tok) != record.get("tokenizer"):
        raise UserError(f"{args.out / TOKENIZER_DIR}: not the tokenizer the run was trained with")
    tokenizer_for(args, "")  # a --tokenizer must be the run's
    given = _record_args(args)
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainArgs)}  # older records
    for name, value in given.items():
        if name not in RESUMABLE_CHANGES and saved.get(name, defaults[name]) != value:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {_show(value)} differs from the run's "
                            f"{_show(saved.get(name))} ({path}); resume with the run's options "
                            "or use another --out")
    if source_info(args.corpus) != record.get("corpus"):
        raise UserError(f"--corpus {_show(args.corpus)}: changed since the run started (size or "
                        f"time in {path}); resume on the same files or use another --out")


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return str(value)


def initial_model(args: PretrainArgs, config: Any, main: bool) -> nn.Module:
    """A fresh model of `config`, or the checkpoint's weights in it (a resumed run's weights
    come from its own checkpoint: the model is only built); the main process of a new run from
    a checkpoint says which heads start fresh and keeps the checkpoint's config.json for
    `plmkit export`."""
    if not is_checkpoint(args.model) or args.resume:
        return build(config)
    directory = Path(args.model)
    model, fresh = load_checkpoint(directory, config, args.generator)
    if main:
        sources = source_configs(directory, args.generator)
        (args.out / SOURCE_CONFIG).write_text(json.dumps(sources, indent=2) + "\n")
        fix_modes(args.out / SOURCE_CONFIG)
        print(f"continuing from {directory}" + (f"; not in it, created fresh: "
                                                 f"{', '.join(fresh)}" if fresh else ""))
    return model


def reads_pairs(objective: Objective) -> bool:
    """Whether the objective's corpus holds sentence pairs (`seq2seq`) rather than documents."""
    return getattr(objective, "corpus", "documents") == "pairs"


def check_pair_run(args: PretrainArgs, objective: Objective, family: Family) -> None:
    """A corpus of sentence pairs trains an encoder-decoder (a model that decodes), in one
    process: its held-out pairs are translated by the whole model."""
    if not hasattr(family.model, "decode"):
        raise UserError(f"--objective {objective.name} needs an encoder-decoder model, "
                        f"not {args.model}")
    if args.fsdp or distributed.init().world > 1:
        raise UserError(f"--objective {objective.name} runs on one process (no torchrun, "
                        "no --fsdp)")


def held_out(objective: Objective, held: Any, tok: Tokenizer, options: DataOptions,
             args: PretrainArgs, pairs: bool) -> tuple[Any, Callable | None, int | None]:
    """The held-out batches, an evaluator, and how many batches an evaluation scores:
    `--eval-batches` of the objective's batches; of sentence pairs all of them, in order,
    and the BLEU and chrF of greedy translations (`plmkit.jobs.seq2seq.bleu_evaluator`)."""
    if not held:
        return None, None, args.eval_batches
    batches = objective.batches(held, tok, options, args.seq_len, args.seed + 7)
    if not pairs:
        return batches, None, args.eval_batches
    batches.shuffle = False
    return batches, bleu_evaluator(tok, held), None


def objective_for(args: PretrainArgs, family: Family) -> Objective:
    """The run's objective; ELECTRA's with its --generator-training."""
    name = args.objective or family.default_objective
    if args.generator_training is None:
        return get_objective(name)
    if args.generator_training not in GENERATOR_TRAININGS:
        raise UserError(f"--generator-training {args.generator_training}: expected "
                        f"{' or '.join(GENERATOR_TRAININGS)}")
    if name != ReplacedTokenDetection.name:
        raise UserError(f"--generator-training {args.generator_training}: only for the "
                        f"electra objective, not {name}")
    return ReplacedTokenDetection(generator_training=args.generator_training)  # type: ignore[arg-type]


def trainer_for(args: PretrainArgs) -> Trainer:
    """Everything a pretraining run needs, ready to `train()`."""
    family = get_family(base_config(args).family)
    objective = objective_for(args, family)
    pairs = reads_pairs(objective)
    if pairs:
        check_pair_run(args, objective, family)
    longest = LONG_SEQ if args.long_fraction > 0 else args.seq_len
    dist = distributed.init(args.fsdp)
    with dist.main_first():  # rank 0 makes and saves the tokenizer, the others load it
        tok = (tokenizer_for(args, family.tokenizer, pairs) if dist.is_main
               else Tokenizer.load(args.out / TOKENIZER_DIR))
    corpus = open_corpus(args.corpus, tok, args.out / "data", args, pairs, dist)
    held = args.heldout and open_corpus(args.heldout, tok, args.out / "data-heldout", args,
                                        pairs, dist)
    needs = model_needs(objective, longest)
    config = (checkpoint_model_config(args, needs) if is_checkpoint(args.model)
              else model_config(args.model, tok, longest, args.overrides, needs))
    options = data_options(args, family)
    train = phases(objective, corpus, tok, args, options)
    heldout, evaluator, eval_batches = held_out(objective, held, tok, options, args, pairs)
    warmup, schedule = lr_schedule(args, family, config.hidden_size)
    train_config = TrainConfig(
        steps=args.steps, out_dir=args.out, lr=default_lr(args, family.schedule),
        warmup_steps=warmup, grad_accum=args.grad_accum, bf16=args.bf16, compile=args.compile,
        seed=args.seed, log_every=args.log_every, eval_every=args.eval_every,
        eval_batches=eval_batches, save_every=args.save_every,
        keep_last=args.keep_checkpoints or None, progress=args.progress,
        tensorboard=args.tensorboard, optimizer=args.optimizer,
        dropout_off_step=args.dropout_off_step, max_bad_steps=args.max_bad_steps,
        spike_rollback=args.spike_rollback, clip_norm=family.clip_norm,
        **family.optim_defaults,
    )
    seed_all(args.seed)  # the initial weights (of fresh heads) depend on the seed alone
    trainer = Trainer(initial_model(args, config, dist.is_main), objective, train, train_config,
                      eval_data=heldout, schedule=schedule, evaluator=evaluator, dist=dist)
    write_record(args, trainer)
    return trainer
