"""`plmkit compare`: the run itself. Each arm is pretrained once per pretraining seed under the
budget, scored on the fixed held-out mask set at `CURVE_POINTS` points of its run (the
learning curve), then probed and fine-tuned on each task; a 1-step control arm runs beside.

Everything lands in OUT, with OUT/compare-setup.json naming what must not change between two
calls on one OUT (corpus, budget, batch, vocabulary, ...). A second call reuses the tokenizer,
the held-out batches, each finished pretraining, probe and fine-tuning, and resumes an
interrupted pretraining from its newest checkpoint; arms, tasks and seeds may be added. With
`records`, finished seeds are also kept where they outlive OUT (`records`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.flop_counter import FlopCounterMode

from plmkit.data.shards import prepare, train_on_corpus
from plmkit.errors import UserError
from plmkit.jobs.compare import records as kept
from plmkit.jobs.compare.downstream import finetune_seeds, majority_baseline, prepare_task, probe
from plmkit.jobs.compare.heldout import HeldOut
from plmkit.jobs.compare.report import write_report
from plmkit.jobs.options import Entry, PretrainArgs, parse_entry
from plmkit.jobs.pretrain import trainer_for
from plmkit.outputs import user_entries, written_in_place
from plmkit.tasks.files import DEFAULT_COLUMNS
from plmkit.tasks.options import FinetuneOptions

BUDGETS = ("steps", "tokens", "flops", "minutes")
STATE = "compare.json"  # per arm: flops per step and steps; per seed: done
SETUP = "compare-setup.json"
CURVE_POINTS = 8  # held-out evaluations per pretraining run (and one at its last step)
POLL_SECONDS = 60.0  # between two looks for the records of seeds other processes hold


@dataclass
class CompareArgs:
    """The options of `plmkit compare`. `control`: "auto" (the first model's preset and
    objective, 1 step), a model spec (1 step), or None (no control arm). `claims`: "A > B"
    with A and B as given in `models` (or "control")."""

    models: list[str]
    corpus: list[Path]
    out: Path
    budget: tuple[str, float]
    tasks: list[str] = field(default_factory=lambda: ["sentiment-en"])
    seeds: int = 3  # fine-tuning seeds per pretraining seed and task
    pretrain_seeds: int = 3
    control: str | None = "auto"
    claims: list[str] = field(default_factory=list)
    heldout: list[Path] = field(default_factory=list)
    heldout_batches: int = 16
    tokenizer: Path | None = None
    tokenizer_kind: str = "wordpiece"  # of the shared tokenizer trained when none is given
    vocab_size: int = 8000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    finetune_examples: int = 2000
    finetune_epochs: float = 2.0
    finetune_lr: float | None = None  # None: by model size (tasks.options.default_lr)
    finetune_bf16: bool = False  # fine-tuning, its evaluations and the probes in bf16 autocast
    # the columns of the user's classify files (TASK:TRAIN:DEV), as finetune's options
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    records: Path | None = None  # where finished seeds are kept beyond OUT (`records`)
    wait: bool = True  # for the seeds other processes sharing `records` hold, then report
    overwrite: bool = False
    progress: bool = False


def compare(args: CompareArgs) -> dict[str, Any] | None:
    """Run the whole comparison (see the module docstring); returns results.json's content, or
    None where `args.wait` is off and other processes still hold seeds (no report yet)."""
    entries = check_args(args)
    claims = [parse_claim(c, args, entries) for c in args.claims]
    replace = args.overwrite and args.out.is_dir() and bool(user_entries(args.out))
    wanted = json.loads(json.dumps(setup(args)))
    if args.records is not None:
        kept.check_records(args.records, wanted, args.out)
    # a refusal up to the first pretraining leaves OUT as it was (with --overwrite: the old run)
    with written_in_place(args.out, "compare", replace):
        claim_setup(args)
        tasks = [prepare_task(t, args.out, args.finetune_examples) for t in args.tasks]
        tokenizer = shared_tokenizer(args, wanted)
        prepare(args.corpus, tokenizer, args.out / "data")  # one tokenized corpus for every run
        heldout = HeldOut(args.heldout, tokenizer, args.out / "heldout", args.batch_size,
                          args.seq_len, args.heldout_batches) if args.heldout else None
        for entry in entries:  # every arm checked, its steps fixed, before any trains
            checked_arm_steps(entry, args, tokenizer)
        if args.records is not None:
            with kept.locked(args.records):
                kept.keep_arms(args.records,
                               {e.name: arm_steps(e, args, tokenizer) for e in entries})
    if (arms := run_arms(entries, args, tokenizer, tasks, heldout)) is None:
        return None
    baselines = {key: b for key, files in tasks
                 if (b := majority_baseline(key, files, finetune_options(args))) is not None}
    return write_report(arms, claims, {**setup(args), "majority_baseline": baselines}, args.out)


def check_args(args: CompareArgs) -> list[Entry]:
    """The arms, the control last; a UserError for a bad budget, seed count or model list."""
    kind, amount = args.budget
    if kind not in BUDGETS or amount <= 0:
        raise UserError(f"--budget takes one of {', '.join(BUDGETS)} and a positive number, "
                        f"got {kind} {amount:g}")
    for option, value in (("--seeds", args.seeds), ("--pretrain-seeds", args.pretrain_seeds),
                          ("--heldout-batches", args.heldout_batches),
                          ("--batch-size", args.batch_size), ("--seq-len", args.seq_len),
                          ("--vocab-size", args.vocab_size)):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    for option, number in (("--lr", args.lr), ("--finetune-epochs", args.finetune_epochs),
                           ("--finetune-lr", args.finetune_lr)):
        if number is not None and not (math.isfinite(number) and number > 0):
            raise UserError(f"{option} must be a positive number, got {number:g}")
    if args.finetune_examples < 0:
        raise UserError(f"--finetune-examples must be 0 (all) or more, got "
                        f"{args.finetune_examples}")
    if missing := next((p for p in [*args.corpus, *args.heldout] if not p.is_file()), None):
        raise UserError(f"{missing}: no such file")
    entries = [parse_entry(m) for m in args.models]
    if not entries:
        raise UserError("--models names no model")
    if len({e.name for e in entries}) != len(entries):
        raise UserError("--models lists the same model twice")
    if args.control is not None:
        spec = args.models[0] if args.control == "auto" else args.control
        entries.append(dataclasses.replace(parse_entry(spec), control=True))
    return entries


def parse_claim(claim: str, args: CompareArgs, entries: list[Entry]) -> tuple[str, str]:
    """"A > B" -> the two arms' names (A and B: model specs of --models, or `control`)."""
    names = {spec.strip(): parse_entry(spec).name for spec in args.models}
    names.update({e.name: e.name for e in entries})
    if entries[-1].control:
        names["control"] = entries[-1].name
    left, sep, right = claim.partition(">")
    arms = names.get(left.strip()), names.get(right.strip())
    if not sep or None in arms or arms[0] == arms[1]:
        raise UserError(f"--claim {claim!r}: expected 'A > B' with two different models of "
                        f"--models (or control); they are {', '.join(names)}")
    return arms  # type: ignore[return-value]


