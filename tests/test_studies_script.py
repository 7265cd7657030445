"""benchmarks/studies.sh with a stand-in for `plmkit compare` that records its arguments: each
study keeps its records under docs/studies/<name>/seeds, and a second process (SECOND=1) on the
same study runs it the same way in its own run folder (the records' claims share the seeds),
each first training (--no-wait), then reporting; a study that cannot be shared (the
translation study) is left to the first process."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = """#!/usr/bin/env bash
# one call per line in $CALLS, its arguments split by a tab; results and records made
printf '%s\\t' "$@" >> "$CALLS"; echo >> "$CALLS"
while (($#)); do
  case $1 in --out) out=$2; shift;; --records) records=$2; shift;; esac; shift
done
mkdir -p "$out" "$records"
touch "$out/results.json" "$out/results.md" "$out/plot.png"
"""


def run_study(tree: Path, env: dict[str, str], second: bool, study: str = "s1"
              ) -> list[list[str]]:
    calls = tree / ("calls-2" if second else "calls-1")
    extra = {"SECOND": "1"} if second else {}
    subprocess.run(["bash", str(tree / "benchmarks" / "studies.sh"), study], check=True,
                   env={**env, **extra, "CALLS": str(calls)}, timeout=60)
    return [line.rstrip("\t").split("\t") for line in calls.read_text().splitlines()
            ] if calls.is_file() else []


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_two_processes_share_a_study(tmp_path: Path) -> None:
    tree = tmp_path / "checkout"
    (tree / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "studies.sh", tree / "benchmarks")
    stand_in = tmp_path / "plmkit"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    studies = tmp_path / "studies"
    (studies / "data" / "en-docs").mkdir(parents=True)
    for name in ("en-docs/train.txt", "en-docs-500k.txt"):
        (studies / "data" / name).write_text("text\n")
    env = {**os.environ, "PLMKIT": str(stand_in), "PYTHON": "true", "STUDIES": str(studies)}
    assert run_study(tree, env, second=True, study="s7") == []  # one process only
    training, second = run_study(tree, env, second=True)  # need not wait for the first
    assert training == [*second, "--no-wait"]  # the first pass trains, the second reports
    training, first = run_study(tree, env, second=False)
    assert training == [*first, "--no-wait"]
    assert first[0] == second[0] == "compare"
    records = "docs/studies/electra-vs-bert-3e14/seeds"
    assert option(first, "--records") == option(second, "--records") == records
    assert option(second, "--out") == option(first, "--out") + "-2"
    assert [a for a in first if a != option(first, "--out")] == \
        [a for a in second if a != option(second, "--out")]
