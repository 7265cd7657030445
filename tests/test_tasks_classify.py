"""Sequence classification on real tweets: beats the majority class, keeps the best model in OUT,
round-trips through plmkit.load, and rejects malformed files with one line naming file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import plmkit
from plmkit.data.builders import sentiment_en
from plmkit.errors import UserError
from plmkit.jobs.demo import majority_accuracy, subset
from plmkit.jobs.finetune import EVAL_RESULTS, evaluate_dir, finetune
from plmkit.models import build, preset_config
from plmkit.tasks.classify import (
    SequenceClassifier,
    classification_metrics,
    make_task,
    regression_metrics,
)
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training.modeldir import save_model

FAST = FinetuneOptions(lr=1e-3, batch_size=32, epochs=2, max_seq_len=32, progress=False)


def tiny_model_dir(out: Path, texts: list[str], preset: str = "bert-tiny") -> Path:
    """An untrained tiny BERT with a WordPiece vocabulary trained on `texts`, as a plmkit dir."""
    tok = train_tokenizer("wordpiece", iter(texts), 2000)
    config = preset_config(preset, vocab_size=tok.vocab_size, max_positions=128)
    save_model(build(config), out)
    tok.save(out / "tokenizer")
    return out


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1500 / 300 / 400 tweets of the fixed sentiment-en splits."""
    root = tmp_path_factory.mktemp("sentiment")
    full = sentiment_en(root / "full")
    sizes = (1500, 300, 400)
    return {p.stem: subset(p, n, root / p.name) for p, n in zip(full, sizes, strict=True)}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, sentiment: dict[str, Path],
              tweets: list[str]) -> tuple[Path, dict[str, float]]:
    root = tmp_path_factory.mktemp("classify")
    model_dir = tiny_model_dir(root / "tiny", tweets)
    task = make_task(sentiment["train"])
    best = finetune(task, model_dir, sentiment["train"], sentiment["dev"], root / "out", FAST)
    return root / "out", best


def test_tiny_model_beats_the_majority_class(finetuned, sentiment) -> None:
    out, best = finetuned
    majority = majority_accuracy(sentiment["train"], sentiment["test"])
    test = evaluate_dir(out, sentiment["test"])
    assert test["accuracy"] > majority + 0.05, (test, majority)
    assert best["accuracy"] > majority_accuracy(sentiment["train"], sentiment["dev"])


def test_out_holds_the_best_model_and_its_results(finetuned, sentiment) -> None:
    out, _ = finetuned
    results = json.loads((out / EVAL_RESULTS).read_text())
    assert {"accuracy", "macro_f1", "step", "eval_file"} <= set(results)
    model = plmkit.load(out)
    assert isinstance(model, SequenceClassifier)
    assert model.task["labels"] == ["negative", "neutral", "positive"]
    again = evaluate_dir(out, sentiment["dev"])  # the saved model is the best one
    assert again["accuracy"] == pytest.approx(results["accuracy"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
    assert max(evals) == pytest.approx(results["accuracy"])


def test_regression_pairs_and_mean_pooling(tmp_path: Path, tweets: list[str]) -> None:
    model_dir = tiny_model_dir(tmp_path / "tiny", tweets)
    train = tmp_path / "sts.tsv"
    rows = [f"{a}\t{b}\t{len(a) % 5}" for a, b in zip(tweets[:40], tweets[40:80], strict=True)]
    train.write_text("text_a\ttext_b\tlabel\n" + "\n".join(rows) + "\n")
    task = make_task(train, pooling="mean", regression=True)
    options = FinetuneOptions(lr=1e-3, batch_size=16, epochs=1, max_seq_len=32, progress=False)
    best = finetune(task, model_dir, train, train, tmp_path / "out", options)
    assert set(best) == {"mse", "pearson"}
    model = plmkit.load(tmp_path / "out")
    assert model.task == {"name": "classify", "labels": None, "pooling": "mean"}
    records = task.predict(model, Tokenizer.load(model_dir / "tokenizer"), train,
                           FinetuneOptions(max_seq_len=32, batch_size=8))
    assert len(records) == 40 and {"text_a", "text_b", "score"} <= set(records[0])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.csv", "text,label\nok,pos\nfine,neg\n", None),
    ("b.csv", "", "b.csv: empty file"),
    ("c.csv", "text,tag\nhi,pos\n", "c.csv:2: no 'label' column"),
    ("d.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", label: 1}\n',
     "d.jsonl:2: invalid JSON"),
    ("e.jsonl", '{"text_a": "x", "text_b": "y", "label": 1}\n{"text_a": "x", "label": 0}\n',
     "e.jsonl:2: no 'text_b' column"),
    ("f.csv", "text,label\nhi,pos\n", "f.csv: only one label"),
    ("g.txt", "hello\n", "g.txt: unknown file type"),
    ("h.jsonl", '["text"]\n', "h.jsonl:1: expected a JSON object"),
])
def test_malformed_training_files(tmp_path: Path, name: str, text: str,
                                  message: str | None) -> None:
    path = write(tmp_path / name, text)
    if message is None:
        assert make_task(path).labels == ["neg", "pos"]
        return
    with pytest.raises(UserError, match=message.replace(".", r"\.")) as e:
        make_task(path)
    assert "\n" not in str(e.value)


