"""The default training precision: bf16 autocast only where the CPU has bf16 instructions and
its bf16 matrix products measure faster than float32's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plmkit.training import precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(("flags", "speedup", "expected"), [
    ({"avx512_bf16"}, 2.0, True),      # Zen 4: bf16 products about 2x float32
    ({"amx_bf16"}, 6.5, True),
    ({"avx512_bf16"}, 0.55, False),    # a virtual Xeon with AMX hidden: bf16 slower
    (set(), 3.0, False),               # no bf16 instructions: oneDNN would emulate them
])
def test_bf16_needs_the_instructions_and_the_measured_speedup(
        monkeypatch: pytest.MonkeyPatch, flags: set[str], speedup: float, expected: bool) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    assert precision.fast_bf16(CPU) is (expected and torch.backends.mkldnn.is_available())


def test_plmkit_env_reports_the_measurement_and_the_default() -> None:
    out = subprocess.run([str(Path(sys.executable).with_name("plmkit")), "env"],
                         capture_output=True, text=True, check=True)
    env = json.loads(out.stdout)
    speedup = env["cpu_bf16_speedup"]
    assert 0.05 < speedup < 50  # a ratio of two timings of the same product, not a default
    has_bf16 = bool(precision.BF16_FLAGS & precision.cpu_flags())
    assert env["cpu_bf16_default"] is (has_bf16 and speedup >= precision.MIN_SPEEDUP)
