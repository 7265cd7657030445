"""A tiny BERT pretrained briefly on real tweets, shared by the inspect / prune / serve tests
(pretrained once per session: each test file's fixture reuses the directory under pytest's
base temp)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plmkit.jobs.pretrain import PretrainArgs, pretrain

TRAIN_TWEETS = 1800  # the rest of the `tweets` fixture (2000) is held out


def pretrained_bert_dir(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    """bert-tiny, MLM only, 200 steps of 32 x 32 tokens on 1800 real tweets (a 1000-token
    WordPiece vocabulary): enough to predict masked tokens twice as well as their unigram
    frequency does (test_inspect.py)."""
    root = tmp_path_factory.getbasetemp() / "pretrained-bert-tiny"
    out = root / "run"
    if (out / "plmkit.json").is_file():
        return out
    root.mkdir(exist_ok=True)
    corpus = root / "tweets.txt"
    docs = ["\n".join(tweets[i:i + 8]) for i in range(0, TRAIN_TWEETS, 8)]
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster than two
    try:
        pretrain(PretrainArgs(model="bert-tiny", objective="mlm", corpus=[corpus], out=out,
                              vocab_size=1000, batch_size=32, seq_len=32, lr=1e-3, steps=200,
                              warmup=30, save_every=200, eval_every=1000, log_every=100,
                              progress=False))
    finally:
        torch.set_num_threads(threads)
    return out
