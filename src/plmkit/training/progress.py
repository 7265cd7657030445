"""What a training run shows while it runs: a tqdm bar on a terminal, plain lines where stderr
is a file or a pipe (batch jobs, ``> log 2>&1``), and optional TensorBoard event files.

A plain line is written for a logged step (metrics.jsonl's record) at most every
`LINE_SECONDS`, and always for the last step:
``step 300/1000 (30%)  loss 5.8123  12,345 tokens/s  elapsed 1m02s  ETA 2m25s``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from plmkit.errors import UserError

LINE_SECONDS = 10.0  # the least time between two plain lines
TENSORBOARD_DIR = "tensorboard"  # beside metrics.jsonl


class Progress:
    """The bar or the plain lines of one `Trainer.train` call, from step `initial` of `total`.

    `show=False`: nothing. `stream`: where lines go (default: stderr, read when made);
    `terminal`: whether that is a terminal (default: asked of the stream).
    """

    def __init__(self, total: int, initial: int, show: bool, stream: IO[str] | None = None,
                 terminal: bool | None = None, line_seconds: float = LINE_SECONDS) -> None:
        self.stream = stream or sys.stderr
        is_tty = self.stream.isatty() if terminal is None else terminal
        self.total, self.line_seconds = total, line_seconds
        self.lines = show and not is_tty
        self.bar = tqdm(total=total, initial=initial, file=self.stream,
                        disable=not (show and is_tty))
        self.step, self.first = initial, initial
        self.started = time.perf_counter()
        self.last_line: float | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def update(self, step: int) -> None:
        """Training reached `step` (also after a rollback to an earlier one)."""
        if step < self.step:
            self.first, self.started = step, time.perf_counter()  # the rate restarts
        self.bar.update(step - self.bar.n)
        self.step = step

    def logged(self, record: Mapping[str, Any]) -> None:
        """A metrics.jsonl record was written: show its loss and throughput."""
        loss, rate = record.get("loss"), record.get("tokens_per_s", 0.0)
        self.bar.set_postfix(loss=loss, tok_s=round(rate))
        now = time.perf_counter()
        due = self.last_line is None or now - self.last_line >= self.line_seconds
        if self.lines and (due or self.step == self.total):
            self.stream.write(self.line(loss, rate, now) + "\n")
            self.stream.flush()
            self.last_line = now

    def line(self, loss: float | None, tokens_per_s: float, now: float) -> str:
        """``step S/T (P%)  loss L  R tokens/s  elapsed E  ETA X``."""
        elapsed = now - self.started
        done = self.step - self.first
        eta = elapsed / done * (self.total - self.step) if done else None
        loss_text = "n/a" if loss is None else f"{loss:.4f}"
        return (f"step {self.step}/{self.total} ({100 * self.step // self.total}%)  "
                f"loss {loss_text}  {tokens_per_s:,.0f} tokens/s  "
                f"elapsed {duration(elapsed)}  ETA {'?' if eta is None else duration(eta)}")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


class TensorBoard:
    """Every numeric value of each metrics.jsonl record as a scalar in event files in
    `out_dir/tensorboard` (`torch.utils.tensorboard`; needs the tensorboard package).
    A run resumed at step S hides the events the earlier run wrote after S."""

    def __init__(self, out_dir: Path, step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install 'plmkit[tensorboard]'") from None
        # TensorBoard hides the earlier events from purge_step on: those after the checkpoint
        self.writer = SummaryWriter(str(out_dir / TENSORBOARD_DIR),
                                    purge_step=step + 1 if step else None)

    def add(self, record: Mapping[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()
