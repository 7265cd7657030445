"""The README's tour: every `plmkit` command in its shell blocks parses, names presets and
datasets that exist, and reads only files the tour made before (or the shipped MiniLM)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from plmkit.cli import parser
from plmkit.models.registry import all_presets

README = Path(__file__).resolve().parents[1] / "README.md"
INPUTS = ("--model", "--corpus", "--train", "--eval", "--input", "--data", "--tokenizer",
          "--heldout", "--metrics")
GIVEN = ("$MINILM",)  # set by the tour's own first lines


def tour_commands(text: str) -> list[list[str]]:
    """The `plmkit ...` commands of README's sh blocks, continuation lines joined, comments
    dropped, the right-hand side of a pipe taken."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "|" in words:
                words = words[words.index("|") + 1:]
            if words[:1] == ["plmkit"] and len(words) > 1:
                commands.append(words[1:])
    return commands


def made_by(outputs: set[str], path: str) -> bool:
    """Whether `path` is, or is inside, something an earlier command wrote."""
    path = path.rstrip("/")
    return path in GIVEN or any(path == o or path.startswith(o + "/") for o in outputs)


def test_the_tour_has_the_commands_it_promises() -> None:
    commands = tour_commands(README.read_text())
    names = [c[0] for c in commands]
    assert len(commands) > 30
    for sub in ("pretrain", "finetune", "evaluate", "export", "generate", "translate", "serve"):
        assert sub in names


@pytest.mark.parametrize("index", range(len(tour_commands(README.read_text()))))
def test_every_tour_command_parses_and_reads_what_the_tour_made(index: int) -> None:
    commands = tour_commands(README.read_text())
    argv = commands[index]
    if argv == ["--help"]:
        return
    args = parser().parse_args(argv)  # exits (SystemExit) on an unknown option or dataset
    outputs: set[str] = set()
    for earlier in commands[:index]:
        for option in ("--out", "--output"):
            if option in earlier:
                outputs.add(earlier[earlier.index(option) + 1].rstrip("/"))
    if "--models" in argv:
        models = argv[argv.index("--models") + 1].split(",")
        assert all(m.split(":")[0] in all_presets() for m in models), argv
    for option in INPUTS:
        if option not in argv:
            continue
        value = argv[argv.index(option) + 1]
        if option == "--model" and argv[0] in ("pretrain", "compare", "bench"):
            known = all_presets()
            models = [m.split(":")[0] for m in value.split(",")]
            assert all(m in known or made_by(outputs, m) for m in models), (argv, value)
            continue
        assert made_by(outputs, value), f"{' '.join(argv)}: {value} is not made earlier"
    assert args is not None
