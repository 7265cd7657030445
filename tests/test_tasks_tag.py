"""BIO tagging: entity chunks and scores on hand-made cases, CoNLL reading and its errors,
first-sub-token labels, the People's Daily builder, and a tiny fine-tuning round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

import plmkit
from plmkit.data.builders import peoples_daily_sentences
from plmkit.errors import UserError
from plmkit.jobs.finetune import EVAL_RESULTS, finetune
from plmkit.models import build, preset_config
from plmkit.tasks.options import FinetuneOptions
from plmkit.tasks.tag import (
    IGNORE,
    Sentence,
    TokenClassifier,
    chunks,
    entity_scores,
    make_task,
    read_conll,
)
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training.modeldir import save_model


@pytest.mark.parametrize(("tags", "expected"), [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    (["I-PER", "I-PER", "O"], {("PER", 0, 2)}),  # I- after O starts a chunk (conlleval)
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),  # type change splits
    (["B-ORG", "B-ORG", "I-ORG"], {("ORG", 0, 1), ("ORG", 1, 3)}),  # B- always starts one
    (["O", "O"], set()),
    (["B-LOC"], {("LOC", 0, 1)}),  # a chunk that ends the sentence
])
def test_chunks(tags: list[str], expected: set) -> None:
    assert chunks(tags) == expected


def test_entity_scores() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-LOC"]]
    # gold: PER(0,2) LOC(3,4) ORG(0,1); pred: PER(0,1) LOC(3,4) ORG(0,1) LOC(1,2)
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert entity_scores([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert entity_scores(gold, gold)["f1"] == 1.0


def test_read_conll_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- O\n\nJohn NNP B-PER\nlives VBZ O\n\n\nParis NNP B-LOC\n")
    sentences = read_conll(path, need_tags=True)
    assert [(s.line, s.words, s.tags) for s in sentences] == [
        (3, ["John", "lives"], ["B-PER", "O"]), (7, ["Paris"], ["B-LOC"])]
    path.write_text("John B-PER\nlives\n")
    with pytest.raises(UserError, match=r"a\.conll:2: expected 'token tag'"):
        read_conll(path, need_tags=True)
    path.write_text("John PER\n")
    with pytest.raises(UserError, match=r"a\.conll:1: tag 'PER' is not BIO"):
        read_conll(path, need_tags=True)
    path.write_text("\n\n")
    with pytest.raises(UserError, match=r"a\.conll: no sentences"):
        read_conll(path, need_tags=True)
    train = tmp_path / "train.conll"
    train.write_text("John B-PER\nruns O\n")
    task = make_task(train)
    assert task.labels == ["O", "B-PER"]
    path.write_text("John B-PER\n\nParis B-LOC\n")
    with pytest.raises(UserError, match=r"a\.conll:3: tag 'B-LOC' is not in the training tags"):
        task.read(path, need_tags=True)


def test_labels_go_on_the_first_sub_token(minilm_dir: Path) -> None:
    tok = Tokenizer.load(minilm_dir)
    task = make_task(saved={"name": "tag", "labels": ["O", "B-MISC", "I-MISC"]})
    sentence = Sentence(1, ["an", "unaffable", "hyperparameter"], ["O", "B-MISC", "I-MISC"])
    pieces = [tok.encode(w) for w in sentence.words]
    assert len(pieces[1]) > 1 and len(pieces[2]) > 1
    (feature,), (starts,) = task.features(tok, [sentence], FinetuneOptions(max_seq_len=64))
    assert feature["input_ids"] == [tok.cls_id, *(i for p in pieces for i in p), tok.sep_id]
    assert starts == [1, 2, 2 + len(pieces[1])]
    expected = [IGNORE] * len(feature["input_ids"])
    for position, label in zip(starts, (0, 1, 2), strict=True):
        expected[position] = label
    assert feature["labels"] == expected
    (short,), (cut,) = task.features(tok, [sentence], FinetuneOptions(max_seq_len=4))
    assert cut == [1] and len(short["input_ids"]) <= 4  # words that do not fit are dropped


def test_peoples_daily_entities() -> None:
    sentences = peoples_daily_sentences()
    assert len(sentences) > 10000
    tags = {t for s in sentences[:2000] for _, t in s}
    assert tags == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
    names = {"".join(c for c, _ in s[a:b]) for s in sentences[:5]
             for kind, a, b in chunks([t for _, t in s]) if kind == "PER"}
    assert "江泽民" in names  # 江/nr 泽民/nr: surname and given name make one person


def test_tag_finetune_round_trip(tmp_path: Path) -> None:
    sentences = peoples_daily_sentences()[:200]
    train = tmp_path / "train.conll"
    train.write_text("\n\n".join("\n".join(f"{c} {t}" for c, t in s) for s in sentences) + "\n")
    tok = train_tokenizer("wordpiece", ("".join(c for c, _ in s) for s in sentences), 3000)
    model_dir = tmp_path / "tiny"
    config = preset_config("bert-tiny", vocab_size=tok.vocab_size, max_positions=128)
    save_model(build(config), model_dir)
    tok.save(model_dir / "tokenizer")
    options = FinetuneOptions(lr=1e-3, batch_size=32, epochs=1, max_seq_len=64, progress=False)
    best = finetune(make_task(train), model_dir, train, train, tmp_path / "out", options)
    assert set(best) >= {"precision", "recall", "f1"}
    assert (tmp_path / "out" / EVAL_RESULTS).is_file()
    model = plmkit.load(tmp_path / "out")
    assert isinstance(model, TokenClassifier)
    task = make_task(saved=model.task)
    records = task.predict(model, tok, train, FinetuneOptions(max_seq_len=64))
    assert len(records) == 200
    assert all(len(r["tags"]) == len(r["tokens"]) for r in records)
