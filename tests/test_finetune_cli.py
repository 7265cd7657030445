"""`plmkit finetune / evaluate / predict / embed / data build` end to end, in process; input
mistakes exit with code 2 and one line naming the file and record."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from plmkit.cli import main
from plmkit.models import build, preset_config
from plmkit.tokenizers import train_tokenizer
from plmkit.training.modeldir import save_model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> dict[str, Path]:
    """A tiny BERT fine-tuned for one epoch on 200 labelled tweets through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    tok = train_tokenizer("wordpiece", iter(tweets), 2000)
    model = root / "tiny"
    save_model(build(preset_config("bert-tiny", vocab_size=tok.vocab_size, max_positions=64)),
               model)
    tok.save(model / "tokenizer")
    labels = ("negative", "positive")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": labels[i % 2]}) + "\n"
                             for i, t in enumerate(tweets[:200])))
    out = root / "out"
    code = main(["finetune", "--task", "classify", "--model", str(model), "--train", str(train),
                 "--eval", str(train), "--out", str(out), "--epochs", "1", "--lr", "1e-3",
                 "--max-seq-len", "32", "--no-progress"])
    assert code == 0
    return {"root": root, "model": model, "train": train, "out": out}


def test_finetune_writes_out(run: dict[str, Path]) -> None:
    results = json.loads((run["out"] / "eval_results.json").read_text())
    assert {"accuracy", "macro_f1"} <= set(results)
    assert (run["out"] / "tokenizer" / "tokenizer.json").is_file()
    assert (run["out"] / "metrics.jsonl").read_text().strip()


def test_evaluate_prints_one_json_object(run: dict[str, Path], capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run["out"]), "--eval", str(run["train"])]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    metrics = json.loads(out)
    saved = json.loads((run["out"] / "eval_results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])


def test_predict_text_lines(run: dict[str, Path]) -> None:
    texts = run["root"] / "texts.txt"
    texts.write_text("what a great day\n\nthis is terrible\n")
    output = run["root"] / "pred.jsonl"
    assert main(["predict", "--model", str(run["out"]), "--input", str(texts),
                 "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["text"] for r in records] == ["what a great day", "this is terrible"]
    for r in records:
        assert r["label"] in ("negative", "positive")
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--epochs", "0", "--epochs must be a positive number, got 0"),
    ("--epochs", "nan", "--epochs must be a positive number, got nan"),
    ("--lr", "inf", "--lr must be 0 or more, got inf"),
    ("--warmup-fraction", "2", "--warmup-fraction must be in [0, 1), got 2"),
    ("--weight-decay", "-1", "--weight-decay must be 0 or more, got -1"),
    ("--max-seq-len", "100", "--max-seq-len 100: the model has 64 positions")])
def test_numbers_no_fine_tuning_runs_with_are_refused(run: dict[str, Path], capsys,
                                                       option: str, value: str,
                                                       problem: str) -> None:
    out = run["root"] / "refused"
    assert main(["finetune", "--task", "classify", "--model", str(run["model"]), "--train",
                 str(run["train"]), "--out", str(out), option, value]) == 2
    assert capsys.readouterr().err == f"plmkit: error: {problem}\n"
    assert not out.exists()


def test_a_model_without_a_task_is_named(run: dict[str, Path], capsys) -> None:
    texts = run["root"] / "texts.txt"
    texts.write_text("what a great day\n")
    model = ["--model", str(run["model"])]
    for args in (["predict", *model, "--input", str(texts), "--output",
                  str(run["root"] / "none.jsonl")], ["evaluate", *model, "--eval", str(texts)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err == (f"plmkit: error: {run['model']}: not fine-tuned on a task (no task in "
                       "its plmkit.json); fine-tune it first (plmkit finetune)\n")
    assert not (run["root"] / "none.jsonl").exists()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embed(run: dict[str, Path], pooling: str) -> None:
    texts = run["root"] / "embed.txt"
    texts.write_text("one\ntwo words\nthree more words\n")
    output = run["root"] / f"{pooling}.npy"
    assert main(["embed", "--model", str(run["model"]), "--input", str(texts),
                 "--output", str(output), "--pooling", pooling]) == 0
    vectors = np.load(output)
    assert vectors.shape == (3, 128) and np.isfinite(vectors).all()


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "a", "label": "negative"}\n{"text": "b" "label": 1}\n', "bad.jsonl:2: invalid JSON"),
    ('{"text": "a", "label": "negative"}\n{"text": "b", "label": "meh"}\n',
     "bad.jsonl:2: label 'meh' is not in the training labels"),
    ('{"text": "a"}\n', "bad.jsonl:1: no 'label' column"),
    ("", "bad.jsonl: empty file"),
])
def test_malformed_eval_file_exits_2(run: dict[str, Path], capsys, content: str,
                                     message: str) -> None:
    bad = run["root"] / "bad.jsonl"
    bad.write_text(content)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run["out"]), "--eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_finetune_input_errors_exit_2(run: dict[str, Path], capsys, tmp_path: Path) -> None:
    bad = tmp_path / "train.csv"
    bad.write_text("sentence,label\nhello,pos\n")
    args = ["finetune", "--task", "classify", "--model", str(run["model"]), "--train", str(bad),
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "train.csv:2: no 'text' column" in capsys.readouterr().err
    args[2] = "tag"
    assert main([*args, "--pooling", "mean"]) == 2
    assert "--pooling is an option of --task classify only" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(run["model"]), "--eval", str(bad)]) == 2
    assert "not fine-tuned" in capsys.readouterr().err


def test_data_build(tmp_path: Path, capsys) -> None:
    assert main(["data", "build", "--name", "sentiment-zh", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / f"{n}.csv")
                                               for n in ("train", "dev", "test")]
    header, first = (tmp_path / "dev.csv").read_text(encoding="utf-8").splitlines()[:2]
    assert header == "text,label" and first.rsplit(",", 1)[1] in ("negative", "positive")


def test_data_build_tweets_corpus(tmp_path: Path, capsys) -> None:
    assert main(["data", "build", "--name", "tweets", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "train.txt"),
                                               str(tmp_path / "heldout.txt")]
    documents = (tmp_path / "train.txt").read_bytes().decode().rstrip("\n").split("\n\n")
    assert len(documents) > 4000 and all(0 < len(d.split("\n")) <= 8 for d in documents)


@pytest.mark.parametrize(("name", "labels"), [("nsp-en", {"next", "random"}),
                                               ("sop-en", {"in-order", "swapped"})])
def test_sentence_pair_tasks_from_tweets(tmp_path: Path, name: str, labels: set[str]) -> None:
    assert main(["data", "build", "--name", name, "--out", str(tmp_path)]) == 0
    splits = {}
    for part in ("train", "dev", "test"):
        with open(tmp_path / f"{part}.csv", encoding="utf-8", newline="") as f:
            splits[part] = list(csv.DictReader(f))
    rows = splits["train"]
    assert {r["label"] for r in rows} == labels
    share = sum(r["label"] == min(labels) for r in rows) / len(rows)
    assert 0.48 < share < 0.52  # half each, within sampling error of ~27k pairs
    texts = {part: {r["text_a"] for r in split} for part, split in splits.items()}
    assert len(texts["train"] & texts["test"]) < len(texts["test"]) / 50  # documents split


@pytest.mark.parametrize("command", ["finetune", "evaluate", "predict", "embed", "data build",
                                     "compare", "env"])
def test_help_has_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out
