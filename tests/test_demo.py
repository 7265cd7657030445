"""`plmkit demo`: it writes only into a new or empty directory or an earlier demo's, which it
continues; anything else is refused in one line with nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_users_directory_is_refused_and_left_alone(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my own\n")
    assert main(["demo", "--out", str(mine), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"plmkit: error: --out {mine}: not empty and not a plmkit demo; choose " \
                  "another directory\n"
    assert [p.name for p in mine.iterdir()] == ["metrics.jsonl"]
    assert (mine / "metrics.jsonl").read_text() == "my own\n"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["demo", "--out", str(afile)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--steps", "0"), ("--finetune-examples", "-1")])
def test_bad_numbers_are_refused(option: str, value: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["demo", "--out", str(tmp_path / "d"), option, value])
    assert done.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_an_earlier_demo_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    for _ in range(2):  # the second call finds the finished run and only reports
        assert main(["demo", "--out", str(out), "--steps", "2", "--finetune-examples", "0"]) == 0
    assert (out / "demo.json").is_file() and (out / "curves.png").is_file()
    (out / "demo.json").unlink()  # a demo from before the file: known by its run's corpus
    assert main(["demo", "--out", str(out), "--steps", "2", "--finetune-examples", "0"]) == 0
    assert capsys.readouterr().out.count("held-out") == 3
