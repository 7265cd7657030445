"""The README's tour: every `plmkit` command in its shell blocks parses, names presets and
datasets that exist, and reads only files the tour made before (or the shipped MiniLM); and,
slowly, the whole tour runs in order, with tiny budgets, as a user would run it."""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import pytest

from plmkit.cli import parser
from plmkit.models.registry import all_presets

README = Path(__file__).resolve().parents[1] / "README.md"
INPUTS = ("--model", "--corpus", "--train", "--eval", "--input", "--data", "--tokenizer",
          "--heldout", "--metrics")
GIVEN = ("$MINILM",)  # set by the tour's own first lines
BIN = Path(sys.executable).parent  # the venv's bin: `plmkit`, `python`
TIMEOUT = 240  # seconds for one tour command at tiny budgets
TINY_LINES = 400  # records kept of each file a `data build` writes
CUT_TASKS = {"sentiment-en": "classify:" + ":".join(f"data/sentiment/{split}.csv"
                                                    for split in ("train", "dev", "test"))}


class Line(NamedTuple):
    """One line of the tour: a `plmkit` command (`argv` without `plmkit`, `stdin` what an `echo`
    pipes into it) or a shell assignment `name=$(argv)`."""

    argv: list[str]
    stdin: str | None = None
    assigns: str | None = None


