"""benchmarks/distill_study.py: the verdicts of its claims, from the per-seed dev accuracies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def distill_study():
    spec = importlib.util.spec_from_file_location(
        "distill_study", ROOT / "benchmarks" / "distill_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arms(finetuned: list[float], labels: list[float], distilled: list[float]) -> dict:
    return {name: {"runs": [{"accuracy": x} for x in accs]}
            for name, accs in (("finetuned", finetuned), ("distilled_labels", labels),
                               ("distilled", distilled))}


def test_a_clear_gain_is_reproduced_and_a_noisy_one_inconclusive():
    study = distill_study()
    v = study.verdicts(arms([0.50, 0.52, 0.48], [0.49, 0.56, 0.47], [0.60, 0.61, 0.59]))
    labels, distilled = v
    assert labels["verdict"] == "inconclusive" and labels["seeds_to_settle"] > 3
    assert labels["difference"] == pytest.approx(0.02 / 3)
    assert distilled["verdict"] == "reproduced" and distilled["ci95"][0] > 0
    assert "seeds_to_settle" not in distilled
    line = study.verdict_line(labels, "seeds")
    assert line.startswith(
        "distilled, labelled tweets only beats fine-tuned on the labels on dev accuracy:")
    assert "**inconclusive**" in line and "seeds per arm would settle it" in line
    assert "pretraining" not in line and "FLOPs" not in line


def test_a_loss_is_contradicted():
    v = distill_study().verdicts(arms([0.60, 0.61, 0.62], [0.50, 0.52, 0.51], [0.5, 0.5, 0.5]))
    assert [x["verdict"] for x in v] == ["contradicted", "contradicted"]