def setup(args: CompareArgs) -> dict[str, Any]:
    """What must stay the same for two calls to share an OUT (the task file columns and bf16
    fine-tuning only when named, so that runs from before they could be keep their OUT)."""
    tokenizer = args.tokenizer or f"{args.tokenizer_kind}, at most {args.vocab_size} tokens"
    columns = finetune_options(args).columns()
    named = {"columns": dataclasses.asdict(columns)} if columns != DEFAULT_COLUMNS else {}
    if args.finetune_bf16:
        named["finetune_bf16"] = True
    return {"corpus": [str(p) for p in args.corpus], "heldout": [str(p) for p in args.heldout],
            "heldout_batches": args.heldout_batches, "tokenizer": str(tokenizer),
            "budget": list(args.budget), "batch_size": args.batch_size, "seq_len": args.seq_len,
            "lr": args.lr, "finetune_examples": args.finetune_examples,
            "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr, **named}


def claim_setup(args: CompareArgs) -> None:
    """Take OUT for this setup: refuse a non-empty OUT that is not a compare run of the same
    setup (with `overwrite`, `compare` has moved its contents aside)."""
    out, wanted = args.out, json.loads(json.dumps(setup(args)))
    saved_file = out / SETUP
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        if diff := kept.setup_difference(saved, wanted):
            raise UserError(f"{out}: a compare run with {diff} {saved.get(diff)}, not "
                            f"{wanted.get(diff)}; give another --out, or --overwrite to replace "
                            "it")
        return
    if out.exists() and user_entries(out):
        raise UserError(f"{out}: not empty and not a compare run; give another --out, or "
                        "--overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    saved_file.write_text(json.dumps(wanted, indent=2) + "\n")


def shared_tokenizer(args: CompareArgs, wanted: dict[str, Any]) -> Path:
    """One vocabulary for every model: the given one, or one of `tokenizer_kind` (WordPiece;
    `char` for Chinese) trained on the corpus; with `records`, the one kept there (the first
    of the calls sharing them trains it, and takes the records for setup `wanted`)."""
    if args.records is None:
        return args.tokenizer or trained_tokenizer(args)
    with kept.locked(args.records):
        kept.check_records(args.records, wanted, args.out)  # again: another call may be first
        if args.tokenizer is None:
            kept.restore_tokenizer(args.records, args.out / "tokenizer")
        path = args.tokenizer or trained_tokenizer(args)
        kept.start_records(args.records, wanted, None if args.tokenizer else path)
    return path


def trained_tokenizer(args: CompareArgs) -> Path:
    """OUT's tokenizer, trained on the corpus unless there."""
    path = args.out / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        train_on_corpus(args.tokenizer_kind, args.corpus, args.vocab_size).save(path)
    return path


def pretrain_args(entry: Entry, args: CompareArgs, tokenizer: Path, steps: int, out: Path,
                  seed: int = 0) -> PretrainArgs:
    """The `plmkit pretrain` options of one entry: compare's learning rate and a warmup of a
    tenth of the steps unless the entry sets its own; bf16 autocast where the hardware runs it
    fast (as `plmkit pretrain`), unless the entry says `bf16=false`."""
    recipe = {"lr": args.lr, "warmup": max(1, steps // 10), **entry.options}
    return PretrainArgs(
        model=entry.preset, objective=entry.objective, corpus=args.corpus, out=out,
        steps=steps, tokenizer=tokenizer, batch_size=args.batch_size, seq_len=args.seq_len,
        seed=seed, save_every=max(1, steps // CURVE_POINTS),  # an interruption loses <= 1/8
        eval_every=max(1, steps // CURVE_POINTS), log_every=max(1, steps // 50),
        progress=args.progress, overrides=entry.overrides, **recipe)


def step_flops(entry: Entry, args: CompareArgs, tokenizer: Path, out: Path) -> float:
    """Model FLOPs of one training step of `entry`."""
    return training_step_flops(pretrain_args(entry, args, tokenizer, 1, out))


def training_step_flops(run: PretrainArgs) -> float:
    """Model FLOPs of one training step of `run` (forward + backward of its objective, one
    batch of its first phase)."""
    trainer = trainer_for(run)
    batch = next(iter(trainer.phases[0].source))
    trainer.model.train()
    with FlopCounterMode(display=False) as counter:
        loss = trainer.objective(trainer.model, batch)[0]
        loss.backward()
    return float(counter.get_total_flops())


def step_seconds(entry: Entry, args: CompareArgs, tokenizer: Path, out: Path,
                 steps: int = 4) -> float:
    """Median wall seconds of a training step (forward, backward, optimizer; in the run's
    precision), after a warm-up."""
    trainer = trainer_for(pretrain_args(entry, args, tokenizer, steps, out))
    source = iter(trainer.phases[0].source)
    times = []
    for _ in range(steps):
        batch = next(source)
        start = time.perf_counter()
        trainer.forward_backward([batch])
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def budget_steps(entry: Entry, args: CompareArgs, tokenizer: Path, out: Path,
                 flops: float) -> int:
    """Optimizer steps that the budget buys this entry."""
    kind, amount = args.budget
    per_step = {"steps": 1.0, "tokens": float(args.batch_size * args.seq_len), "flops": flops}
    if kind == "minutes":
        return max(1, int(amount * 60 / step_seconds(entry, args, tokenizer, out)))
    return max(1, int(amount / per_step[kind]))


def arm_steps(entry: Entry, args: CompareArgs, tokenizer: Path) -> dict[str, Any]:
    """FLOPs per step and steps of `entry` (measured once, kept in its folder)."""
    folder = args.out / "runs" / entry.name
    state_file = folder / STATE
    if not state_file.is_file() and args.records is not None and (
            state := kept.arm_state(args.records, entry.name)) is not None:
        folder.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state) + "\n")
    if not state_file.is_file():
        created = not folder.exists()
        try:
            flops = step_flops(entry, args, tokenizer, run_folder(folder / "probe", args))
            steps = 1 if entry.control else budget_steps(entry, args, tokenizer,
                                                         folder / "probe", flops)
        except BaseException:  # a refused arm leaves nothing behind
            shutil.rmtree(folder if created else folder / "probe", ignore_errors=True)
            raise
        shutil.rmtree(folder / "probe")
        state_file.write_text(json.dumps({"flops_per_step": flops, "steps": steps}) + "\n")
    return json.loads(state_file.read_text())


def checked_arm_steps(entry: Entry, args: CompareArgs, tokenizer: Path) -> None:
    """`arm_steps`, its refusal naming the arm and the option that gave it."""
    try:
        arm_steps(entry, args, tokenizer)
    except UserError as e:
        option = "--control" if entry.control else "--models"
        raise UserError(f"{option} {entry.name}: {e}") from None


def run_arms(entries: list[Entry], args: CompareArgs, tokenizer: Path,
             tasks: list[tuple[str, dict[str, Path]]], heldout: HeldOut | None
             ) -> list[dict[str, Any]] | None:
    """Each arm's record: every pretraining seed of every arm pretrained, scored, probed and
    fine-tuned in turn (or its kept record taken). A seed that another process sharing the
    records holds is passed by, and its record awaited once nothing else is left (None
    instead, without `args.wait`)."""
    jobs = [(entry, seed) for entry in entries for seed in range(args.pretrain_seeds)]
    done: dict[tuple[str, int], dict[str, Any]] = {}
    told: set[tuple[str, int]] = set()
    while len(done) < len(jobs):
        waiting = [(e, s) for e, s in jobs if (e.name, s) not in done]
        for entry, seed in waiting:
            if (record := seed_result(entry, seed, args, tokenizer, tasks, heldout, told)):
                done[entry.name, seed] = record
        if all((e.name, s) not in done for e, s in waiting):
            if not args.wait:
                return None
            time.sleep(POLL_SECONDS)
    return [arm_record(entry, args, tokenizer,
                       [done[entry.name, s] for s in range(args.pretrain_seeds)])
            for entry in entries]


def seed_result(entry: Entry, seed: int, args: CompareArgs, tokenizer: Path,
                tasks: list[tuple[str, dict[str, Path]]], heldout: HeldOut | None,
                told: set[tuple[str, int]]) -> dict[str, Any] | None:
    """The record of `entry`'s pretraining `seed`: kept, or made now; None while another
    process holds it (said once on stderr, `told` keeping which)."""
    if args.records is None:
        return train_seed(entry, seed, args, tokenizer, tasks, heldout)
    with kept.claim(args.records, entry.name, seed) as holder:
        record = kept.seed(args.records, entry.name, seed)
        if record is not None and covers(record, tasks, args.seeds):
            return record
        if holder is not None:
            if (entry.name, seed) not in told:
                told.add((entry.name, seed))
                print(f"plmkit compare: {entry.name} seed {seed} is held by {holder} (--records "
                      f"{args.records})", file=sys.stderr)
            return None
        record = train_seed(entry, seed, args, tokenizer, tasks, heldout)
        kept.keep_seed(args.records, entry.name, seed, record)
        return record


def train_seed(entry: Entry, seed: int, args: CompareArgs, tokenizer: Path,
               tasks: list[tuple[str, dict[str, Path]]], heldout: HeldOut | None
               ) -> dict[str, Any]:
    """Pretrain `entry` with `seed` (or take the finished run in OUT), then score it."""
    state = arm_steps(entry, args, tokenizer)
    objective = entry.objective or model_objective(entry.preset)
    out = pretrain_seed(entry, args, tokenizer, state["steps"], seed, heldout, objective)
    return seed_record(out, seed, state["flops_per_step"], tasks, args)


def arm_record(entry: Entry, args: CompareArgs, tokenizer: Path, seeds: list[dict[str, Any]]
               ) -> dict[str, Any]:
    """results.json's record of one arm, from its pretraining `seeds`' records."""
    state = arm_steps(entry, args, tokenizer)
    return {"model": entry.name, "preset": entry.preset,
            "objective": entry.objective or model_objective(entry.preset),
            "control": entry.control, "params": seeds[0]["params"], "steps": state["steps"],
            "tokens": state["steps"] * args.batch_size * args.seq_len,
            "flops": state["steps"] * state["flops_per_step"],
            "flops_per_step": state["flops_per_step"], "pretrain_seeds": seeds}


def covers(record: dict[str, Any], tasks: list[tuple[str, dict[str, Path]]], seeds: int
           ) -> bool:
    """Whether a kept seed record holds `seeds` fine-tunings on each of `tasks` (one kept by a
    call with fewer tasks or other seeds is done again)."""
    return all(len(record["finetune_seeds"].get(task, [])) == seeds for task, _ in tasks)


def pretrain_seed(entry: Entry, args: CompareArgs, tokenizer: Path, steps: int, seed: int,
                  heldout: HeldOut | None, objective: str) -> Path:
    """Pretrain `entry` with `seed` (resuming an interrupted run), scored on the held-out
    batches along the way; its folder."""
    out = args.out / "runs" / entry.name / f"seed-{seed}"
    if not (run_folder(out, args) / STATE).is_file():
        run = pretrain_args(entry, args, tokenizer, steps, out, seed)
        run.resume = (out / "checkpoints").is_dir()  # an interrupted earlier call
        trainer = trainer_for(run)
        trainer.evaluator = heldout.evaluator(objective) if heldout else None
        trainer.train(resume=run.resume)
        (out / STATE).write_text(json.dumps({"done": True, "bf16": trainer.bf16}) + "\n")
    return out


def run_folder(folder: Path, args: CompareArgs) -> Path:
    """`folder`, made, its `data` linked to OUT/data: the corpus is tokenized once."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data").exists():
        (folder / "data").symlink_to(os.path.relpath(args.out / "data", folder))
    return folder


def seed_record(out: Path, seed: int, flops_per_step: float,
                tasks: list[tuple[str, dict[str, Path]]], args: CompareArgs) -> dict[str, Any]:
    """One pretraining seed of an arm: its parameter count, precision (bf16 autocast or not:
    seeds kept in `records` may come from other machines), learning curve and scores
    (`heldout/KEY`, `probe/TASK`, `finetune/TASK`: the mean over fine-tuning seeds, listed
    apart)."""
    import plmkit

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    curve = [{"step": r["step"], "flops": r["step"] * flops_per_step, "loss": r["loss"],
              **{k.removeprefix("eval_"): v for k, v in r.items() if k.startswith("eval_")}}
             for r in (evals or records)]
    scores = {f"heldout/{k}": v for k, v in curve[-1].items()
              if evals and k not in ("step", "flops", "loss")}
    options = finetune_options(args)
    finetuned = {}
    for task, files in tasks:
        if (probed := probe(out, task, files, options)) is not None:
            scores[f"probe/{task}"] = probed
        finetuned[task] = finetune_seeds(out, task, files, args.seeds, options)
        scores[f"finetune/{task}"] = statistics.mean(finetuned[task])
    params = sum(p.numel() for p in plmkit.load(out).parameters())
    bf16 = json.loads((out / STATE).read_text()).get("bf16")  # None: a run from before it said
    return {"seed": seed, "run": str(out), "params": params, "bf16": bf16,
            "final_loss": records[-1]["loss"], "curve": curve,
            "scores": scores, "finetune_seeds": finetuned}


def model_objective(preset: str) -> str:
    """The default objective of `preset`'s family."""
    from plmkit.models import get_family, preset_config

    return get_family(preset_config(preset).family).default_objective


def finetune_options(args: CompareArgs) -> FinetuneOptions:
    """The fine-tuning options of every arm (the seed aside)."""
    return FinetuneOptions(lr=args.finetune_lr, epochs=args.finetune_epochs,
                           bf16=args.finetune_bf16, progress=args.progress,
                           text_field=args.text_field,
                           text_pair_field=args.text_pair_field, label_field=args.label_field)
