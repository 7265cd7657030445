"""Progress a user can see (issue 26, item 3): plain lines when stderr is a file, a bar on a
terminal, TensorBoard event files beside metrics.jsonl."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from plmkit.training import Trainer
from plmkit.training.progress import TENSORBOARD_DIR, Progress, duration
from test_training import ToySource, config, make_model, next_token

LINE = re.compile(r"^step (\d+)/(\d+) \((\d+)%\)  loss (\d+\.\d{4})  ([\d,]+) tokens/s  "
                  r"elapsed (\S+)  ETA (\S+)$")


def _events(directory: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(directory)).Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow  # a real run in a subprocess: ~15 s
def test_redirected_pretrain_writes_lines_and_tensorboard(tmp_path: Path,
                                                          tweets: list[str]) -> None:
    docs = ["\n".join(tweets[i:i + 8]) for i in range(0, 1600, 8)]
    pq.write_table(pa.table({"content": docs}), tmp_path / "tweets.parquet")
    out = tmp_path / "run"
    with open(tmp_path / "stderr.log", "w") as err:  # a file, as in a batch job
        done = subprocess.run(
            [sys.executable, "-m", "plmkit.cli", "pretrain", "--model", "bert-tiny",
             "--corpus", str(tmp_path / "tweets.parquet"), "--text-field", "content",
             "--out", str(out), "--steps", "30", "--log-every", "5", "--vocab-size", "1000",
             "--batch-size", "8", "--seq-len", "32", "--eval-every", "0", "--tensorboard"],
            stdout=subprocess.DEVNULL, stderr=err, timeout=600)
    log = (tmp_path / "stderr.log").read_text()
    assert done.returncode == 0, log
    lines = [m for line in log.splitlines() if (m := LINE.match(line))]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the first logged step at once, then one each 10 s at most, and always the last
    assert int(lines[0][1]) == 5 and int(lines[-1][1]) == 30
    assert lines[-1][3] == "100" and lines[-1][7] == "0s"
    by_step = {r["step"]: r for r in records}
    for m in lines:
        assert float(m[4]) == pytest.approx(by_step[int(m[1])]["loss"], abs=1e-4)
    assert "\r" not in log  # no tqdm bar in a file
    events = _events(out / TENSORBOARD_DIR)
    assert events["loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in records]
    assert [s for s, _ in events["tokens_per_s"]] == [r["step"] for r in records]


def test_lines_on_a_file_bar_on_a_terminal_nothing_when_off() -> None:
    record = {"step": 0, "loss": 7.25, "tokens_per_s": 12345.6}
    file = io.StringIO()
    with Progress(4, 0, show=True, stream=file, terminal=False, line_seconds=0) as progress:
        for step in range(1, 5):
            progress.update(step)
            progress.logged({**record, "step": step})
    lines = file.getvalue().splitlines()
    assert [LINE.match(line)[1] for line in lines] == ["1", "2", "3", "4"]  # type: ignore[index]
    assert lines[1].startswith("step 2/4 (50%)  loss 7.2500  12,346 tokens/s  elapsed ")
    terminal = io.StringIO()
    with Progress(4, 0, show=True, stream=terminal, terminal=True) as progress:
        progress.update(2)
        progress.logged({**record, "step": 2})
    assert "2/4" in terminal.getvalue() and not LINE.search(terminal.getvalue())
    silent = io.StringIO()
    with Progress(4, 0, show=False, stream=silent, terminal=False, line_seconds=0) as progress:
        progress.update(4)
        progress.logged({**record, "step": 4})
    assert silent.getvalue() == ""


def test_eta_follows_the_rate_and_restarts_after_a_rollback() -> None:
    progress = Progress(100, 20, show=False)
    progress.started -= 8.0
    progress.update(40)  # 20 steps in 8 s: 60 to go in 24 s
    assert progress.line(1.0, 10.0, progress.started + 8.0).endswith("ETA 24s")
    progress.update(30)  # rolled back: the rate is measured anew
    assert progress.line(1.0, 10.0, progress.started + 1.0).endswith("ETA ?")
    assert [duration(s) for s in (0.4, 59, 61, 3599, 7620)] == [
        "0s", "59s", "1m01s", "59m59s", "2h07m"]


def test_bench_prints_no_profiler_or_loading_noise(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plmkit.cli", "bench", "--models", "bert-tiny", "--modes", "train",
         "--reps", "1", "--no-mfu", "--batch-size", "2", "--seq-len", "16"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bert-tiny" in done.stdout
    assert done.stderr == ""  # was "USDT: ... profiler_start" (Kineto) and a loading bar


def test_resumed_run_replaces_the_events_after_its_checkpoint(tmp_path: Path) -> None:
    calls = [0]

    def dies_in_step_5(model, batch):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return next_token(model, batch)

    cfg = config(tmp_path, steps=6, save_every=3, log_every=1, tensorboard=True)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_model(), dies_in_step_5, ToySource(0), cfg).train()
    assert [s for s, _ in _events(tmp_path / TENSORBOARD_DIR)["loss"]] == [1, 2, 3, 4]
    Trainer(make_model(), next_token, ToySource(0), cfg).train(resume=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    events = _events(tmp_path / TENSORBOARD_DIR)["loss"]
    assert events == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in records]
    assert [s for s, _ in events] == [1, 2, 3, 4, 5, 6]
