"""`plmkit compare`: two models at equal FLOPs on real tweets, fine-tuned, table and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plmkit.cli import main
from plmkit.compare import CompareArgs, compare, cut, parse_entry, pretrain_args
from plmkit.data.builders import build_dataset
from plmkit.errors import UserError
from plmkit.tokenizers import Tokenizer


def test_entries_split_options_from_config_fields() -> None:
    e = parse_entry("albert-tiny:mlm+sop:masking=static:sharing=none:embedding_size=32")
    assert (e.preset, e.objective) == ("albert-tiny", "mlm+sop")
    assert e.options == {"masking": "static"}
    assert e.overrides == {"sharing": "none", "embedding_size": 32}
    assert parse_entry("bert-tiny").objective is None
    assert parse_entry("electra-tiny::generator_size=0.5").overrides == {"generator_size": 0.5}
    with pytest.raises(Exception, match="key=value"):
        parse_entry("bert-tiny:mlm:static")


def test_cut_keeps_whole_csv_records(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    source.write_text('text,label\n"two\nlines",a\nplain,b\nthird,c\n', encoding="utf-8")
    out = cut(source, 2, tmp_path / "cut")
    assert out.read_bytes().decode() == 'text,label\r\n"two\nlines",a\r\nplain,b\r\n'


def test_cut_keeps_whole_conll_sentences(tmp_path: Path) -> None:
    source = tmp_path / "train.conll"
    source.write_text("江 B-PER\n泽 I-PER\n\n说 O\n \n好 O\n", encoding="utf-8")
    out = cut(source, 2, tmp_path / "cut")
    assert out.read_text(encoding="utf-8") == "江 B-PER\n泽 I-PER\n\n说 O\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> CompareArgs:
    root = tmp_path_factory.mktemp("compare")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(tweets[i:i + 4])
                                  for i in range(0, 1200, 4)) + "\n")
    args = CompareArgs(models=["bert-tiny:mlm", "electra-tiny"], corpus=[corpus],
                       out=root / "out", budget=("flops", 3e10), vocab_size=1000,
                       batch_size=8, seq_len=32, seeds=2, finetune_examples=200,
                       finetune_epochs=1.0)
    compare(args)
    return args


def test_equal_flops_table_and_plots(study: CompareArgs) -> None:
    data = json.loads((study.out / "results.json").read_text())
    rows = {r["model"]: r for r in data["results"]}
    bert, electra = rows["bert-tiny_mlm"], rows["electra-tiny"]
    assert electra["objective"] == "electra"
    for r in (bert, electra):
        # the budget buys floor(budget / flops per step) steps, at least one
        assert r["steps"] == max(1, int(3e10 // r["flops_per_step"]))
        assert r["flops"] <= 3e10 or r["steps"] == 1
        s = r["scores"]["classify/sentiment-en"]
        assert len(s["seeds"]) == 2 and 0.0 <= s["mean"] <= 1.0
    # ELECTRA's step runs a generator too: more FLOPs per step, so fewer steps
    assert electra["flops_per_step"] > bert["flops_per_step"] and electra["steps"] < bert["steps"]
    table = (study.out / "results.md").read_text()
    assert "bert-tiny_mlm" in table and "electra-tiny" in table and "±" in table
    for name in ("loss_vs_flops", "score_vs_flops", "params_vs_score"):
        assert (study.out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_call_reuses_everything(study: CompareArgs) -> None:
    before = {p: p.stat().st_mtime_ns for p in study.out.rglob("test_results.json")}
    assert len(before) == 4
    compare(study)
    assert {p: p.stat().st_mtime_ns for p in study.out.rglob("test_results.json")} == before


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    base = ["compare", "--models", "bert-tiny", "--corpus", str(corpus), "--out",
            str(tmp_path / "o")]
    assert main([*base, "--budget", "parsecs", "3"]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main([*base, "--budget", "steps", "ten"]) == 2
    assert main([*base, "--budget", "steps", "3", "--tasks", "nope"]) == 2
    assert "--tasks" in capsys.readouterr().err


def test_knowledge_vs_character_masking_on_chinese(tmp_path: Path) -> None:
    """Study 6 at a tiny budget: one character vocabulary, ERNIE's staged knowledge masking
    against character masking on the same preset, fine-tuned on People's Daily NER."""
    pd = build_dataset("peoples-daily", tmp_path / "pd")[0]
    corpus = tmp_path / "pd.txt"
    docs = pd.read_text(encoding="utf-8").split("\n\n")[:30]
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    ner = [cut(f, 40, tmp_path / "ner" / f.stem) for f in build_dataset("ner-zh", tmp_path)]
    args = CompareArgs(models=["ernie-tiny:ernie", "ernie-tiny:mlm+nsp"], corpus=[corpus],
                       out=tmp_path / "out", budget=("steps", 6), tokenizer_kind="char",
                       tasks=[":".join(["tag", *map(str, ner)])], vocab_size=3000,
                       batch_size=4, seq_len=32, seeds=1, finetune_examples=40,
                       finetune_epochs=1.0)
    rows = {r["model"]: r for r in compare(args)}
    assert Tokenizer.load(args.out / "tokenizer").kind == "char"
    ernie, chars = rows["ernie-tiny_ernie"], rows["ernie-tiny_mlm+nsp"]
    assert (ernie["objective"], chars["objective"]) == ("ernie", "mlm+nsp")
    # the masking level changes what is predicted, not the work of a step
    assert ernie["flops_per_step"] == chars["flops_per_step"] and ernie["steps"] == 6
    for r in (ernie, chars):
        assert r["scores"]["tag/tag"]["metric"] == "f1"


def test_another_budget_needs_another_out(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c d\n\ne f g h\n")
    run = tmp_path / "out" / "runs" / "bert-tiny_mlm"
    run.mkdir(parents=True)
    (run / "compare.json").write_text('{"budget": ["steps", 10], "steps": 10, "done": true}')
    args = CompareArgs(models=["bert-tiny:mlm"], corpus=[corpus], out=tmp_path / "out",
                       budget=("steps", 20), tasks=[], vocab_size=100)
    with pytest.raises(UserError, match="--budget steps 10; give another --out"):
        compare(args)


def test_pretraining_is_float32_unless_an_entry_says_bf16(tmp_path: Path) -> None:
    args = CompareArgs(models=[], corpus=[tmp_path / "c.txt"], out=tmp_path, budget=("steps", 1))
    plain = pretrain_args(parse_entry("bert-tiny:mlm"), args, tmp_path, 1, tmp_path / "a")
    fast = pretrain_args(parse_entry("bert-tiny:mlm:bf16=true"), args, tmp_path, 1, tmp_path)
    assert plain.bf16 is False and fast.bf16 is True
