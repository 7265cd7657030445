"""A tiny sentiment classifier fine-tuned on real labelled tweets, shared by the deploy tests
(test_serve_onnx.py, test_inference.py): fine-tuned once per session under pytest's base
temp, from the pretrained bert-tiny of pretrained_tiny.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from plmkit.cli import main
from pretrained_tiny import pretrained_bert_dir

TRAIN = 1500  # labelled tweets to fine-tune on; the rest of `labelled_tweets` is held out


def labelled_tweets() -> list[tuple[str, str]]:
    """1800 real tweets with their sentiment (negative / neutral / positive), shuffled."""
    from plmkit.data.builders import read_tweets

    return random.Random(0).sample(read_tweets(), 1800)


def finetuned_classifier_dir(tmp_path_factory: pytest.TempPathFactory,
                             tweets: list[str]) -> Path:
    """The pretrained bert-tiny fine-tuned for 3 epochs on `TRAIN` labelled tweets, 64
    tokens each (about 60% accuracy on the held-out 300: 3 classes, the largest 43%)."""
    root = tmp_path_factory.getbasetemp() / "finetuned-bert-tiny"
    out = root / "run"
    if (out / "plmkit.json").is_file():
        return out
    pretrained = pretrained_bert_dir(tmp_path_factory, tweets)
    root.mkdir(exist_ok=True)
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                             for t, y in labelled_tweets()[:TRAIN]), encoding="utf-8")
    assert main(["finetune", "--task", "classify", "--model", str(pretrained), "--train",
                 str(train), "--out", str(out), "--epochs", "3", "--lr", "1e-3",
                 "--max-seq-len", "64", "--no-progress"]) == 0
    return out
