"""Defaults that follow the run: the Transformer's warmup follows --steps, blank outputs are
named on stderr, and fine-tuning's learning rate follows the model's size."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

import plmkit
import plmkit.jobs.seq2seq as seq2seq
from plmkit.cli import main
from plmkit.data.builders import read_tweets
from plmkit.deploy.generate import Hypothesis
from plmkit.jobs.pretrain import PretrainArgs
from plmkit.models import build, preset_config
from plmkit.tasks.options import default_lr
from plmkit.tokenizers import train_tokenizer
from test_tasks_classify import tiny_model_dir


@pytest.mark.parametrize(("steps", "warmup", "expected"),
                         [(100, None, 10), (100_000, None, 4000), (5, None, 1), (100, 7, 7)])
def test_transformer_warmup_follows_steps(steps: int, warmup: int | None,
                                          expected: int) -> None:
    args = PretrainArgs(model="transformer-tiny", objective="seq2seq", corpus=[Path("x.tsv")],
                        out=Path("out"), steps=steps, warmup=warmup)
    assert seq2seq.seq2seq_warmup(args) == expected


def test_blank_translations_are_named_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                tweets: list[str]) -> None:
    tok = train_tokenizer("bpe", iter(tweets[:300]), 500)
    config = preset_config("transformer-tiny", vocab_size=tok.vocab_size,
                           bos_token_id=tok.cls_id, eos_token_id=tok.sep_id,
                           pad_token_id=tok.pad_id)
    model = build(config)
    word = tok.encode("hello")[0]
    found = [Hypothesis([tok.sep_id], 0.0), Hypothesis([word, tok.sep_id], 0.0)]
    monkeypatch.setattr(seq2seq, "beam_search", lambda *a, **k: found)
    out = seq2seq.translate_with(model, tok, ["a b", "c d"])
    assert out[0] == "" and out[1] != ""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 outputs are blank" in err
    found[0] = Hypothesis([word, tok.sep_id], 0.0)
    seq2seq.translate_with(model, tok, ["a b", "c d"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("preset", "lr"), [("bert-tiny", 1e-3), ("bert-mini", 3e-4),
                                             ("bert-small", 1e-4), ("bert-base", 3e-5),
                                             ("bert-large", 3e-5)])
def test_finetuning_lr_follows_model_size(preset: str, lr: float) -> None:
    assert default_lr(preset_config(preset)) == lr


def test_finetune_without_lr_uses_the_size_default(tmp_path: Path, tweets: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rows = random.Random(0).sample(read_tweets(), 64)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows),
                     encoding="utf-8")
    model_dir = tiny_model_dir(tmp_path / "tiny", tweets[:300])
    assert main(["finetune", "--task", "classify", "--model", str(model_dir), "--train",
                 str(train), "--out", str(tmp_path / "out"), "--epochs", "1",
                 "--max-seq-len", "16", "--no-progress"]) == 0
    options = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert options["lr"] == default_lr(plmkit.load(model_dir).config) == 1e-3
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "out"), "--eval", str(train)]) == 0
    scores = json.loads(capsys.readouterr().out)
    most = Counter(y for _, y in rows).most_common(1)[0][1]
    assert scores["majority_baseline"] == most / len(rows)  # the eval file's own majority
