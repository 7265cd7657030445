"""Batches made ahead in a thread (`training/prefetch.py`): same batches, the consumer's
position in `state_dict`, restarts from a loaded state, the source's errors."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.training import TrainConfig, Trainer
from plmkit.training.prefetch import Prefetch


class Counter:
    """0, 1, ..., n - 1 from its saved position; a pass that ends starts the next at 0."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.position = n, fail_at, 0

    def __iter__(self) -> Iterator[int]:
        while self.position < self.n:
            if self.position == self.fail_at:
                raise UserError(f"corpus.txt, line {self.position}: bad input")
            self.position += 1
            yield self.position - 1
        self.position = 0  # the next pass starts over

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = state["position"]


def test_same_batches_and_passes_as_the_source() -> None:
    prefetch = Prefetch(Counter(5), depth=2)
    assert list(prefetch) == [0, 1, 2, 3, 4]
    assert list(prefetch) == [0, 1, 2, 3, 4]  # the source's own end-of-pass reset carried over
    assert list(Prefetch([7, 8, 9])) == [7, 8, 9]
    assert Prefetch(Counter(5)).n == 5  # the source's attributes show through
    assert Prefetch([7, 8, 9]).state_dict() is None


def test_state_is_the_consumers_position_while_the_thread_runs_ahead() -> None:
    source = Counter(100)
    prefetch = Prefetch(source, depth=4)
    batches = iter(prefetch)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.2)  # the worker fills its queue meanwhile
    assert source.position > 3
    assert prefetch.state_dict() == {"position": 3}
    del batches  # closing the pass puts the source back where the consumer is
    assert source.position == 3
    assert next(iter(prefetch)) == 3


def test_load_state_dict_during_a_pass_restarts_there() -> None:
    prefetch = Prefetch(Counter(50), depth=3)
    batches = iter(prefetch)
    next(batches), next(batches)
    prefetch.load_state_dict({"position": 40})
    assert prefetch.state_dict() == {"position": 40}
    assert list(prefetch)[:3] == [40, 41, 42]
    assert list(batches) == []  # the superseded pass ends, and does not move the source back
    assert prefetch.state_dict() == {"position": 0}  # the newer pass ended: the next at 0


def test_the_sources_error_reaches_the_consumer() -> None:
    batches = iter(Prefetch(Counter(10, fail_at=2)))
    assert [next(batches), next(batches)] == [0, 1]
    with pytest.raises(UserError, match=r"corpus\.txt, line 2: bad input"):
        next(batches)


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        Prefetch([1], depth=0)


class Batches(Counter):
    """Counter's positions as trainer batches."""

    def __iter__(self) -> Iterator[dict[str, Tensor]]:  # type: ignore[override]
        for i in super().__iter__():
            yield {"input_ids": torch.full((2, 3), i)}


@dataclasses.dataclass
class TinyConfig:
    family: str = "tiny"


class Tiny(nn.Linear):
    def __init__(self) -> None:
        super().__init__(3, 1)
        self.config = TinyConfig()


def test_the_trainer_gets_batches_made_while_its_step_runs(tmp_path) -> None:
    source = Batches(20)
    ahead = []

    def objective(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        made = int(batch["input_ids"][0, 0]) + 1  # batches made up to this one
        deadline = time.monotonic() + 5
        while source.position <= made and time.monotonic() < deadline:
            time.sleep(0.002)  # the step computing; the thread makes the next batch meanwhile
        ahead.append(source.position - made)
        return model(batch["input_ids"].float()).sum(), {}

    config = TrainConfig(steps=6, out_dir=tmp_path, device="cpu", progress=False,
                         save_every=0, eval_every=0, log_every=6, checkpoints=False)
    Trainer(Tiny(), objective, source, config).train()
    assert min(ahead) >= 1  # the next batch was ready before each step ended
