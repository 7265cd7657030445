"""Batches made ahead in a background thread, so that a training step never waits for data.

The data pipeline's Python runs while the step's torch ops compute (they release the GIL), and
the trainer finds the next batch ready. Resuming stays exact: `state_dict()` is the source's
position after the last batch handed out, not after the last one made; stopping early puts the
source back there. A source must not draw from the global RNGs, which the training step uses
at the same time (plmkit's sources have their own seeded generators).
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch

_END = object()  # the source is exhausted


class _Failed:
    """An exception raised by the source, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def pins_memory(device: torch.device) -> bool:
    """Whether batches bound for `device` go through page-locked (pinned) host memory: only
    for CUDA, where a copy from pinned memory can run asynchronously (`non_blocking=True`)
    and overlap the step; elsewhere pinning costs time and gains nothing."""
    return device.type == "cuda"


def pinned(batch: Any) -> Any:
    """`batch` (a tensor, or a dict / list / tuple of them, other values kept) with every CPU
    tensor copied into pinned memory."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory() if batch.device.type == "cpu" else batch
    if isinstance(batch, dict):
        return {k: pinned(v) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(pinned(v) for v in batch)
    return batch


class _Worker:
    """A thread iterating `source` into a queue of (batch, the source's state after it),
    each batch in pinned memory when `pin`."""

    def __init__(self, source: Iterable[Any], depth: int, pin: bool = False) -> None:
        self.pin = pin
        self.queue: queue.Queue[Any] = queue.Queue(depth)
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source,), daemon=True,
                                       name="plmkit-prefetch")
        self.thread.start()

    def _run(self, source: Iterable[Any]) -> None:
        try:
            for batch in source:
                if not self._put((pinned(batch) if self.pin else batch, _state(source))):
                    return
            self._put((_END, _state(source)))  # a pass may move the state on as it ends
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failed(error))

    def _put(self, item: Any) -> bool:
        """Queue `item` unless halted meanwhile; False if halted."""
        while not self.halt.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """(batch, state) pairs, then (_END, the state after the pass); nothing more once
        stopped (a pass superseded by a newer one ends)."""
        while not self.halt.is_set():
            try:
                item = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if self.halt.is_set():
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
            if item[0] is _END:
                return

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()


class Prefetch:
    """`source`'s batches, made up to `depth` ahead by a background thread (and pinned there
    when `pin`: `pins_memory`); `state_dict` / `load_state_dict` as the source's, at the
    consumer's position (None for a source without them: the trainer then restarts it on
    resume, with a warning)."""

    def __init__(self, source: Iterable[Any], depth: int = 2, pin: bool = False) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.source, self.depth, self.pin = source, depth, pin
        self._worker: _Worker | None = None
        self._consumed: Any = None  # the source's state after the last batch handed out

    def __iter__(self) -> Iterator[Any]:
        self._stop()
        self._consumed = _state(self.source)
        worker = self._worker = _Worker(self.source, self.depth, self.pin)
        try:
            for batch, state in worker:
                self._consumed = state
                if batch is _END:
                    return
                yield batch
        finally:
            if self._worker is worker:  # not already stopped by load_state_dict or a new pass
                self._stop()

    def __getattr__(self, name: str) -> Any:  # the source's own attributes (`stream`, ...)
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def state_dict(self) -> Any:
        return _state(self.source) if self._worker is None else self._consumed

    def load_state_dict(self, state: Any) -> None:
        self._stop()
        self.source.load_state_dict(state)  # type: ignore[attr-defined]

    def _stop(self) -> None:
        """End the running worker and put the source back at the consumer's position."""
        if self._worker is None:
            return
        self._worker.stop()
        self._worker = None
        if self._consumed is not None:
            self.source.load_state_dict(self._consumed)  # type: ignore[attr-defined]


def _state(source: object) -> Any:
    """A copy of `source.state_dict()`, or None for a source without one."""
    if not hasattr(source, "state_dict"):
        return None
    return copy.deepcopy(source.state_dict())  # type: ignore[attr-defined]
