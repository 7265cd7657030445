"""`plmkit bench --modes serve` on a tiny configuration: every arm timed at every batch size,
ONNX Runtime's best at 1.0x of itself, both backends served under load without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plmkit.bench import serve as serve_bench
from plmkit.bench import suite as bench
from plmkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_serve_bench_on_a_tiny_config(tmp_path: Path) -> None:
    forwards, loads = serve_bench.run(["bert-tiny"], tmp_path, batches=(1, 2), seq=16, reps=3,
                                      clients=(1, 3), per_client=2, compile=False)
    assert [(r.arm, r.batch) for r in forwards] == [
        (arm, b) for b in (1, 2) for arm in serve_bench.ARMS]
    for r in forwards:
        assert r.reps == 3 and r.seq == 16 and r.threads == 1
        assert r.tok_s == pytest.approx(r.batch * r.seq / r.median_s)
        assert 0 < r.p50_ms <= r.p99_ms
    for b in (1, 2):
        ort = [r.vs_ort_best for r in forwards if r.batch == b and r.arm.startswith("ort")]
        assert max(ort) == pytest.approx(1.0)  # the best ORT arm against itself
    assert [(r.endpoint, r.clients, r.backend) for r in loads] == [
        (e, n, backend) for e in ("embed", "classify") for n in (1, 3)
        for backend in ("torch", "onnx")]
    assert all(r.errors == 0 and r.requests == 2 * r.clients and r.req_s > 0 for r in loads)
    text = serve_bench.table(forwards, loads)
    assert "ort int8" in text and "classify" in text
    out = tmp_path / "serve.json"
    bench.write_records(out, {"serve-forward": forwards, "serve-load": loads}, "plmkit bench")
    rows = json.loads(out.read_text())
    assert {r["mode"] for r in rows} == {"serve-forward", "serve-load"}
    assert len(rows) == len(forwards) + len(loads) and rows[0]["command"] == "plmkit bench"


def test_serve_mode_runs_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert "serve" in bench.MODES
    assert main(["bench", "--modes", "serve,infer", "--models", "bert-tiny"]) == 2
    assert "--modes serve runs alone" in capsys.readouterr().err
