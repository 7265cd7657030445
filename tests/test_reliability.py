"""Reliability: runs killed with SIGKILL resume bit-identically, corrupted checkpoints are
skipped, numerical faults are survived, signals save, and bad input is one line, exit code 2,
nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import Tensor, nn

from plmkit.cli import main
from plmkit.errors import UserError
from plmkit.jobs.pretrain import PretrainArgs, pretrain
from plmkit.models import build, preset_config
from plmkit.tokenizers import train_tokenizer
from plmkit.training import TrainConfig, Trainer, list_checkpoints
from plmkit.training.checkpoint import MANIFEST, TRAINER_STATE, check_config, verify_checkpoint
from plmkit.training.modeldir import save_model
from plmkit.training.trainer import Diverged


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> dict[str, Path]:
    """Real tweets in documents of 8, with pairs for seq2seq, and one tokenizer for all runs
    (`tokenizers` training breaks ties differently per process)."""
    root = tmp_path_factory.mktemp("reliability")
    texts = [" ".join(t.split()) for t in tweets[:200] if t.strip()]
    corpus = root / "tweets.txt"
    corpus.write_text("\n\n".join("\n".join(texts[i:i + 8]) for i in range(0, len(texts), 8)))
    pairs = root / "pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in zip(texts[::2], texts[1::2],
                                                            strict=False)))
    tok = root / "tok"
    train_tokenizer("wordpiece", iter(texts), 1000).save(tok)
    bpe = root / "bpe"
    train_tokenizer("bpe", iter(texts), 1000, lowercase=False).save(bpe)
    return {"root": root, "corpus": corpus, "pairs": pairs, "tok": tok, "bpe": bpe}


def args_for(data: dict[str, Path], out: Path, **kw: Any) -> PretrainArgs:
    base: dict[str, Any] = dict(model="bert-tiny", corpus=[data["corpus"]], out=out,
                                tokenizer=data["tok"], batch_size=4, seq_len=32, lr=1e-3,
                                steps=6, save_every=2, log_every=1, progress=False)
    return PretrainArgs(**{**base, **kw})


def weights(run: Path) -> dict[str, Tensor]:
    return safetensors.torch.load_file(run / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if
                                                        not torch.equal(wa[k], wb[k])]


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in
            map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


# --- exact resume, every objective ------------------------------------------------------------

class _Crash(Exception):
    pass


OBJECTIVES = [("bert-tiny", "mlm"), ("bert-tiny", "mlm+nsp"), ("albert-tiny", "mlm+sop"),
              ("electra-tiny", "electra"), ("xlnet-tiny", "plm"), ("transfo-xl-tiny", "clm"),
              ("transformer-tiny", "seq2seq")]


@pytest.mark.parametrize(("model", "objective"), [
    pytest.param(m, o, id=o, marks=[] if o == "mlm" else [pytest.mark.slow])
    for m, o in OBJECTIVES])
def test_every_objective_resumes_bit_identically(data: dict[str, Path], tmp_path: Path,
                                                 model: str, objective: str) -> None:
    """Crash in step 3 (checkpoint at 2), resume: the same weights and losses as straight."""
    kw: dict[str, Any] = dict(model=model, objective=objective)
    if objective == "seq2seq":
        kw.update(corpus=[data["pairs"]], tokenizer=data["bpe"])
    kw["steps"] = 4
    pretrain(args_for(data, tmp_path / "straight", **kw))
    calls = [0]
    original = Trainer._call_objective

    def crashing(self: Trainer, model: nn.Module, batch: dict[str, Tensor]):
        calls[0] += 1
        if calls[0] > 2:
            raise _Crash
        return original(self, model, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_call_objective", crashing)
        with pytest.raises(_Crash):
            pretrain(args_for(data, tmp_path / "resumed", **kw))
    pretrain(args_for(data, tmp_path / "resumed", resume=True, **kw))
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


# --- SIGKILL at random steps ------------------------------------------------------------------

def cli_command(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "plmkit.cli", "pretrain", "--model", "bert-tiny",
            "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(out),
            "--steps", "30", "--batch-size", "4", "--seq-len", "32", "--lr", "1e-3",
            "--save-every", "3", "--log-every", "1", "--no-progress", *extra]


def logged_steps(out: Path) -> int:
    try:
        return (out / "metrics.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bit_identical(data: dict[str, Path],
                                                              tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(cli_command(data, straight), check=True, capture_output=True, timeout=300)
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        extra = ("--resume",) if list_checkpoints(killed) else ()
        target = logged_steps(killed) + rng.randint(1, 8)
        proc = subprocess.Popen(cli_command(data, killed, *extra), stderr=subprocess.DEVNULL)
        while proc.poll() is None and logged_steps(killed) < target:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 2
    result = subprocess.run(cli_command(data, killed, "--resume"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_weights(straight, killed)
    assert losses(straight) == losses(killed)


def test_sigterm_saves_a_checkpoint_and_exits_143(data: dict[str, Path],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_command(data, out, "--steps", "100000", "--save-every", "0"),
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and logged_steps(out) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().startswith("plmkit: interrupted: SIGTERM at step") and "--resume" in err
    (step, checkpoint), = list_checkpoints(out)
    assert step >= 2 and verify_checkpoint(checkpoint) is None
    assert (out / "model.safetensors").is_file()


# --- corrupted checkpoints --------------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def bert_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step bert-tiny run, checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("bert-run") / "run"
    pretrain(args_for(data, out, steps=4))
    return out


@pytest.mark.parametrize(("damage", "file", "problem"), [
    (truncate, "model.safetensors", "model.safetensors has"),
    (flip_byte, "model.safetensors", "model.safetensors is corrupted"),
    (flip_byte, TRAINER_STATE, f"{TRAINER_STATE} is corrupted"),
    (lambda p: p.unlink(), MANIFEST, f"no valid {MANIFEST}"),
    (lambda p: p.unlink(), TRAINER_STATE, f"{TRAINER_STATE} is missing"),
], ids=["truncated-weights", "flipped-weights", "flipped-state", "no-manifest", "partial"])
def test_damage_is_detected_and_named(bert_run: Path, tmp_path: Path, damage, file: str,
                                      problem: str) -> None:
    checkpoint = tmp_path / "step-000004"
    shutil.copytree(bert_run / "checkpoints" / "step-000004", checkpoint)
    assert verify_checkpoint(checkpoint) is None
    damage(checkpoint / file)
    assert verify_checkpoint(checkpoint).startswith(problem)


def test_resume_falls_back_past_corrupted_checkpoints(data: dict[str, Path], tmp_path: Path,
                                                      capsys) -> None:
    run, straight = tmp_path / "run", tmp_path / "straight"
    pretrain(args_for(data, run, steps=6))  # checkpoints at 2, 4, 6
    shutil.copytree(run, straight)
    flip_byte(run / "checkpoints" / "step-000006" / "model.safetensors")
    state = run / "checkpoints" / "step-000004" / TRAINER_STATE
    size = state.stat().st_size
    truncate(state)
    capsys.readouterr()
    pretrain(args_for(data, run, steps=6, resume=True))  # from step 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(os.sep)[-1] for line in lines] == [  # one line each
        "step-000006: model.safetensors is corrupted (sha256 differs from the manifest); "
        "falling back to an earlier checkpoint",
        f"step-000004: {TRAINER_STATE} has {size // 2} bytes, the manifest says {size}; "
        "falling back to an earlier checkpoint"]
    assert all(line.startswith("plmkit: warning: ") for line in lines)
    assert_same_weights(straight, run)
    assert losses(straight) == losses(run)


def resign(checkpoint: Path) -> None:
    """Rewrite the manifest to match the files as they are (damage a check by size and
    sha256 cannot see)."""
    files = {p.name: {"size": p.stat().st_size,
                      "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted(checkpoint.iterdir()) if p.name != MANIFEST}
    (checkpoint / MANIFEST).write_text(json.dumps({"files": files}))


def edit_manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(checkpoint: Path) -> None:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
        (checkpoint / MANIFEST).write_text(json.dumps(change(manifest)))
    return damage


def replace_state(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """trainer_state.pt replaced by `change(state)`, the manifest re-signed."""
    def damage(checkpoint: Path) -> None:
        state = torch.load(checkpoint / TRAINER_STATE, weights_only=True)
        torch.save(change(state), checkpoint / TRAINER_STATE)
        resign(checkpoint)
    return damage


class Hostile:
    """Unpickling it would create the file `marker`."""

    marker = Path()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def hostile_state(checkpoint: Path) -> None:
    torch.save({"step": 4, "x": Hostile()}, checkpoint / TRAINER_STATE)
    resign(checkpoint)


def replace_config(checkpoint: Path) -> None:
    (checkpoint / "plmkit.json").write_text("[1, 2]")
    resign(checkpoint)


BAD_STATES = [  # (id, damage to the newest checkpoint, the problem the warning names)
    ("files-number", edit_manifest(lambda m: {"files": 5}), 'manifest.json has no "files" object'),
    ("manifest-list", edit_manifest(lambda m: [m]), 'manifest.json has no "files" object'),
    ("entry-number", edit_manifest(lambda m: {"files": {**m["files"], "model.safetensors": 7}}),
     "manifest.json: the entry of model.safetensors is not an object"),
    ("no-sha256", edit_manifest(lambda m: {"files": {**m["files"], TRAINER_STATE: {
        "size": m["files"][TRAINER_STATE]["size"]}}}),
     f"manifest.json: the entry of {TRAINER_STATE} has no sha256"),
    ("size-string", edit_manifest(lambda m: {"files": {**m["files"], TRAINER_STATE: {
        **m["files"][TRAINER_STATE], "size": "12"}}}),
     f"manifest.json: the entry of {TRAINER_STATE} has no size in bytes"),
    ("path-in-manifest", edit_manifest(lambda m: {"files": {**m["files"], "../../run.json": {
        "size": 1, "sha256": "0" * 64}}}),
     "manifest.json: '../../run.json' is not a file name"),
    ("hostile-pickle", hostile_state,
     f"{TRAINER_STATE} cannot be loaded safely (UnpicklingError)"),
    ("state-list", replace_state(lambda s: [s]), f"{TRAINER_STATE} holds a list, not a trainer "
                                                 "state"),
    ("step-string", replace_state(lambda s: {**s, "step": "4"}),
     f"{TRAINER_STATE} is not a trainer state this run can restore (TypeError: 'step' is str)"),
    ("no-optimizer", replace_state(lambda s: {k: v for k, v in s.items() if k != "optimizer"}),
     f"{TRAINER_STATE} is not a trainer state this run can restore (TypeError: 'optimizer' is "
     "NoneType)"),
    ("empty-optimizer", replace_state(lambda s: {**s, "optimizer": {}}),
     f"{TRAINER_STATE} is not a trainer state this run can restore (KeyError"),
    ("config-list", replace_config, "plmkit.json is not a plmkit model description"),
]


@pytest.mark.parametrize(("damage", "problem"), [b[1:] for b in BAD_STATES],
                         ids=[b[0] for b in BAD_STATES])
def test_checkpoint_of_the_wrong_shape_falls_back_with_one_line(
        data: dict[str, Path], bert_run: Path, tmp_path: Path, capsys, monkeypatch,
        damage: Callable[[Path], None], problem: str) -> None:
    """Valid JSON of the wrong shape and trainer states plmkit did not write are skipped as a
    truncated file is: one warning line, then the previous checkpoint resumes exactly."""
    run = tmp_path / "run"
    shutil.copytree(bert_run, run)
    monkeypatch.setattr(Hostile, "marker", tmp_path / "code-ran")
    damage(run / "checkpoints" / "step-000004")
    capsys.readouterr()
    pretrain(args_for(data, run, steps=4, resume=True))  # from step 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("plmkit: warning: "), err
    assert f"step-000004: {problem}" in err and err.endswith(
        "; falling back to an earlier checkpoint\n"), err
    assert not (tmp_path / "code-ran").exists()
    assert_same_weights(bert_run, run)
    assert losses(bert_run) == losses(run)


def test_metrics_lines_after_a_resume_between_log_points_are_the_same(
        data: dict[str, Path], tmp_path: Path) -> None:
    """Saved every 3 steps, logged every 5, killed in step 5: the resumed run's lines carry
    the same means as the uninterrupted run's (the sums since the last line are checkpointed)."""
    kw: dict[str, Any] = dict(steps=12, save_every=3, log_every=5)
    pretrain(args_for(data, tmp_path / "straight", **kw))
    calls = [0]
    original = Trainer._call_objective

    def crashing(self: Trainer, model: nn.Module, batch: dict[str, Tensor]):
        calls[0] += 1
        if calls[0] > 4:
            raise _Crash
        return original(self, model, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_call_objective", crashing)
        with pytest.raises(_Crash):
            pretrain(args_for(data, tmp_path / "resumed", **kw))
    assert not (tmp_path / "resumed" / "metrics.jsonl").read_text()  # nothing logged yet
    pretrain(args_for(data, tmp_path / "resumed", resume=True, **kw))

    def lines(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("tokens_per_s", "elapsed_s")}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in lines(tmp_path / "straight")] == [5, 10, 12]
    assert lines(tmp_path / "straight") == lines(tmp_path / "resumed")


