"""One source of truth for the command line (issue 23, item 3): `plmkit pretrain`'s options are
PretrainArgs' fields and `plmkit finetune`'s FinetuneOptions', one to one with the same
defaults; choice lists are the registries'."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest

from plmkit.bench.suite import MODES
from plmkit.cli import main, parser
from plmkit.data.builders import TASK_DATASETS
from plmkit.data.corpus import BadUtf8
from plmkit.data.options import DataOptions
from plmkit.deploy.backend import BACKENDS
from plmkit.jobs.compare.downstream import TASK_OF_DATASET
from plmkit.jobs.pretrain import PretrainArgs
from plmkit.models import preset_config
from plmkit.models.registry import FAMILIES
from plmkit.objectives import OBJECTIVES
from plmkit.tasks.base import HEAD_POOLINGS, TASK_MODULES
from plmkit.tasks.embed import POOLINGS
from plmkit.tasks.options import COLUMN_FIELDS, FinetuneOptions
from plmkit.tokenizers import KINDS
from plmkit.training.optim import OPTIMIZERS


def options(*command: str) -> dict[str, argparse.Action]:
    """The options of a subcommand by destination."""
    p = parser()
    for name in command:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return {a.dest: a for a in p._actions if a.dest != "help"}


def agree(actions: dict[str, argparse.Action], cls: type) -> None:
    """Each option in `actions` has the default and required-ness of its field of `cls`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, action in actions.items():
        f = fields[name]
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert action.required == (default is dataclasses.MISSING), name
        assert action.required or action.default == default, name
        assert action.help, name


def test_pretrain_options_are_the_fields_of_pretrain_args() -> None:
    pretrain = options("pretrain")
    fields = {f.name for f in dataclasses.fields(PretrainArgs)}
    assert set(pretrain) == fields - {"overrides"}  # overrides: --model PRESET::KEY=VALUE
    agree(pretrain, PretrainArgs)


def test_finetune_options_are_the_fields_of_finetune_options() -> None:
    finetune = options("finetune")
    own = {"task", "model", "train", "eval", "out", "pooling", "regression", "overwrite"}
    fields = {f.name for f in dataclasses.fields(FinetuneOptions)}
    assert set(finetune) - own == fields
    agree({name: finetune[name] for name in fields}, FinetuneOptions)
    args = parser().parse_args([
        "finetune", "--task", "classify", "--model", "m", "--train", "t.csv", "--out", "o",
        "--lr", "1e-3", "--epochs", "2", "--no-progress", "--bf16", "--text-field", "sentence"])
    parsed = FinetuneOptions(**{k: v for k, v in vars(args).items() if k in fields})
    assert parsed == FinetuneOptions(lr=1e-3, epochs=2.0, progress=False, bf16=True,
                                     text_field="sentence")
    for command in ("evaluate", "predict"):  # None: the columns the model was fine-tuned with
        assert all(options(command)[name].default is None for name in COLUMN_FIELDS)


def test_sizes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--task", "tag", "--model", "m", "--train", "t", "--out", "o",
              "--batch-size", "0"])
    assert done.value.code == 2
    assert "--batch-size: must be a positive number, not 0" in capsys.readouterr().err


def test_pretrain_parses_each_field_to_its_type() -> None:
    args = parser().parse_args([
        "pretrain", "--model", "m", "--corpus", "a.txt,b.txt", "--out", "o", "--lr", "3e-4",
        "--no-progress", "--no-bf16", "--heldout", "h.txt", "--dupe-factor", "3"])
    hints = typing.get_type_hints(PretrainArgs)
    assert PretrainArgs(**{k: v for k, v in vars(args).items() if k in hints})
    assert (args.lr, args.progress, args.bf16, args.dupe_factor) == (3e-4, False, False, 3)
    assert [p.name for p in args.corpus] == ["a.txt", "b.txt"] and args.heldout[0].name == "h.txt"


def test_choices_come_from_the_registries() -> None:
    pretrain = options("pretrain")
    hints = typing.get_type_hints(DataOptions)
    assert list(pretrain["masking"].choices) == list(typing.get_args(hints["masking"]))
    assert list(pretrain["input_format"].choices) == list(typing.get_args(hints["input_format"]))
    assert list(pretrain["optimizer"].choices) == list(OPTIMIZERS)
    assert list(pretrain["bad_utf8"].choices) == list(typing.get_args(BadUtf8))
    assert all(name in pretrain["objective"].help for name in OBJECTIVES)
    assert list(options("tokenizer", "train")["kind"].choices) == list(KINDS)
    assert list(options("compare")["tokenizer_kind"].choices) == list(KINDS)
    assert list(options("data", "build")["name"].choices) == list(TASK_DATASETS)
    assert list(options("embed")["pooling"].choices) == list(POOLINGS)
    assert list(options("finetune")["task"].choices) == list(TASK_MODULES)
    assert list(options("finetune")["pooling"].choices) == list(HEAD_POOLINGS)
    for command in ("serve", "predict", "embed"):
        assert list(options(command)["backend"].choices) == list(BACKENDS)


def test_help_names_every_entry_of_a_registry(capsys: pytest.CaptureFixture[str]) -> None:
    for command, registry in [("compare", TASK_OF_DATASET), ("bench", MODES)]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = "".join(capsys.readouterr().out.split())  # wrapped at hyphens too
        assert all(name in text for name in registry), command


def test_vocab_size_help_names_each_familys_vocabulary(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, family in FAMILIES.items():
        size = preset_config(next(iter(family.presets))).vocab_size
        assert f"{name} {size}" in text, name


@pytest.mark.parametrize(("option", "message"), [
    (("--optimizer", "sgd"), "invalid choice: 'sgd' (choose from 'adamw', 'lamb')"),
    (("--generator-training", "gan"), "invalid choice: 'gan' (choose from 'mle', 'adversarial')")])
def test_an_unknown_choice_is_refused_by_argparse(option: tuple[str, str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--model", "m", "--corpus", "c", "--out", "o", *option])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--batch-size", "--seq-len", "--reps"])
def test_bench_sizes_must_be_positive(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:  # a batch of 0 crashed in torch.stack
        main(["bench", "--models", "bert-tiny", option, "0"])
    assert done.value.code == 2
    assert f"argument {option}: must be a positive number, not 0" in capsys.readouterr().err


def test_bench_refuses_a_plot_name_before_measuring(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--models", "bert-tiny", "--seq-lens", "32,64", "--plot",
                 str(tmp_path / "curves.txt")]) == 2
    assert "--plot" in capsys.readouterr().err and not (tmp_path / "curves.txt").exists()


@pytest.mark.parametrize(("command", "option", "value", "problem"), [
    ("generate", "--temperature", "-1", "must be 0 (greedy) or more, not -1"),
    ("generate", "--temperature", "nan", "must be 0 (greedy) or more, not nan"),
    ("generate", "--max-new-tokens", "-5", "must be a positive number, not -5"),
    ("generate", "--top-k", "-1", "must be at least 0, not -1"),
    ("generate", "--beam", "0", "must be a positive number, not 0"),
    ("translate", "--beam", "0", "must be a positive number, not 0"),
    ("chat", "--beam", "-2", "must be a positive number, not -2")])
def test_decoding_numbers_are_checked(command: str, option: str, value: str, problem: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:  # nan crashed in sampling; the rest ran silently
        main([command, "--model", "m", option, value])
    assert done.value.code == 2
    assert f"argument {option}: {problem}" in capsys.readouterr().err