def test_eval_label_not_in_the_label_set(tmp_path: Path) -> None:
    task = make_task(write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n"))
    bad = write(tmp_path / "dev.csv", 'text,label\na,pos\n"multi\nline",maybe\n')
    with pytest.raises(UserError, match=r"dev\.csv:4: label 'maybe' is not in the training"):
        task.read(bad, need_label=True)
    with pytest.raises(UserError, match=r"r\.csv:3: label 'x' is not a number"):
        make_task(write(tmp_path / "r.csv", "text,label\na,1.5\nb,x\n"), regression=True)


def test_classification_and_regression_metrics() -> None:
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1])
    assert m["accuracy"] == 0.5
    # F1 per class: 0 -> 2/3, 1 -> 2*1/(3+1) = 1/2, 2 -> 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    r = regression_metrics([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert r["pearson"] == pytest.approx(1.0)
    assert r["mse"] == pytest.approx((1 + 4 + 9) / 3)
    assert regression_metrics([1.0, 2.0], [3.0, 3.0])["pearson"] == 0.0


def label_counts(path: Path) -> dict[str, int]:
    with open(path, encoding="utf-8", newline="") as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    return {label: labels.count(label) for label in set(labels)}


def test_sentiment_builder_writes_fixed_splits(sentiment: dict[str, Path]) -> None:
    full = sentiment["train"].parent / "full"
    sizes = {p.stem: sum(label_counts(p).values()) for p in full.glob("*.csv")}
    assert sizes["dev"] == sizes["test"] and sizes["train"] > 7 * sizes["dev"]
    assert set(label_counts(full / "test.csv")) == {"negative", "neutral", "positive"}
    again = sentiment_en(full.parent / "again")
    assert again[2].read_bytes() == (full / "test.csv").read_bytes()


@pytest.mark.slow
def test_minilm_beats_a_random_bert_of_the_same_shape(tmp_path: Path, minilm_dir: Path,
                                                      sentiment: dict[str, Path]) -> None:
    """The real pretrained checkpoint against the same architecture at its initialisation."""
    random_dir = tmp_path / "random"
    pretrained = plmkit.load(minilm_dir)
    save_model(build(pretrained.config), random_dir)
    Tokenizer.load(minilm_dir).save(random_dir / "tokenizer")
    train = subset(sentiment["train"], 800, tmp_path / "train.csv")
    options = FinetuneOptions(lr=5e-5, batch_size=16, epochs=1, max_seq_len=48, progress=False)
    scores = {}
    for name, model_dir in (("minilm", minilm_dir), ("random", random_dir)):
        best = finetune(make_task(train), model_dir, train, sentiment["dev"],
                        tmp_path / name, options)
        scores[name] = best["accuracy"]
    assert scores["minilm"] > scores["random"] + 0.05, scores