def test_no_intact_checkpoint_is_a_user_error(data: dict[str, Path], tmp_path: Path,
                                              capsys) -> None:
    run = tmp_path / "run"
    pretrain(args_for(data, run, steps=2))
    flip_byte(run / "checkpoints" / "step-000002" / "model.safetensors")  # the only one
    code = main(["pretrain", "--model", "bert-tiny", "--corpus", str(data["corpus"]),
                 "--tokenizer", str(data["tok"]), "--batch-size", "4", "--seq-len", "32",
                 "--lr", "1e-3", "--out", str(run), "--resume", "--steps", "4",
                 "--no-progress"])
    assert code == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith("plmkit: warning: ") and "corrupted" in warning
    assert "no intact checkpoint to resume from" in error


# --- numerical faults -------------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = None
        self.linear = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def toy_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 4, generator=generator)
        yield {"x": x, "input_ids": x, "y": x.sum(-1, keepdim=True)}


def faulty(bad_calls: set[int], value: float):
    """Squared error; calls numbered in `bad_calls` have their loss times `value`."""
    calls = [0]

    def objective(model: nn.Module, batch: dict[str, Tensor]):
        calls[0] += 1
        loss = (model(batch["x"]) - batch["y"]).pow(2).mean()
        return (loss * value if calls[0] in bad_calls else loss), {}

    return objective


