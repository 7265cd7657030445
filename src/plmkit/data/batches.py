"""Batches of collated instances from a resumable instance stream."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Protocol

from torch import Tensor


class InstanceStream(Protocol):
    """An iterable of instances with a `collate` and an exact, restorable position."""

    def __iter__(self) -> Iterator[Any]: ...
    def collate(self, instances: list[Any]) -> dict[str, Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Batches:
    """`batch_size` instances at a time, collated; the position is the stream's (nothing is
    read ahead, so a checkpoint taken between batches resumes exactly)."""

    def __init__(self, stream: InstanceStream, batch_size: int):
        self.stream = stream
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        instances = iter(self.stream)
        while chunk := list(itertools.islice(instances, self.batch_size)):
            yield self.stream.collate(chunk)

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
