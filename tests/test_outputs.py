"""Outputs never lose a user's files (issue 22, items 1, 2, 5, 6, 9, 12): every command that writes
refuses a directory it did not write, a refused command changes nothing, a resumed run checks it
is the same run, OS errors are one line, and files get the user's umask."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plmkit.cli import main
from plmkit.tokenizers import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--model", "bert-tiny", "--batch-size", "4", "--seq-len", "32", "--lr", "1e-3",
        "--no-progress"]


def listing(path: Path) -> dict[str, str]:
    """Every file under `path` with its sha256 and mode, and every folder with its mode."""
    if not path.exists():
        return {}
    out = {}
    for p in sorted(path.rglob("*")):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12] if p.is_file() else "dir"
        out[str(p.relative_to(path))] = f"{digest} {stat.filemode(p.stat().st_mode)}"
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    """Two real tweet corpora, a tokenizer, a finished bert-tiny run and a sentiment file."""
    root = tmp_path_factory.mktemp("outputs")
    texts = [" ".join(t.split()) for t in tweets[:240] if t.strip()]
    (root / "a.txt").write_text("\n\n".join("\n".join(texts[i:i + 8])
                                            for i in range(0, 120, 8)))
    (root / "b.txt").write_text("\n\n".join("\n".join(texts[i:i + 4])
                                            for i in range(120, 240, 4)))
    train_tokenizer("wordpiece", iter(texts), 600).save(root / "tok")
    (root / "train.csv").write_text("text,label\n" + "".join(
        f"\"{t.replace(chr(34), '')}\",{'pos' if i % 2 else 'neg'}\n"
        for i, t in enumerate(texts[:40])))
    (root / "lines.txt").write_text("\n".join(texts[:10]) + "\n")
    assert main(["pretrain", *TINY, "--corpus", str(root / "a.txt"), "--tokenizer",
                 str(root / "tok"), "--out", str(root / "run"), "--steps", "4",
                 "--save-every", "2"]) == 0
    return root


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- a user's directory is never written ------------------------------------------------------

def commands(root: Path, out: Path) -> dict[str, list[str]]:
    """Each command that writes a directory, with `out` as its output."""
    return {
        "pretrain": ["pretrain", *TINY, "--corpus", str(root / "a.txt"), "--tokenizer",
                     str(root / "tok"), "--steps", "2", "--out", str(out)],
        "tokenizer train": ["tokenizer", "train", "--kind", "wordpiece", "--corpus",
                            str(root / "a.txt"), "--vocab-size", "300", "--out", str(out)],
        "data prepare": ["data", "prepare", "--corpus", str(root / "a.txt"), "--tokenizer",
                         str(root / "tok"), "--out", str(out)],
        "data build": ["data", "build", "--name", "sentiment-en", "--out", str(out)],
        "export": ["export", "--format", "hf", "--model", str(root / "run"), "--out", str(out)],
        "finetune": ["finetune", "--task", "classify", "--model", str(root / "run"), "--train",
                     str(root / "train.csv"), "--epochs", "1", "--batch-size", "8",
                     "--no-progress", "--out", str(out)],
    }


COMMANDS = list(commands(Path(), Path()))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_users_directory_is_refused_and_kept(root: Path, tmp_path: Path, capsys,
                                               command: str) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.safetensors").write_text("mine")
    before = listing(out)
    code, err = run_cli(commands(root, out)[command], capsys)
    assert code == 2
    assert "not empty, holds files of its own (model.safetensors)" in one_line(err)
    assert listing(out) == before
    assert os.listdir(tmp_path) == ["mine"]  # nothing beside it either


@pytest.mark.parametrize("command", COMMANDS)
def test_overwrite_replaces_and_a_commands_own_output_is_recognised(
        root: Path, tmp_path: Path, capsys, command: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("theirs")
    argv = commands(root, out)[command]
    code, err = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "old.txt").exists()
    assert (out / ".plmkit").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".plmkit-")]
    code, err = run_cli(argv, capsys)  # again, on its own output
    if command == "pretrain":
        assert code == 2 and "holds a pretrain run; add --resume" in one_line(err)
    else:
        assert code == 0, err


def test_another_commands_output_is_named(root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tok"
    assert run_cli(commands(root, out)["tokenizer train"], capsys)[0] == 0
    before = listing(out)
    code, err = run_cli(commands(root, out)["export"], capsys)
    assert code == 2 and "holds the output of plmkit tokenizer train" in one_line(err)
    assert listing(out) == before


def test_an_output_that_is_the_input_is_refused(root: Path, capsys) -> None:
    before = listing(root / "run")
    argv = commands(root, root / "run")["finetune"]
    code, err = run_cli([*argv, "--overwrite"], capsys)
    assert code == 2 and "would replace the input" in one_line(err)
    assert listing(root / "run") == before


@pytest.mark.parametrize("command", ["embed", "predict"])
def test_an_existing_output_file_is_refused(root: Path, tmp_path: Path, capsys,
                                            command: str) -> None:
    output = tmp_path / ("vectors.npy" if command == "embed" else "out.jsonl")
    output.write_text("mine")
    argv = [command, "--model", str(root / "run"), "--input", str(root / "lines.txt"),
            "--output", str(output)]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "exists; choose another file or add --overwrite" in one_line(err)
    assert output.read_text() == "mine"
    if command == "embed":
        assert run_cli([*argv, "--overwrite"], capsys)[0] == 0
        assert output.read_bytes()[:6] == b"\x93NUMPY"
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]


# --- a refused pretrain changes nothing; resume checks it is the same run ---------------------

@pytest.fixture
def run(root: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    return run


def pretrain_argv(root: Path, run: Path, *extra: str) -> list[str]:
    return ["pretrain", *TINY, "--corpus", str(root / "a.txt"), "--tokenizer", str(root / "tok"),
            "--out", str(run), "--steps", "6", "--save-every", "2", *extra]


@pytest.mark.parametrize(("change", "message"), [
    ({"--corpus": "b.txt"}, "holds a pretrain run"),  # without --resume
    ({"--corpus": "b.txt", "--resume": None}, "--corpus {root}/b.txt differs from the run's"),
    ({"--seq-len": "64", "--resume": None}, "--seq-len 64 differs from the run's 32"),
    ({"--model": "electra-tiny", "--resume": None}, "--model electra-tiny differs"),
    ({"--tokenizer": "other-tok", "--resume": None}, "not the tokenizer of the run"),
])
def test_a_refused_pretrain_leaves_the_run_untouched(root: Path, run: Path, capsys,
                                                     change: dict, message: str) -> None:
    if not (root / "other-tok").exists():
        train_tokenizer("wordpiece", iter(["other words"] * 20), 100).save(root / "other-tok")
    argv = pretrain_argv(root, run)
    for flag, value in change.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = str(root / value) if "/" not in value and (
                root / value).exists() else value
        else:
            argv += [flag] if value is None else [flag, value]
    before = listing(run)
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert message.format(root=root) in one_line(err)
    assert listing(run) == before


def test_a_changed_corpus_file_is_refused_on_resume(root: Path, run: Path, tmp_path: Path,
                                                    capsys) -> None:
    corpus = tmp_path / "a.txt"
    shutil.copy(root / "a.txt", corpus)
    argv = pretrain_argv(root, tmp_path / "r2")
    argv[argv.index("--corpus") + 1] = str(corpus)
    assert run_cli([*argv[:argv.index("--steps")], "--steps", "2"], capsys)[0] == 0
    with open(corpus, "a") as f:
        f.write("\n\nOne more document.\n")
    code, err = run_cli([*argv, "--resume"], capsys)
    assert code == 2 and "changed since the run started" in one_line(err)


def test_resume_continues_and_overwrite_starts_again(root: Path, run: Path, capsys) -> None:
    assert run_cli([*pretrain_argv(root, run), "--resume"], capsys)[0] == 0
    assert "step-000006" in os.listdir(run / "checkpoints")
    assert run_cli([*pretrain_argv(root, run, "--log-every", "1"), "--overwrite"], capsys)[0] == 0
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps and '"step": 1,' in steps[0]


def test_a_failed_overwrite_restores_the_old_run(root: Path, run: Path, capsys) -> None:
    before = listing(run)
    argv = pretrain_argv(root, run, "--overwrite")
    argv[argv.index("--corpus") + 1] = str(root / "empty.txt")
    (root / "empty.txt").write_text("\n\n")
    code, err = run_cli(argv, capsys)
    assert code == 2 and "empty corpus" in one_line(err)
    assert listing(run) == before


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--batch-size", "-4", "--batch-size must be a positive number, not -4"),
    ("--steps", "0", "--steps must be a positive number"),
    ("--lr", "nan", "--lr must be a positive finite number, not nan"),
    ("--lr", "-1", "--lr must be a positive finite number"),
    ("--lr", "inf", "--lr must be a positive finite number"),
    ("--seq-len", "4", "--seq-len 4: below the minimum of 8"),
    ("--seq-len", "100000", "--seq-len 100000: bert-tiny has 512 positions"),
    ("--warmup", "-1", "--warmup must be >= 0"),
    ("--max-ngram", "0", "--max-ngram must be >= 1"),
])
def test_bad_numbers_are_one_line_and_write_nothing(root: Path, tmp_path: Path, capsys,
                                                    flag: str, value: str, message: str) -> None:
    argv = pretrain_argv(root, tmp_path / "new")
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    code, err = run_cli(argv, capsys)
    assert code == 2 and message in one_line(err)
    assert os.listdir(tmp_path) == []


# --- the file system says no ------------------------------------------------------------------

@pytest.fixture
def mount(tmp_path: Path) -> Iterator[callable]:
    """Mount a small tmpfs (read-only or of a given size) under `tmp_path`; root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_out_is_one_line(root: Path, mount, capsys, command: str) -> None:
    ro = mount("ro", "ro,size=1m")
    code, err = run_cli(commands(root, ro / "out")[command], capsys)
    assert code == 2 and "is not writable" in one_line(err)
    assert os.listdir(ro) == []


