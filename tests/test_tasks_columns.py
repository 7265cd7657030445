"""Task files with the user's own column names (issue 26, item 5): real labelled tweets in a
Parquet file and a csv whose columns are `sentence` / `sentiment`, fine-tuned with
--text-field / --label-field; evaluate and predict default to the columns finetune used, and a
missing column is one line naming the file and the columns it has."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plmkit.cli import main
from plmkit.data.sources import read_tweets
from plmkit.errors import UserError
from plmkit.jobs.compare.downstream import task_options
from plmkit.jobs.compare.run import CompareArgs, setup
from plmkit.models import build, preset_config
from plmkit.tasks.classify import read_examples
from plmkit.tasks.files import Columns
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import train_tokenizer
from plmkit.training.modeldir import save_model


@functools.cache
def labelled() -> list[tuple[str, str]]:
    """520 real tweets with their sentiment, shuffled (the source file is sorted by label)."""
    return random.Random(0).sample(read_tweets(), 520)


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT fine-tuned for one epoch on 300 real tweets stored as `sentence` and
    `sentiment` columns of a Parquet file, evaluated on 100 more in a csv of the same names."""
    root = tmp_path_factory.mktemp("columns")
    tweets = labelled()[:400]
    tok = train_tokenizer("wordpiece", (t for t, _ in tweets), 1500)
    model = root / "tiny"
    save_model(build(preset_config("bert-tiny", vocab_size=tok.vocab_size, max_positions=64)),
               model)
    tok.save(model / "tokenizer")
    train = root / "train.parquet"
    pq.write_table(pa.table({"sentence": [t for t, _ in tweets[:300]],
                             "sentiment": [y for _, y in tweets[:300]]}), train)
    dev = write_csv(root / "dev.csv", ["id", "sentence", "sentiment"],
                    [(str(i), t, y) for i, (t, y) in enumerate(tweets[300:])])
    out = root / "out"
    assert main(["finetune", "--task", "classify", "--model", str(model), "--train", str(train),
                 "--eval", str(dev), "--out", str(out), "--epochs", "1", "--lr", "1e-3",
                 "--max-seq-len", "32", "--no-progress", "--text-field", "sentence",
                 "--label-field", "sentiment"]) == 0
    return {"root": root, "model": model, "train": train, "dev": dev, "out": out}


def test_finetune_records_the_columns(run: dict[str, Path]) -> None:
    saved = json.loads((run["out"] / "finetune.json").read_text())
    assert (saved["text_field"], saved["text_pair_field"], saved["label_field"]) == (
        "sentence", None, "sentiment")


def test_evaluate_defaults_to_the_columns_finetune_used(run: dict[str, Path], capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run["out"]), "--eval", str(run["dev"])]) == 0
    scores = json.loads(capsys.readouterr().out)
    saved = json.loads((run["out"] / "eval_results.json").read_text())
    assert scores["accuracy"] == pytest.approx(saved["accuracy"])
    with open(run["dev"], encoding="utf-8", newline="") as f:
        labels = Counter(row["sentiment"] for row in csv.DictReader(f))
    assert scores["majority_baseline"] == pytest.approx(max(labels.values()) / 100)


def test_predict_reads_the_named_column_of_a_table(run: dict[str, Path], capsys) -> None:
    texts = [t for t, _ in labelled()[400:420]]
    table = run["root"] / "unlabelled.parquet"
    pq.write_table(pa.table({"sentence": texts}), table)
    output = run["root"] / "predictions.jsonl"
    assert main(["predict", "--model", str(run["out"]), "--input", str(table),
                 "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["text"] for r in records] == texts
    assert {r["label"] for r in records} <= {"negative", "neutral", "positive"}


def test_a_missing_column_is_one_line_naming_the_file_and_its_columns(
        run: dict[str, Path], capsys) -> None:
    plain = write_csv(run["root"] / "plain.csv", ["text", "label"],
                      [(t, y) for t, y in labelled()[:5]])
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run["out"]), "--eval", str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(plain) in err and "'sentence'" in err and "'text', 'label'" in err
    # given on the command line, the file's own names work
    assert main(["evaluate", "--model", str(run["out"]), "--eval", str(plain),
                 "--text-field", "text", "--label-field", "label"]) == 0


def test_columns_are_options_of_classify_and_similarity_only(run: dict[str, Path], capsys) -> None:
    assert main(["finetune", "--task", "tag", "--model", str(run["model"]), "--train",
                 str(run["dev"]), "--out", str(run["root"] / "tag"),
                 "--label-field", "sentiment"]) == 2
    err = capsys.readouterr().err
    assert "--label-field is an option of --task classify or similarity only" in err


def test_sentence_pairs_from_named_columns(tmp_path: Path) -> None:
    tweets = labelled()[:6]
    pairs = write_csv(tmp_path / "pairs.csv", ["premise", "hypothesis", "same"],
                      [(a, b, str(ya == yb)) for (a, ya), (b, yb)
                       in zip(tweets[:3], tweets[3:], strict=True)])
    examples = read_examples(pairs, True, columns=Columns("premise", "hypothesis", "same"))
    assert [(e.text, e.pair) for e in examples] == [
        (a, b) for (a, _), (b, _) in zip(tweets[:3], tweets[3:], strict=True)]
    assert [e.label for e in examples] == [str(ya == yb) for (_, ya), (_, yb)
                                           in zip(tweets[:3], tweets[3:], strict=True)]
    # text_a stays the first text when only the second is named
    renamed = write_csv(tmp_path / "ab.csv", ["text_a", "second", "label"], [("x", "y", "1")])
    first = read_examples(renamed, True, columns=Columns(pair="second"))[0]
    assert (first.text, first.pair) == ("x", "y")


def test_compare_applies_the_columns_to_the_users_files_only() -> None:
    options = FinetuneOptions(text_field="sentence", label_field="sentiment")
    assert task_options("classify/classify", options).columns() == Columns(
        "sentence", None, "sentiment")
    assert task_options("classify/sentiment-en", options).columns() == Columns()
    # named columns are part of the setup an OUT is kept for; default ones leave it as it was
    args = CompareArgs(["bert-tiny"], [Path("c.txt")], Path("out"), ("steps", 1))
    assert "columns" not in setup(args)
    named = dataclasses.replace(args, text_field="sentence")
    assert setup(named)["columns"] == {"text": "sentence", "pair": None, "label": "label"}


def test_a_missing_label_column_is_named_as_the_option_gave_it(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "t.csv", ["text", "lab"], [("good", "pos")])
    with pytest.raises(UserError, match=r"t.csv:2: no 'sentiment' column \(the record has "
                                        r"'text', 'lab'\)"):
        read_examples(file, True, columns=Columns(label="sentiment"))
