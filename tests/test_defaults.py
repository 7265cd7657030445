"""Defaults that follow the run: the Transformer's warmup follows --steps, blank outputs are
named on stderr, and fine-tuning's learning rate follows the model's size."""

from __future__ import annotations

from pathlib import Path

import pytest

import plmkit.seq2seq as seq2seq
from plmkit.generate import Hypothesis
from plmkit.models import build, preset_config
from plmkit.pipeline import PretrainArgs
from plmkit.tokenizers import train_tokenizer


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
