"""One objective-agnostic trainer: `loss, metrics = objective(model, batch)`, nothing more.

Batch sources. Training data is an iterable of `dict[str, Tensor]` batches, or a list of
`Phase(steps, source)` run one after the other (BERT: 90% of the steps at length 128, 10% at
512); the step count is global. A source that also has `state_dict()` / `load_state_dict()`
(returning tensors and primitives) resumes at its exact position (so does an objective with
state, such as XLNet's memory); a plain iterable restarts
from its beginning on resume (with a warning). When a source is exhausted it is iterated again.

Progress (`plmkit.training.progress`): a tqdm bar on a terminal, else a plain line (step, loss,
tokens/s, ETA) on stderr at logged steps; with `config.tensorboard`, TensorBoard event files of
the logged values in `out_dir/tensorboard`.

metrics.jsonl. One JSON object per logged step (every `log_every` steps, every `eval_every`
steps and the last step): `step`, `loss`, `lr`, `tokens_per_s`, `elapsed_s`, `grad_norm`,
`skipped_steps` and the objective's metrics, averaged over the steps since the previous line.
Held-out results go in the same object, as keys prefixed `eval_` (`eval_loss`, ...). The sums
behind those averages are part of each checkpoint, so a run resumed between two lines writes
the lines an uninterrupted run writes (all but the clock's `tokens_per_s` and `elapsed_s`).

Faults. A step whose loss or gradient is not finite is skipped (no update) and counted
(`skipped_steps`); `config.max_bad_steps` such steps in a row stop the run with a `Diverged`
error, the checkpoints untouched. With `config.spike_rollback = F`, a loss over F times the mean
of the last good ones restores the newest checkpoint, except the data position: the batches
since are skipped (PaLM, section 5.1); `rollbacks` counts them. A first SIGINT or SIGTERM ends
the current step, saves a checkpoint and raises `Interrupted`.

Distributed runs (`plmkit.training.distributed`): the trainer calls the objective through
`dist.wrap`, averages the logged values over processes, and rank 0 alone writes files.

Held-out evaluation. `eval_data` gives the objective's mean loss and metrics; an `evaluator`
(model -> metrics, e.g. a task's official scores on an eval file) adds its own. With
`config.best_metric` set (a key of those metrics, higher is better), `out_dir` holds the best
model so far instead of the latest, and training stops after `config.patience` evaluations
without improvement (0: never).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from plmkit.errors import Interrupted, UserError
from plmkit.nn.dropout import disable_dropout
from plmkit.training import modeldir
from plmkit.training.checkpoint import (
    CHECKPOINTS,
    TRAINER_STATE,
    BadCheckpoint,
    SaveModel,
    check_config,
    list_checkpoints,
    load_latest,
    load_weights,
    read_trainer_state,
    rng_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
)
from plmkit.training.distributed import Dist, RankSlice
from plmkit.training.optim import OPTIMIZERS, Schedule, build_optimizer, linear_warmup_decay
from plmkit.training.precision import fast_bf16
from plmkit.training.prefetch import Prefetch, pins_memory
from plmkit.training.progress import Progress, TensorBoard

Batch = dict[str, Tensor]
Metrics = Mapping[str, float | Tensor]
Objective = Callable[[nn.Module, Batch], tuple[Tensor, Metrics]]

METRICS_FILE = "metrics.jsonl"
SPIKE_HISTORY = 20  # good losses whose mean a spike is measured against
SPIKE_MIN_HISTORY = 5  # no spike is called before this many


class Diverged(UserError):
    """`max_bad_steps` steps in a row had a non-finite loss or gradient."""


@dataclasses.dataclass
class Phase:
    """Train on `source` for `steps` optimizer steps."""

    steps: int
    source: Iterable[Batch]


@dataclasses.dataclass
class TrainConfig:
    """How to train. `eval_every=0`, `save_every=0`: only at the end; `keep_last=None`: all.

    `eval_batches=None` evaluates the whole held-out source (which must then be finite).
    `device=None` picks CUDA when available. `progress` shows a tqdm bar on a terminal, plain
    lines elsewhere; `tensorboard` writes event files beside metrics.jsonl.
    `optimizer`: "adamw" or "lamb" (`plmkit.training.optim`); `lr_of`: the learning rates of
    some parameters by name (the others take `lr`; all follow the schedule).
    `dropout_off_step`: from that step on, every dropout in the model is 0 (ALBERT section
    4.9); it follows from the step number alone, so a resumed run does the same.
    """

    steps: int
    out_dir: str | os.PathLike[str]
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    grad_accum: int = 1
    clip_norm: float | None = 1.0
    bf16: bool | None = False  # bf16 autocast; None: where the device runs it fast (precision.py)
    compile: bool = False  # torch.compile the objective's forward and backward (BENCHMARKS.md)
    prefetch: int = 2  # batches made ahead in a background thread (prefetch.py); 0: inline
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000
    eval_batches: int | None = None
    save_every: int = 1000
    keep_last: int | None = 3
    device: str | None = None
    progress: bool = True
    tensorboard: bool = False
    checkpoints: bool = True  # False: no resumable checkpoints (short runs, e.g. fine-tuning)
    best_metric: str | None = None
    patience: int = 0
    optimizer: str = "adamw"
    lr_of: Mapping[str, float] = dataclasses.field(default_factory=dict)
    dropout_off_step: int | None = None
    max_bad_steps: int = 50  # non-finite steps in a row that stop the run (0: never)
    spike_rollback: float | None = None  # roll back when loss > this x the recent mean

    def __post_init__(self) -> None:
        for name in ("steps", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every", "patience", "max_bad_steps",
                     "prefetch"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose from "
                            f"{', '.join(OPTIMIZERS)}")
        if self.dropout_off_step is not None and self.dropout_off_step < 0:
            raise UserError(f"dropout_off_step must not be negative, got {self.dropout_off_step}")
        if self.keep_last is not None and self.keep_last < 1:
            raise UserError(f"keep_last must be at least 1 (or None), got {self.keep_last}")
        if self.spike_rollback is not None and self.spike_rollback <= 1:
            raise UserError(f"spike_rollback must be over 1, got {self.spike_rollback}")


class Trainer:
    """Trains `model` on `objective` over `train_data`; see the module docstring.

    `schedule` is a LambdaLR factor (see `plmkit.training.optim`), by default BERT's
    `linear_warmup_decay(config.warmup_steps, config.steps)`. `dist`: this process's place in
    a `torchrun` launch (`plmkit.training.distributed.init()`); it also picks the device.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_data: Iterable[Batch] | Sequence[Phase],
        config: TrainConfig,
        eval_data: Iterable[Batch] | None = None,
        save_model: SaveModel = modeldir.save_model,
        schedule: Schedule | None = None,
        evaluator: Callable[[nn.Module], Mapping[str, float]] | None = None,
        dist: Dist | None = None,
    ) -> None:
        self.config = config
        self.dist = dist or Dist()
        self.phases = _as_phases(train_data, config.steps)
        if self.dist.world > 1:
            self.phases = [Phase(p.steps, RankSlice(p.source, self.dist.rank, self.dist.world))
                           for p in self.phases]
        self.objective = objective
        self.eval_data = eval_data
        self.evaluator = evaluator
        self.save_model = save_model
        self.out_dir = Path(config.out_dir)
        default_device = self.dist.device() if dist else None
        self.device = torch.device(config.device or default_device or
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        # Pinned batches (made so by the prefetch thread) copy to the device asynchronously.
        self.pin = bool(config.prefetch) and pins_memory(self.device)
        if config.prefetch:
            self.phases = [Phase(p.steps, Prefetch(p.source, config.prefetch, self.pin))
                           for p in self.phases]
        self.model = model.to(self.device)
        self.bf16 = fast_bf16(self.device) if config.bf16 is None else config.bf16
        self.wrapped = self.dist.wrap(self.model, self._call_objective)
        if config.compile:
            self.wrapped.compile()  # in place: the DDP / FSDP type and state-dict keys stay
        self.optimizer = build_optimizer(
            model, config.lr, config.weight_decay, config.betas, config.eps, config.optimizer,
            config.lr_of,
        )
        factor = schedule or linear_warmup_decay(config.warmup_steps, config.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.step = 0
        self.skipped_steps = 0
        self.bad_in_row = 0  # non-finite steps since the last good one
        self.rollbacks = 0
        self.recent_losses: list[float] = []  # the last good losses (spike_rollback)
        self.best: dict[str, Any] | None = None  # the best evaluation record (best_metric)
        self.bad_evals = 0  # evaluations since the best one
        self._elapsed_before = 0.0
        self._started = time.perf_counter()
        self._iter: tuple[int, Iterator[Batch]] | None = None
        self.meter = _Meter(running=False)  # the sums since the last metrics.jsonl line

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS_FILE

    def train(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train up to `config.steps` (from the newest checkpoint if `resume`); return the logs."""
        self._start(resume)
        cfg = self.config
        records: list[dict[str, Any]] = []
        main = self.dist.is_main
        progress = Progress(cfg.steps, self.step, show=cfg.progress and main)
        board = TensorBoard(self.out_dir, self.step) if cfg.tensorboard and main else None
        self.model.train()
        self.meter.start_clock()
        with progress, _signals_caught() as caught, board or contextlib.nullcontext():
            while self.step < cfg.steps and not self.stopped:
                rolled_back = not self._train_step(self.meter)
                progress.update(self.step)
                if rolled_back:  # to a checkpoint
                    records[:] = [r for r in records if r["step"] <= self.step]
                    self.meter.start_clock()
                    continue
                if self._due(cfg.log_every) or self._eval_due() or self._last():
                    records.append(self._log(self.meter))
                    self.meter = _Meter()
                    progress.logged(records[-1])
                    if board is not None:
                        board.add(records[-1])
                self._save_when_due(caught)
        return records

    def _train_step(self, meter: _Meter) -> bool:
        """One optimizer step (skipped when not finite); False if a loss spike rolled
        training back instead."""
        cfg = self.config
        if cfg.dropout_off_step is not None and self.step >= cfg.dropout_off_step:
            disable_dropout(self.model)
        batches = [self._next_batch() for _ in range(cfg.grad_accum)]
        meter.tokens += sum(_count_tokens(b) for b in batches)
        loss, metrics = self._reduce(*self.forward_backward(batches))
        if self._is_spike(loss):
            self._roll_back(float(loss))
            return False
        self._update(loss, metrics, meter)
        return True

    def _save_when_due(self, caught: list[int]) -> None:
        """Checkpoint every `save_every` steps, at the end, on early stopping, and after a
        signal on any process (then raise `Interrupted`)."""
        interrupted = self.dist.any(bool(caught))
        if not (self._due(self.config.save_every) or self._last() or self.stopped
                or interrupted):
            return
        self.meter.stop_clock()  # the save is no part of the interval's throughput
        path = self.save()
        self.meter.start_clock()
        if interrupted:
            signum = signal.Signals(caught[0] if caught else signal.SIGTERM)
            raise Interrupted(128 + signum.value, f"{signum.name} at step {self.step}: saved "
                              f"{path}; continue with --resume")

    def forward_backward(self, batches: Sequence[Batch]) -> tuple[Tensor, dict[str, Any]]:
        """Forward and backward over micro-batches, each loss scaled by 1/len(batches).

        Gradients accumulate in `.grad`; returns the mean loss and the mean metrics, still
        tensors (no host sync).
        """
        losses = []
        sums: dict[str, Any] = {}
        for i, batch in enumerate(batches):
            with self.dist.sync_gradients(self.wrapped, sync=i == len(batches) - 1):
                loss, metrics = self._forward(batch)
                (loss / len(batches)).backward()
            losses.append(loss.detach().float())
            _add(sums, metrics)
        return torch.stack(losses).mean(), {k: v / len(batches) for k, v in sums.items()}

    @property
    def stopped(self) -> bool:
        """Whether early stopping ended training (`config.patience` evaluations without gain)."""
        return 0 < self.config.patience <= self.bad_evals

    @torch.no_grad()
    def evaluate(self) -> dict[str, float | None]:
        """Held-out results, keys `eval_*`: the mean loss and metrics over
        `config.eval_batches` batches of `eval_data`, and the `evaluator`'s metrics.

        Runs with the RNGs seeded by `config.seed` (the same masks every time) and restores
        them, and the held-out source's position, afterwards: evaluating never changes training.
        """
        if self.eval_data is None and self.evaluator is None:
            raise ValueError("no eval_data or evaluator was given")
        saved_rng, saved_data = rng_state(), _state_of(self.eval_data)
        seed_all(self.config.seed)
        self.model.eval()
        results: dict[str, float | None] = {}
        try:
            if self.eval_data is not None:
                results.update(self._eval_objective(self.eval_data))
            if self.evaluator is not None:
                results.update(self.evaluator(self.model))
        finally:
            self.model.train()
            set_rng_state(saved_rng)
            if saved_data is not None:
                self.eval_data.load_state_dict(saved_data)  # type: ignore[union-attr]
        return {f"eval_{k}": v for k, v in results.items()}

    def _eval_objective(self, data: Iterable[Batch]) -> dict[str, float | None]:
        meter = _Meter()
        for batch in itertools.islice(data, self.config.eval_batches):
            loss, metrics = self._forward(batch)
            meter.add({"loss": loss.detach().float(), **metrics})
        if meter.count == 0:
            raise UserError("the held-out data yields no batches")
        return meter.means()

    def save(self) -> Path:
        """Checkpoint the current step and write the model to `out_dir` itself."""
        rngs = self.dist.gather(rng_state())
        state = {
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "bad_in_row": self.bad_in_row,
            "rollbacks": self.rollbacks,
            "recent_losses": list(self.recent_losses),
            "elapsed_s": self._elapsed(),
            "optimizer": self.dist.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs[0],
            "rng_ranks": rngs,
            "data": [_state_of(p.source) for p in self.phases],
            "objective": _state_of(self.objective),
            "best": json.dumps(self.best),
            "bad_evals": self.bad_evals,
            # this process's sums since the last log line (on a resume with more processes,
            # each takes rank 0's token count: tokens_per_s of that one line is approximate)
            "meter": self.meter.state_dict(),
        }
        cfg = self.config
        path = self.out_dir
        model = self.dist.full_model(self.model)
        if model is not None:  # rank 0
            if cfg.checkpoints:
                path = save_checkpoint(self.out_dir, self.step, model, state, self.save_model,
                                       cfg.keep_last)
            if cfg.best_metric is None:
                self.save_model(model, self.out_dir)
        self.dist.barrier()
        return path

    def _track_best(self, record: dict[str, Any]) -> None:
        """Keep the best model in `out_dir` by `config.best_metric`; count evaluations since."""
        key = f"eval_{self.config.best_metric}"
        if key not in record:
            raise UserError(f"the evaluation has no metric {self.config.best_metric!r}; it has "
                            f"{sorted(k.removeprefix('eval_') for k in record if 'eval_' in k)}")
        value = record[key]
        if self.best is None or (value is not None and value > self.best[key]):
            self.best = record
            self.bad_evals = 0
            model = self.dist.full_model(self.model)
            if model is not None:
                self.save_model(model, self.out_dir)
        else:
            self.bad_evals += 1

    def _start(self, resume: bool) -> None:
        if resume:
            load_latest(self.out_dir, self._resume_from)
            if self.dist.is_main:
                _truncate_metrics(self.metrics_path, self.step)
        else:
            if list_checkpoints(self.out_dir):
                raise UserError(f"{self.out_dir / CHECKPOINTS}: holds checkpoints of an earlier "
                                "run; resume it or choose another output directory")
            seed_all(self.config.seed + self.dist.rank)
            if self.dist.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                self.metrics_path.write_text("")
        self.dist.barrier()
        self._started = time.perf_counter()

    def _resume_from(self, checkpoint: Path, data: list[Any] | None = None) -> dict[str, Any]:
        """Load `checkpoint`'s weights and restore its trainer state (with `data`: keep these
        data positions instead of its own). A state that is not one this trainer saved (keys
        missing, values of the wrong type) is a `BadCheckpoint`, so `load_latest` falls back
        past it."""
        check_config(self.model, checkpoint)
        load_weights(checkpoint, lambda path: self.dist.load_model(self.model, path))
        state = read_trainer_state(checkpoint)
        try:
            _check_state(state)
            self._restore(state if data is None else {**state, "data": data}, data=data is None)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            problem = (str(e).strip().splitlines() or [""])[0]
            raise BadCheckpoint(f"{checkpoint}: {TRAINER_STATE} is not a trainer state this run "
                                f"can restore ({type(e).__name__}: {problem})") from None
        return state

    def _restore(self, state: dict[str, Any], data: bool = True) -> None:
        if len(state["data"]) != len(self.phases):
            raise UserError(f"{self.out_dir}: the checkpoint has {len(state['data'])} data "
                            f"phases, this run {len(self.phases)}")
        self.dist.load_optimizer(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.skipped_steps = state["skipped_steps"]
        self.bad_in_row = state.get("bad_in_row", 0)
        self.rollbacks = state.get("rollbacks", 0)
        self.recent_losses = list(state.get("recent_losses", []))
        self.best = json.loads(state.get("best", "null"))
        self.bad_evals = state.get("bad_evals", 0)
        self._elapsed_before = state["elapsed_s"]
        for phase, data_state in zip(self.phases, state["data"], strict=True):
            if not data:
                break
            if data_state is None or not hasattr(phase.source, "load_state_dict"):
                warnings.warn("training data has no state_dict(): resuming restarts it from "
                              "its beginning", stacklevel=4)
            else:
                phase.source.load_state_dict(data_state)
        if state.get("objective") is not None:  # e.g. XLNet's memory
            self.objective.load_state_dict(_to(state["objective"], self.device))  # type: ignore[attr-defined]
        self.meter = _Meter.from_state(_to(state.get("meter"), self.device))
        self._restore_rng(state)
        if data:
            self._iter = None

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """This rank's saved RNG state; on another number of processes, rank 0 takes the first
        rank's and the others are seeded from the seed, step and rank."""
        ranks = state.get("rng_ranks", [state["rng"]])
        if len(ranks) == self.dist.world or self.dist.is_main:
            set_rng_state(ranks[self.dist.rank if len(ranks) == self.dist.world else 0])
        else:
            seed_all(self.config.seed + self.dist.rank + 1_000_003 * self.step)

    def _is_spike(self, loss: Tensor) -> bool:
        """Whether `loss` is over `spike_rollback` times the mean of the recent good losses
        (recorded here). A host sync, only with spike_rollback set."""
        factor = self.config.spike_rollback
        if factor is None:
            return False
        value, recent = float(loss), self.recent_losses
        if not math.isfinite(value):
            return False  # a skipped step, not a spike
        if len(recent) >= SPIKE_MIN_HISTORY and value > factor * sum(recent) / len(recent):
            return True
        recent.append(value)
        del recent[:-SPIKE_HISTORY]
        return False

    def _roll_back(self, loss: float) -> None:
        """Restore the newest checkpoint but keep the data position (the batches since are
        skipped); without a checkpoint yet, only skip this step."""
        self.optimizer.zero_grad(set_to_none=True)
        mean = sum(self.recent_losses) / len(self.recent_losses)
        where = "skipped the step (no checkpoint yet)"
        if self.config.checkpoints and list_checkpoints(self.out_dir):
            data = [_state_of(p.source) for p in self.phases]
            path, _ = load_latest(self.out_dir, functools.partial(self._resume_from, data=data))
            if self.dist.is_main:
                _truncate_metrics(self.metrics_path, self.step)
            where = f"rolled back to {path.name}, skipping the batches since"
        else:
            self.scheduler.step()
            self.step += 1
            self.skipped_steps += 1
        self.rollbacks += 1
        warnings.warn(f"loss {loss:.4g} is over {self.config.spike_rollback} x the recent mean "
                      f"{mean:.4g}: {where}", stacklevel=3)

    def _forward(self, batch: Batch) -> tuple[Tensor, Metrics]:
        batch = {k: v.to(self.device, non_blocking=self.pin) if isinstance(v, Tensor) else v
                 for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.wrapped(batch)

    def _call_objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Metrics]:
        return self.objective(model, batch)  # looked up per call: tests may swap it

    def _reduce(self, loss: Tensor, metrics: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """The loss and metrics averaged over the processes."""
        if self.dist.world == 1:
            return loss, metrics
        tensors = {k: v for k, v in metrics.items() if isinstance(v, Tensor)}
        mean = self.dist.mean({"loss": loss, **tensors})
        return mean.pop("loss"), {**metrics, **mean}

    def _update(self, loss: Tensor, metrics: dict[str, Any], meter: _Meter) -> None:
        """Clip, step the optimizer (unless the loss or gradients are not finite), schedule."""
        meter.lr = self.optimizer.param_groups[0]["lr"]
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        cfg = self.config
        norm = nn.utils.clip_grad_norm_(params, cfg.clip_norm) if cfg.clip_norm else None
        norm = None if norm is None else self.dist.grad_norm(norm)
        finite = torch.isfinite(loss) if norm is None else torch.isfinite(loss + norm)
        if finite:  # the one host sync per step
            self.optimizer.step()
            self.bad_in_row = 0
            extra = {} if norm is None else {"grad_norm": norm}
            meter.add({"loss": loss, **metrics, **extra})
        else:
            self.skipped_steps += 1
            self.bad_in_row += 1
            if 0 < cfg.max_bad_steps <= self.bad_in_row:
                newest = list_checkpoints(self.out_dir)
                kept = f"{newest[-1][1]} is intact" if newest else "no checkpoint was saved"
                raise Diverged(f"{self.out_dir}: {self.bad_in_row} steps in a row up to step "
                               f"{self.step + 1} had a non-finite loss or gradient; stopped "
                               f"({kept}; try a lower --lr, or --max-bad-steps 0 to go on)")
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _log(self, meter: _Meter) -> dict[str, Any]:
        means = meter.means()  # syncs, before the clock is read
        seconds = meter.seconds()
        record: dict[str, Any] = {
            "step": self.step,
            "loss": means.pop("loss", None),
            "lr": meter.lr,
            "tokens_per_s": float(self.dist.total(meter.tokens)) / max(seconds, 1e-9),
            "elapsed_s": self._elapsed(),
            "skipped_steps": self.skipped_steps,
            **({"rollbacks": self.rollbacks} if self.config.spike_rollback else {}),
            **means,
        }
        if self._eval_due() or (self._last() and self._evaluates()):
            record.update(self.evaluate())
            if self.config.best_metric is not None:
                self._track_best(record)
        if self.dist.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def _next_batch(self) -> Batch:
        index = _phase_index(self.phases, self.step)
        if self._iter is None or self._iter[0] != index:
            self._iter = (index, iter(self.phases[index].source))
        batch = next(self._iter[1], None)
        if batch is None:  # exhausted: iterate the source again
            self._iter = (index, iter(self.phases[index].source))
            batch = next(self._iter[1], None)
        if batch is None:
            raise UserError(f"the training data of phase {index + 1} yields no batches")
        return batch

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _evaluates(self) -> bool:
        return self.eval_data is not None or self.evaluator is not None

    def _eval_due(self) -> bool:
        return self._evaluates() and self._due(self.config.eval_every)

    def _last(self) -> bool:
        return self.step == self.config.steps

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._started


@contextlib.contextmanager
def _signals_caught() -> Iterator[list[int]]:
    """Record the first SIGINT or SIGTERM in the yielded list instead of acting on it (the
    training loop then saves and stops); a second one acts as before. Main thread only."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Meter:
    """Sums of loss and metrics over a log interval; converted to floats only when read. Its
    clock counts the interval's training time: stopped while a checkpoint is written."""

    def __init__(self, running: bool = True) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0
        self.tokens: Tensor | int = 0
        self.lr = 0.0
        self.clocked = 0.0  # seconds before the clock's last start
        self.started = time.perf_counter() if running else None

    def add(self, values: Metrics) -> None:
        _add(self.sums, values)
        self.count += 1

    def means(self) -> dict[str, float | None]:
        return {k: float(v) / self.count if self.count else None for k, v in self.sums.items()}

    def seconds(self) -> float:
        running = 0.0 if self.started is None else time.perf_counter() - self.started
        return self.clocked + running

    def stop_clock(self) -> None:
        self.clocked, self.started = self.seconds(), None

    def start_clock(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count, "tokens": self.tokens,
                "lr": self.lr, "seconds": self.seconds()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> _Meter:
        """A meter holding a checkpoint's sums (checkpoints from before they held one: an
        empty meter), its clock stopped until training starts."""
        meter = cls(running=False)
        if state is not None:
            meter.sums, meter.count = dict(state["sums"]), int(state["count"])
            meter.tokens, meter.lr = state["tokens"], float(state["lr"])
            meter.clocked = float(state["seconds"])
        return meter


def _add(sums: dict[str, Any], values: Metrics) -> None:
    for key, value in values.items():
        value = value.detach().float() if isinstance(value, Tensor) else float(value)
        sums[key] = sums.get(key, 0.0) + value


def _count_tokens(batch: Batch) -> Tensor | int:
    """Real tokens of a batch: its attention / input mask summed, else input_ids' size."""
    for key in ("attention_mask", "input_mask"):
        if key in batch:
            return batch[key].sum()
    if "input_ids" not in batch:
        raise ValueError("a batch needs attention_mask, input_mask or input_ids to count tokens")
    return batch["input_ids"].numel()


def _as_phases(train_data: Iterable[Batch] | Sequence[Phase], steps: int) -> list[Phase]:
    if isinstance(train_data, Sequence) and train_data and isinstance(train_data[0], Phase):
        phases = list(train_data)
        if sum(p.steps for p in phases) != steps:
            raise ValueError(f"the phases' steps sum to {sum(p.steps for p in phases)}, "
                             f"not config.steps={steps}")
        return phases
    return [Phase(steps, train_data)]  # type: ignore[arg-type]


def _phase_index(phases: Sequence[Phase], step: int) -> int:
    ends = itertools.accumulate(p.steps for p in phases)
    return next(i for i, end in enumerate(ends) if step < end)


def _state_of(source: object) -> Any:
    return source.state_dict() if hasattr(source, "state_dict") else None  # type: ignore[attr-defined]


def _to(state: Any, device: torch.device) -> Any:
    """`state` with every tensor in it moved to `device`."""
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to(v, device) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_to(v, device) for v in state)
    return state


# entries of a trainer state that `_restore` reads without checks of its own
_STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "step": int, "skipped_steps": int, "elapsed_s": (int, float), "optimizer": dict,
    "scheduler": dict, "data": list, "rng": dict}


def _check_state(state: dict[str, Any]) -> None:
    """A TypeError naming the first entry of `state` that is missing or of the wrong type."""
    for key, kind in _STATE_TYPES.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{key!r} is {type(value).__name__}")
    if state["step"] < 0:
        raise ValueError(f"step {state['step']} is negative")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after `step` by the interrupted run being resumed."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
