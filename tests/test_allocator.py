"""The fast allocator: chosen by PLMKIT_ALLOCATOR, preloaded by the `plmkit` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plmkit.training import allocator

PLMKIT = Path(sys.executable).with_name("plmkit")


def run_env(**env: str) -> dict:
    out = subprocess.run([str(PLMKIT), "env"], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


def test_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.fast_allocator() is None
    monkeypatch.setenv(allocator.ENV, str(tmp_path / "missing.so"))
    assert allocator.fast_allocator() is None
    lib = tmp_path / "libmine.so"
    lib.write_bytes(b"")
    monkeypatch.setenv(allocator.ENV, str(lib))
    assert allocator.fast_allocator() == str(lib)


def test_the_command_runs_on_tcmalloc_unless_told_not_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `make test` installs libtcmalloc-minimal4 (Makefile, system-deps)
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.fast_allocator() is not None
    assert "tcmalloc" in run_env()["allocator"]
    assert run_env(PLMKIT_ALLOCATOR="system")["allocator"] == "glibc"


def test_exit_codes_survive_the_reexec(tmp_path: Path) -> None:
    done = subprocess.run([str(PLMKIT), "pretrain", "--model", "bert-nope", "--corpus",
                           str(tmp_path / "none.txt"), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("plmkit: error:")
    assert "Traceback" not in done.stderr