def toy_config(out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(steps=20, lr=1e-2, log_every=1, eval_every=0, save_every=4,
                                device="cpu", progress=False, checkpoints=True)
    return TrainConfig(out_dir=out, **{**base, **kw})


def save_toy(model: nn.Module, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(model, str(directory / "model.safetensors"))


def test_bad_steps_in_a_row_stop_the_run_checkpoint_intact(tmp_path: Path) -> None:
    model = Toy()
    trainer = Trainer(model, faulty(set(range(6, 100)), float("nan")), toy_data(),
                      toy_config(tmp_path, max_bad_steps=3), save_model=save_toy)
    with pytest.raises(Diverged, match=r"3 steps in a row up to step 8 .*step-000004 is intact"):
        trainer.train()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    assert verify_checkpoint(tmp_path / "checkpoints" / "step-000004") is None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # two bad steps apart never stop the run; they are counted
    records = Trainer(Toy(), faulty({3, 5}, float("inf")), toy_data(),
                      toy_config(tmp_path / "b", max_bad_steps=2), save_model=save_toy).train()
    assert records[-1]["skipped_steps"] == 2


def test_loss_spike_rolls_back_and_skips_the_batches(tmp_path: Path) -> None:
    trainer = Trainer(Toy(), faulty({11}, 1e4), toy_data(),
                      toy_config(tmp_path, spike_rollback=5.0), save_model=save_toy)
    with pytest.warns(UserWarning, match=r"over 5.0 x the recent mean .*rolled back to "
                                         r"step-000008"):
        records = trainer.train()
    assert records[-1]["step"] == 20 and records[-1]["rollbacks"] == 1
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == 20 and len(steps) == len(set(steps))
    assert max(r["loss"] for r in records) < 1e3  # the spike never reached the weights


# --- bad input: one line, exit code 2, nothing half-written ----------------------------------

def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with its sha256."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def write_inputs(root: Path) -> None:
    (root / "empty.txt").write_text("\n\n  \n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (root / "latin1.txt").write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    with open(root / "huge.txt", "wb") as f:
        f.write(b"word " * 20_000_000 + b"\n")  # one 100 MB line
    (root / "one.txt").write_text("\n\n".join(f"Document {i} has one sentence only."
                                              for i in range(20)) + "\n")
    (root / "wrong.csv").write_text("sentence,label\nhello there,positive\n")
    (root / "small").mkdir()
    train_tokenizer("wordpiece", iter(["some other words"] * 10), 200).save(root / "small")


BAD_INPUTS = [  # (id, arguments, message), {root} the inputs, {run} a finished bert-tiny run
    ("missing", "pretrain --corpus {root}/missing.txt", "missing.txt: no such file"),
    ("empty", "pretrain --corpus {root}/empty.txt", "empty.txt: empty corpus"),
    ("binary", "pretrain --corpus {root}/binary.txt", "binary.txt: looks binary"),
    ("invalid-utf8", "pretrain --corpus {root}/latin1.txt --bad-utf8 error",
     "latin1.txt:2: invalid UTF-8"),
    ("100MB-line", "pretrain --corpus {root}/huge.txt", "huge.txt:1: a line over 16 MiB"),
    ("one-sentence-nsp", "pretrain --corpus {root}/one.txt --objective mlm+nsp",
     "documents too short for next-sentence prediction"),
    ("unknown-preset", "pretrain --corpus {root}/one.txt --model bert-tyni",
     "did you mean bert-tiny"),
    ("other-family", "pretrain --corpus {corpus} --resume --model electra-tiny --out {run}",
     "--model electra-tiny differs from the run's bert-tiny"),
    ("vocab-mismatch", "pretrain --corpus {corpus} --resume --tokenizer {root}/small --out {run}",
     "small: not the tokenizer of the run being resumed"),
    ("wrong-columns", "finetune --task classify --model {run} --train {root}/wrong.csv",
     "wrong.csv:2: no 'text' column"),
]


@pytest.mark.parametrize(("command", "message"), [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_one_line_exit_2_nothing_written(data: dict[str, Path], bert_run: Path,
                                                   tmp_path_factory: pytest.TempPathFactory,
                                                   capsys, command: str, message: str) -> None:
    root = data["root"] / "bad"
    if not root.exists():
        root.mkdir()
        write_inputs(root)
    out = tmp_path_factory.mktemp("out") / "out"
    argv = command.format(root=root, run=bert_run, corpus=data["corpus"]).split()
    if "--model" not in argv:
        argv += ["--model", "bert-tiny"]
    if argv[0] == "pretrain" and "--tokenizer" not in argv:
        argv += ["--tokenizer", str(data["tok"])]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    if argv[0] == "pretrain":
        argv += ["--steps", "2"]  # should an input be accepted, a short run
    before = tree(bert_run)
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists()
    assert tree(bert_run) == before


def test_vocab_mismatch_in_the_checkpoint_is_named(data: dict[str, Path], bert_run: Path,
                                                   tmp_path: Path) -> None:
    config = preset_config("bert-tiny", vocab_size=200, max_positions=512)
    checkpoint = next(iter(list_checkpoints(bert_run)))[1]
    with pytest.raises(UserError, match=r"plmkit.json: .* vocab_size \d+ there, 200 here"):
        check_config(build(config), checkpoint)
    save_model(build(config), tmp_path / "same")
    check_config(build(config), tmp_path / "same")  # the same config: no error


def test_final_model_is_never_half_written(tmp_path: Path, monkeypatch) -> None:
    import plmkit

    model = build(preset_config("bert-tiny", vocab_size=100, max_positions=64))
    out = tmp_path / "run"
    save_model(model, out)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    replace = os.replace

    def killed_before_the_config(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if Path(dst).name == "plmkit.json":
            raise OSError("killed")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_config)
    with pytest.raises(OSError, match="killed"):
        save_model(model, out)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left
    loaded = plmkit.load(out)  # whole files: the new weights with the (same) config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
