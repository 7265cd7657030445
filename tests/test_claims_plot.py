"""benchmarks/claims_plot.py: the claims of the studies' results.json files, both formats, and
the figure they make."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "claims_plot.py"


def claims_plot():
    spec = importlib.util.spec_from_file_location("claims_plot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims_plot"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def verdict(claim: str, metric: str, difference: float, verdict: str) -> dict:
    return {"claim": claim, "metric": metric, "difference": difference,
            "ci95": [difference - 0.01, difference + 0.01], "verdict": verdict}


def test_rows_of_a_compare_study_and_of_the_adaptation_study(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "electra-vs-bert-3e14"
    study.mkdir(parents=True)
    (study / "results.json").write_text(json.dumps({"verdicts": [
        verdict("electra-small > bert-mini_mlm_num_layers=12_embedding_size=128", "finetune",
                0.03, "reproduced"),
        verdict("electra-small > control-bert-mini", "heldout/rtd_accuracy", 0.1, "reproduced"),
        verdict("electra-small > control-bert-mini", "probe", -0.02, "contradicted")]}))
    adapt = tmp_path / "studies" / "dapt-bible"
    adapt.mkdir()
    (adapt / "results.json").write_text(json.dumps({"tasks": {"sentiment-en": {
        "difference": {"difference": -0.006, "ci95": [-0.014, 0.001],
                       "verdict": "inconclusive"}}}}))
    distill = tmp_path / "studies" / "distill"
    distill.mkdir()
    (distill / "results.json").write_text(json.dumps({"verdicts": [verdict(
        "distilled, labelled + unlabeled tweets beats fine-tuned on the labels", "dev accuracy",
        0.087, "reproduced")]}))
    module = claims_plot()
    rows = [r for folder in (study, adapt, distill)
            for r in module.rows(folder / "results.json", folder)]
    assert [(r.study, r.claim, r.metric, r.verdict) for r in rows] == [
        ("electra-vs-bert-3e14", "electra-small > bert-mini (12 layers)", "finetune",
         "reproduced"),  # a held-out score the panels do not draw is left out
        ("electra-vs-bert-3e14", "electra-small > control-bert-mini", "probe", "contradicted"),
        ("dapt-bible", "after > before (sentiment-en)", "finetune", "inconclusive"),
        ("distill", "distilled, labelled + unlabeled tweets > fine-tuned", "dev accuracy",
         "reproduced")]
    assert (rows[1].low, rows[1].high) == pytest.approx((-0.03, -0.01))
    out = tmp_path / "claims.png"
    # a missing folder is skipped, one given twice (BIG = SMALL in studies.sh) read once
    folders = [str(study), str(adapt), str(distill), str(tmp_path / "no"), str(study)]
    done = subprocess.run([sys.executable, str(SCRIPT), *folders, "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("4 claims") and out.read_bytes()[:4] == b"\x89PNG"
