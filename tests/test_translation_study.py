"""benchmarks/translation_study.py --records on real verse pairs (John, WEB -> RV1909): with
its first OUT gone, a second call takes the control, the vocabulary, the steps and seed 0 from
the records and trains only seed 1; records of other options are refused."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from plmkit.data.parallel import build_bible_pairs
from plmkit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def study_module():  # the script, imported by its path
    spec = importlib.util.spec_from_file_location(
        "translation_study", ROOT / "benchmarks" / "translation_study.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_records_outlive_out(tmp_path: Path) -> None:
    study = study_module()
    splits = build_bible_pairs(tmp_path / "pairs", key="John 1:1-John 21:25", limit=40)
    records = tmp_path / "records"
    options = ["--flops", "3e9", "--limit", "2", "--vocab-size", "300", "--batch-size", "4",
               "--seq-len", "32", "--warmup", "2", "--records", str(records)]

    def call(out: str, seeds: int, *extra: str) -> dict:
        (tmp_path / out / "data").mkdir(parents=True, exist_ok=True)
        for name, path in splits.items():  # short dev and test files, decoded at each evaluation
            lines = sorted(path.read_text().splitlines(keepends=True), key=len)
            (tmp_path / out / "data" / f"{name}.tsv").write_text(
                "".join(lines if name == "train" else lines[:8]))
        study.main(["--out", str(tmp_path / out), "--seeds", str(seeds), *options, *extra])
        return json.loads((tmp_path / out / "results.json").read_text())

    first = call("a", 1)
    assert sorted(p.name for p in records.iterdir()) == [
        "compare-setup.json", "control.json", "seed-0.json", "steps.json", "tokenizer"]
    shutil.rmtree(tmp_path / "a")
    second = call("b", 2)
    runs = tmp_path / "b" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["control", "seed-1"]  # control: vocabulary
    assert not (runs / "control" / "checkpoints").exists()
    assert second["seeds"][0] == first["seeds"][0] and second["steps"] == first["steps"]
    assert second["summary"]["control"] == first["summary"]["control"]
    assert (records / "seed-1.json").is_file()
    with pytest.raises(UserError, match=r"the records of a study with lr 1.0, not 0.5"):
        call("c", 2, "--lr", "0.5")