def test_a_full_disk_keeps_the_last_checkpoint(root: Path, mount, capsys) -> None:
    disk = mount("disk", "size=12m")
    run = disk / "run"
    argv = pretrain_argv(root, run)
    argv[argv.index("--steps") + 1] = "2"
    assert run_cli(argv, capsys)[0] == 0
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * (free - 200_000))  # room for a fraction of a save
    before = listing(run / "checkpoints")
    code, err = run_cli([*pretrain_argv(root, run), "--resume"], capsys)
    assert code == 2 and "no space left on device (the disk is full)" in one_line(err)
    assert listing(run / "checkpoints") == before
    assert not [p for p in run.rglob(".*") if p.name != ".plmkit"]


def test_fifo_socket_and_unreadable_corpora_are_one_line(root: Path, tmp_path: Path,
                                                         capsys) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.txt"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path in (fifo, sock_path):
            argv = pretrain_argv(root, tmp_path / "out")
            argv[argv.index("--corpus") + 1] = str(path)
            code, err = run_cli(argv, capsys)
            assert code == 2 and "not a regular file" in one_line(err)
    finally:
        sock.close()
    assert not (tmp_path / "out").exists()


def test_an_unreadable_corpus_is_one_line(root: Path, tmp_path: Path) -> None:
    """Without the capability to bypass file modes (as a user, or root without it), a corpus of
    mode 000 is refused in one line."""
    corpus = tmp_path / "secret.txt"
    shutil.copy(root / "a.txt", corpus)
    corpus.chmod(0)
    argv = [sys.executable, "-c", "import sys; from plmkit.cli import main; sys.exit(main())",
            *pretrain_argv(root, tmp_path / "out")]
    argv[argv.index("--corpus") + 1] = str(corpus)
    if os.geteuid() == 0:
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PLMKIT_ALLOCATOR": "system"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "secret.txt: Permission denied" in done.stderr
    assert not (tmp_path / "out").exists()


