"""The pretraining path end to end on real text: learning, exact resume, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

import plmkit
from plmkit.jobs.pretrain import PretrainArgs, pretrain, trainer_for
from plmkit.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> tuple[Path, Path]:
    """Real tweets: documents of 8 tweets, 1600 for training and 200 held out."""
    root = tmp_path_factory.mktemp("corpus")
    docs = ["\n".join(tweets[i:i + 8]) for i in range(0, len(tweets), 8)]
    train, heldout = root / "train.txt", root / "heldout.txt"
    train.write_text("\n\n".join(docs[:-25]) + "\n")
    heldout.write_text("\n\n".join(docs[-25:]) + "\n")
    return train, heldout


def small_args(corpus: tuple[Path, Path], out: Path, **kw) -> PretrainArgs:
    base = dict(model="bert-tiny", corpus=[corpus[0]], heldout=[corpus[1]], out=out,
                vocab_size=2000, batch_size=16, seq_len=64, lr=1e-3, progress=False,
                log_every=10, eval_batches=4)
    return PretrainArgs(**{**base, **kw})


def test_tiny_bert_learns_on_real_text(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    args = small_args(corpus, tmp_path / "run", steps=200, warmup=20, eval_every=200,
                      save_every=200)
    trainer = trainer_for(args)
    before = trainer.evaluate()
    after = trainer.train()[-1]
    # 200 tiny steps learn the token distribution of tweets: from 0% to ~5% of masked tokens
    assert after["eval_mlm_accuracy"] > before["eval_mlm_accuracy"] + 0.03
    assert after["eval_mlm_loss"] < before["eval_mlm_loss"] - 1.0
    model = plmkit.load(tmp_path / "run")
    assert model.config.vocab_size == 2000
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 20


class _Crash(Exception):
    pass


def crash_after(trainer, calls: int):
    """Make the objective raise on its call number `calls + 1` (held-out batches count)."""
    objective, count = trainer.objective, [0]

    def wrapped(model, batch):
        count[0] += 1
        if count[0] > calls:
            raise _Crash
        return objective(model, batch)

    trainer.objective = wrapped


@pytest.mark.parametrize("masking", ["static", "dynamic"])
def test_resume_is_exact(corpus: tuple[Path, Path], tmp_path: Path, masking: str) -> None:
    # one tokenizer for both runs: `tokenizers` training breaks ties differently per process
    tok = tmp_path / "tok"
    train_tokenizer("wordpiece", corpus[0].read_text().splitlines(), 2000).save(tok)
    kw = dict(steps=12, save_every=6, eval_every=6, masking=masking, whole_word=True,
              tokenizer=tok)
    pretrain(small_args(corpus, tmp_path / "straight", **kw))
    trainer = trainer_for(small_args(corpus, tmp_path / "resumed", **kw))
    crash_after(trainer, 6 + 4 + 2)  # 6 steps, 4 held-out batches, dies in step 9
    with pytest.raises(_Crash):
        trainer.train()
    pretrain(small_args(corpus, tmp_path / "resumed", resume=True, **kw))
    a = safetensors.torch.load_file(tmp_path / "straight" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "metrics.jsonl").read_text().count("\n") == \
        (tmp_path / "resumed" / "metrics.jsonl").read_text().count("\n")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plmkit.cli", *args], capture_output=True,
                          text=True, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle in lines[0], lines[0]


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    base = ["pretrain", "--model", "bert-tiny", "--steps", "2", "--out", out, "--corpus"]
    assert_user_error(cli(*base, str(tmp_path / "missing.txt")), "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    assert_user_error(cli(*base, str(tmp_path / "empty.txt")), "empty.txt")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 40)
    assert_user_error(cli(*base, str(tmp_path / "binary.txt")), "binary")
    short = tmp_path / "short.txt"
    short.write_text("only one document here.\nwith two sentences only.\n")
    result = cli(*base, str(short), "--vocab-size", "100")
    assert_user_error(result, "next-sentence")
    assert_user_error(cli("pretrain", "--model", "bert-tyni", "--corpus", str(short),
                          "--out", out), "did you mean bert-tiny")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_cli_tokenizer_prepare_pretrain_plot_export(corpus: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    tok, run, hf = tmp_path / "tok", tmp_path / "run", tmp_path / "hf"
    assert cli("tokenizer", "train", "--kind", "wordpiece", "--corpus", str(corpus[0]),
               "--vocab-size", "1500", "--out", str(tok)).returncode == 0
    assert (tok / "vocab.txt").is_file()
    assert cli("data", "prepare", "--corpus", str(corpus[0]), "--tokenizer", str(tok),
               "--out", str(tmp_path / "shards")).returncode == 0
    result = cli("pretrain", "--model", "bert-tiny", "--objective", "mlm", "--corpus",
                 str(corpus[0]), "--tokenizer", str(tok), "--out", str(run), "--steps", "6",
                 "--batch-size", "4", "--seq-len", "32", "--log-every", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert cli("plot", "--metrics", str(run)).returncode == 0
    assert (run / "curves.png").stat().st_size > 1000
    assert cli("export", "--format", "hf", "--model", str(run), "--out", str(hf)).returncode == 0
    import transformers

    model = transformers.AutoModel.from_pretrained(hf)
    assert model.config.vocab_size == 1500


@pytest.mark.parametrize(("keep", "left"), [(0, [2, 4, 6, 8, 10]), (2, [8, 10])])
def test_keep_checkpoints_keeps_the_newest_or_all(corpus: tuple[Path, Path], tmp_path: Path,
                                                  keep: int, left: list[int]) -> None:
    pretrain(small_args(corpus, tmp_path / "run", steps=10, warmup=1, save_every=2,
                        eval_every=0, keep_checkpoints=keep))
    kept = sorted(int(p.name.removeprefix("step-"))
                  for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == left
