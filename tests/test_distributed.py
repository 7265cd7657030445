"""Data-parallel training under `torchrun` on CPU (gloo): 2 processes equal one process with the
same global batch, and an FSDP2 run saves, reloads and resumes on another number of processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import plmkit
from plmkit.tokenizers import train_tokenizer
from plmkit.training.distributed import RankSlice

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    texts = [t.replace("\n", " ").strip() for t in tweets[:200] if t.strip()]
    corpus = root / "tweets.txt"
    corpus.write_text("\n\n".join("\n".join(texts[i:i + 8]) for i in range(0, len(texts), 8)))
    train_tokenizer("wordpiece", iter(texts), 1000).save(root / "tok")
    return {"corpus": corpus, "tok": root / "tok"}


def pretrain(data: dict[str, Path], out: Path, *extra: str, procs: int = 1) -> None:
    """`plmkit pretrain` of bert-tiny without dropout, in one process or under torchrun."""
    launcher = [sys.executable, "-m", "plmkit.cli"]
    if procs > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", str(procs), "-m", "plmkit.cli"]
    command = [*launcher, "pretrain", "--model", "bert-tiny", "--objective", "mlm",
               "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]),
               "--out", str(out), "--batch-size", "4", "--seq-len", "32", "--lr", "1e-3",
               "--log-every", "1", "--save-every", "2", "--dropout-off-step", "0",
               "--no-progress", "--no-bf16", *extra]  # float32: compared at 1e-4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def curve(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records]


def assert_close_curves(a: Path, b: Path) -> None:
    ours, theirs = curve(a), curve(b)
    assert [s for s, _ in ours] == [s for s, _ in theirs] == list(range(1, 7))
    for (_, x), (_, y) in zip(ours, theirs, strict=True):
        assert x == pytest.approx(y, rel=1e-4)


def assert_close_weights(a: Path, b: Path) -> None:
    wa = safetensors.torch.load_file(a / "model.safetensors")
    wb = safetensors.torch.load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def single(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, micro-batches of 4, accumulation 2: a global batch of 8."""
    out = tmp_path_factory.mktemp("single") / "run"
    pretrain(data, out, "--steps", "6", "--grad-accum", "2")
    return out


def test_two_processes_equal_one_with_the_same_global_batch(
        data: dict[str, Path], single: Path, tmp_path: Path) -> None:
    pretrain(data, tmp_path / "ddp", "--steps", "6", procs=2)  # 2 x 4 = 8
    assert_close_curves(tmp_path / "ddp", single)
    assert_close_weights(tmp_path / "ddp", single)


def test_fsdp_saves_reloads_and_resumes_on_one_process(
        data: dict[str, Path], single: Path, tmp_path: Path) -> None:
    out = tmp_path / "fsdp"
    pretrain(data, out, "--steps", "6", "--fsdp", procs=2)
    assert_close_curves(out, single)
    model = plmkit.load(out)  # the full model, written by rank 0
    saved = safetensors.torch.load_file(out / "checkpoints" / "step-000006" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert_close_weights(out, single)
    shutil.rmtree(out / "checkpoints" / "step-000006")
    pretrain(data, out, "--steps", "6", "--grad-accum", "2", "--resume")  # 1 process, from 4
    assert_close_curves(out, single)
    assert_close_weights(out, single)


def test_rank_slice_partitions_rounds_and_keeps_the_position() -> None:
    class Counter:
        def __init__(self) -> None:
            self.position = 0

        def __iter__(self):
            while self.position < 7:
                self.position += 1
                yield {"i": torch.tensor(self.position)}

        def state_dict(self) -> dict[str, Any]:
            return {"position": self.position}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.position = state["position"]

    shards = [RankSlice(Counter(), rank, 3) for rank in range(3)]
    seen = [[int(b["i"]) for b in shard] for shard in shards]
    assert seen == [[1, 4], [2, 5], [3, 6]]  # the partial round (7) is dropped everywhere
    sources = [Counter(), Counter()]
    firsts = [next(iter(RankSlice(source, rank, 2))) for rank, source in enumerate(sources)]
    assert [int(b["i"]) for b in firsts] == [1, 2]
    assert [source.position for source in sources] == [2, 2]  # the same on every rank
    assert RankSlice(sources[0], 0, 2).state_dict() == {"position": 2}