# --- modes and leftovers ----------------------------------------------------------------------

def test_outputs_follow_the_umask(root: Path, tmp_path: Path, capsys) -> None:
    mask = os.umask(0o022)
    try:
        out = tmp_path / "run"
        argv = pretrain_argv(root, out)
        argv[argv.index("--steps") + 1] = "2"
        assert run_cli(argv, capsys)[0] == 0
    finally:
        os.umask(mask)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    assert modes["model.safetensors"] == 0o644
    assert modes["checkpoints/step-000002"] == 0o755
    assert modes["checkpoints/step-000002/model.safetensors"] == 0o644
    assert modes["data"] == 0o755
    assert set(modes.values()) <= {0o644, 0o755}, modes


def test_leftovers_of_a_killed_save_are_cleaned_on_the_next_start(root: Path, run: Path,
                                                                  capsys) -> None:
    stale = [run / ".plmkit-staging-abc", run / "checkpoints" / ".step-000008.xyz"]
    for path in stale:
        path.mkdir()
        (path / "model.safetensors").write_text("half")
    assert run_cli([*pretrain_argv(root, run), "--resume"], capsys)[0] == 0
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]  # nothing beside the run


def test_invalid_json_in_a_corpus_reads_as_one_sentence(root: Path, tmp_path: Path,
                                                        capsys) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "no end}\n')
    argv = pretrain_argv(root, tmp_path / "out")
    argv[argv.index("--corpus") + 1] = str(corpus)
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert "c.jsonl:2: invalid JSON, unterminated string starting at column 10" in one_line(err)


