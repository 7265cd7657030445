"""Data options reachable from the command line: --dupe-factor, and each family's own tokenizer
vocabulary size when --vocab-size is not given."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmkit.cli import main, parser
from plmkit.errors import UserError
from plmkit.jobs.compare import parse_entry
from plmkit.jobs.pretrain import PretrainArgs, tokenizer_vocab_size, trainer_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    path = tmp_path_factory.mktemp("options") / "train.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 400, 8)) + "\n")
    return path


def pretrain_args(*extra: str) -> PretrainArgs:
    args = vars(parser().parse_args(["pretrain", "--corpus", "c.txt", "--out", "o", *extra]))
    return PretrainArgs(**{k: v for k, v in args.items() if k not in ("handler", "command")})


def test_dupe_factor_reaches_the_instance_stream(corpus: Path, tmp_path: Path) -> None:
    args = pretrain_args("--model", "bert-tiny", "--dupe-factor", "3", "--vocab-size", "500")
    assert args.dupe_factor == 3
    args.corpus, args.out, args.progress = [corpus], tmp_path / "run", False
    trainer = trainer_for(args)
    assert trainer.phases[0].source.stream.config.dupe_factor == 3
    assert parse_entry("bert-tiny:mlm:dupe_factor=3").options == {"dupe_factor": 3}  # compare


def test_dupe_factor_below_one_is_one_line_exit_2(corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pretrain", "--model", "bert-tiny", "--corpus", str(corpus), "--out",
                 str(tmp_path / "run"), "--dupe-factor", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--dupe-factor must be a positive" in err


@pytest.mark.parametrize(("spec", "problem"), [
    ("bert-tiny:mlm:masking=bogus", "masking=bogus: expected one of static, dynamic"),
    ("bert-tiny:mlm:input_format=pairs", "input_format=pairs: expected one of segments"),
    ("bert-tiny:mlm:max_ngram=abc", "max_ngram=abc: expected an integer"),
    ("bert-tiny:mlm:lr=fast", "lr=fast: expected a number"),
    ("bert-tiny:mlm:whole_word=maybe", "whole_word=maybe: expected true or false"),
    ("bert-tiny:mlm:dropout_off_step=-1", "dropout_off_step=-1: must be at least 0"),
    ("electra-tiny:electra:generator_training=adv", "expected one of mle, adversarial"),
    ("bert-tiny:mlm:out=elsewhere", "out is an option of the command (--out)"),
    ("bert-tiny:mlm:seq_len=64", "seq_len is an option of the command (--seq-len)"),
    ("bert-tiny::num_layers=abc", "num_layers must be an integer, not 'abc'"),
    ("bert-tiny::norm=mid", "norm must be one of 'post', 'pre', not 'mid'"),
    ("bert-tiny:mlm:masking=static --masking dynamic",
     "--masking dynamic differs from --model bert-tiny:mlm:masking=static's masking=static")])
def test_a_bad_key_of_a_model_spec_is_one_line_exit_2(
        spec: str, problem: str, corpus: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    spec, *extra = spec.split()
    code = main(["pretrain", "--model", spec, "--corpus", str(corpus), "--out", str(out),
                 "--steps", "1", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and problem in err and spec in err
    assert not out.exists()  # refused before any work


def test_a_config_takes_values_of_its_fields_types() -> None:
    from plmkit.models import preset_config

    assert preset_config("bert-tiny", dropout=0).dropout == 0.0  # an int where a float goes
    assert isinstance(preset_config("bert-tiny", dropout=0).dropout, float)
    assert preset_config("bert-tiny", embedding_size=None).embedding_size is None
    for bad in ({"hidden_size": True}, {"embedding_size": 64.0}, {"activation": 1}):
        with pytest.raises(UserError, match=f"{next(iter(bad))} must be"):
            preset_config("bert-tiny", **bad)


def test_a_model_spec_gives_its_options_their_types() -> None:
    entry = parse_entry("bert-tiny:mlm:whole_word=true:max_ngram=3:lr=2e-4:masking=static:"
                        "bf16=false:num_layers=2")
    assert entry.options == {"whole_word": True, "max_ngram": 3, "lr": 2e-4,
                             "masking": "static", "bf16": False}
    assert entry.overrides == {"num_layers": 2}
    assert entry.name == ("bert-tiny_mlm_whole_word=True_max_ngram=3_lr=0.0002_masking=static_"
                          "bf16=False_num_layers=2")


@pytest.mark.parametrize(("model", "size"), [("bert-tiny", 30522), ("roberta-tiny", 50265),
                                             ("albert-tiny", 30000), ("ernie-tiny", 18000),
                                             ("xlnet-tiny", 32000)])
def test_each_family_trains_its_own_vocabulary_size_by_default(model: str, size: int) -> None:
    assert tokenizer_vocab_size(pretrain_args("--model", model)) == size
    assert tokenizer_vocab_size(pretrain_args("--model", model, "--vocab-size", "900")) == 900