def tour_section(text: str) -> str:
    """README's "## A tour" section, up to the next second-level heading."""
    start = text.index("\n## A tour\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def tour_lines(text: str) -> list[Line]:
    """The tour's sh-block lines that run something: `plmkit` commands (continuation lines
    joined, comments dropped, `echo TEXT |` kept as stdin) and `NAME=$(...)` assignments."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", tour_section(text), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", line.strip())
            if assignment:
                lines.append(Line(shlex.split(assignment[2]), assigns=assignment[1]))
                continue
            words = shlex.split(line, comments=True)
            stdin = None
            if "|" in words:
                left, words = words[:words.index("|")], words[words.index("|") + 1:]
                assert left[:1] == ["echo"], line
                stdin = " ".join(left[1:]) + "\n"
            if words[:1] == ["plmkit"] and len(words) > 1:
                lines.append(Line(words[1:], stdin))
    return lines


def tour_commands(text: str) -> list[list[str]]:
    """The arguments of the tour's `plmkit` commands, in order."""
    return [line.argv for line in tour_lines(text) if line.assigns is None]


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


# ---------------------------------------------------------------------------------------------
# The tour, run


def _set(argv: list[str], option: str, *values: str) -> list[str]:
    """`argv` with `option` given `values`: replaced where present, appended where not."""
    if option not in argv:
        return [*argv, option, *values]
    at = argv.index(option)
    return [*argv[:at + 1], *values, *argv[at + 1 + len(values):]]


def tiny(argv: list[str]) -> list[str]:
    """The tour command `argv` at a budget that runs in seconds on a 2-core CPU.

    Only sizes change, never what runs: pretrain 4 steps of 4 x 32 tokens (and 2 held-out
    batches), a 1000-token vocabulary where a preset trains its tokenizer; fine-tuning 1 epoch of
    batches of 8 x 32 tokens; embed 32 tokens; generate 8 new tokens; compare 4 steps per arm,
    1 pretraining and 1 fine-tuning seed on 64 examples, its tasks read from the tour's cut
    files (`CUT_TASKS`: compare would build the full datasets again); bench each family's tiny
    preset (bert-base -> bert-tiny), 1 rep, 2 x 32 tokens. The data are cut too (`cut_build`).
    """
    command, sizes, presets = argv[0], [], all_presets()
    if command == "pretrain":
        sizes = [("--steps", "4"), ("--batch-size", "4"), ("--seq-len", "32")]
        sizes += [("--eval-batches", "2")] if "--heldout" in argv else []
        trains_tokenizer = "--tokenizer" not in argv and argv[argv.index("--model") + 1] in presets
        sizes += [("--vocab-size", "1000")] if trains_tokenizer else []
    elif command == "tokenizer":
        sizes = [("--vocab-size", "1000")]
    elif command == "finetune":
        sizes = [("--epochs", "1"), ("--batch-size", "8"), ("--max-seq-len", "32")]
    elif command == "embed":
        sizes = [("--max-seq-len", "32")]
    elif command == "generate":
        sizes = [("--max-new-tokens", "8")]
    elif command == "compare":
        tasks = ",".join(CUT_TASKS[t] for t in argv[argv.index("--tasks") + 1].split(","))
        sizes = [("--budget", "steps", "4"), ("--tasks", tasks), ("--seeds", "1"),
                 ("--pretrain-seeds", "1"),
                 ("--finetune-examples", "64"), ("--finetune-epochs", "1"),
                 ("--batch-size", "4"), ("--seq-len", "32"), ("--vocab-size", "1000"),
                 ("--heldout-batches", "2")]
    elif command == "bench":
        models = argv[argv.index("--models") + 1] if "--models" in argv else "bert-mini"
        tiny_models = {m.rsplit("-", 1)[0] + "-tiny" for m in models.split(",")}
        sizes = [("--models", ",".join(sorted(tiny_models)))]
        sizes += [] if "--data" in argv else [("--reps", "1"), ("--batch-size", "2"),
                                              ("--seq-len", "32")]
    for option, *values in sizes:
        argv = _set(argv, option, *values)
    return argv


def cut_build(out: Path) -> None:
    """Keep the first `TINY_LINES` records of each file a `data build` wrote (csv by records,
    other files by lines), so that every later command reads a few hundred examples."""
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        with path.open(newline="", encoding="utf-8") as f:
            if path.suffix == ".csv":
                rows = list(islice(csv.reader(f), TINY_LINES + 1))
            else:
                lines = list(islice(f, TINY_LINES))
        with path.open("w", newline="", encoding="utf-8") as f:
            if path.suffix == ".csv":
                csv.writer(f).writerows(rows)
            else:
                f.writelines(lines)


def run(argv: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None) -> str:
    """Run `argv` (its first word looked up on the venv's PATH); fail with its stderr tail."""
    start = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{shlex.join(argv)}: over {TIMEOUT} s\n{(e.stderr or b'')[-3000:]!r}")
    print(f"{time.monotonic() - start:6.1f} s  {shlex.join(argv)}")  # shown with -s or on failure
    assert done.returncode == 0, f"{shlex.join(argv)} -> {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Start `plmkit serve` in the background on a free port, wait for /health, stop it."""
    port = free_port()
    argv = ["plmkit", *_set(argv, "--port", str(port))]
    server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert r.status == 200
                    return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"{shlex.join(argv)}: no /health answer\n{server.stderr.read()[-3000:]}"
                    if server.poll() is not None else f"{shlex.join(argv)}: no /health answer")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_the_tour_runs_in_order(tmp_path: Path) -> None:
    """Every tour command, in order, in an empty directory, at `tiny` budgets: each must exit 0
    (`serve` must answer /health). Nothing is skipped."""
    if shutil.which("diatheke") is None:
        pytest.skip("diatheke is missing: the Bible datasets need Debian's diatheke and "
                    "sword-text-web/-kjv/-sparv (make demo installs them)")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    variables: dict[str, str] = {}
    for line in tour_lines(README.read_text()):
        argv = [variables.get(w[1:], w) if w.startswith("$") else w for w in line.argv]
        if line.assigns:
            variables[line.assigns] = run(argv, tmp_path, env).strip()
        elif argv[0] == "serve":
            serve(argv, tmp_path, env)
        else:
            run(["plmkit", *tiny(argv)], tmp_path, env, line.stdin)
            if argv[:2] == ["data", "build"]:
                cut_build(tmp_path / argv[argv.index("--out") + 1])