def test_a_prepared_corpus_is_a_corpus(root: Path, tmp_path: Path, capsys) -> None:
    """`data prepare`'s output trains with the tokenizer it was prepared with, and only that."""
    shards = tmp_path / "shards"
    assert run_cli(commands(root, shards)["data prepare"], capsys)[0] == 0
    argv = pretrain_argv(root, tmp_path / "run")
    argv[argv.index("--corpus") + 1] = str(shards)
    argv[argv.index("--steps") + 1] = "2"
    assert run_cli(argv, capsys)[0] == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "data").exists()  # the prepared shards are used in place
    no_tok = [a for a in argv if a not in ("--tokenizer", str(root / "tok"))]
    no_tok[no_tok.index("--out") + 1] = str(tmp_path / "run2")
    code, err = run_cli(no_tok, capsys)
    assert code == 2 and "a prepared corpus; give the --tokenizer" in one_line(err)
    if not (root / "other-tok").exists():
        train_tokenizer("wordpiece", iter(["other words"] * 20), 100).save(root / "other-tok")
    other = [*no_tok, "--tokenizer", str(root / "other-tok")]
    code, err = run_cli(other, capsys)
    assert code == 2 and "prepared with another tokenizer" in one_line(err)
    assert not (tmp_path / "run2").exists()


@pytest.mark.parametrize("start", ["missing", "empty", "used"])
def test_written_in_place_undoes_a_failed_block(tmp_path: Path, start: str) -> None:
    """A block that fails leaves OUT as it found it: one it created is gone, an empty one is
    empty again, and one with contents (replaced) gets them back."""
    from plmkit.outputs import written_in_place

    out = tmp_path / "out"
    if start != "missing":
        out.mkdir()
    if start == "used":
        (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), written_in_place(out, "compare", replace=start == "used"):
        out.mkdir(exist_ok=True)  # the command makes OUT
        (out / "new.txt").write_text("half")
        raise RuntimeError("refused")
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == {
        "missing": None, "empty": [], "used": ["old.txt"]}[start]
