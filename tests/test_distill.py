"""`plmkit distill` (jobs/distill.py): DistilBERT's every-other-layer initialisation, the loss
terms against hand computations, a student that learns a fine-tuned teacher's predictions on
real tweets, pretraining distillation on real tweets, and one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import plmkit
from conftest import randomize
from finetuned_tiny import TRAIN, finetuned_classifier_dir, labelled_tweets
from plmkit.cli import main
from plmkit.interop.native import Finetuned
from plmkit.jobs.distill import (
    IGNORE,
    Distillation,
    Forward,
    MaskedRows,
    Pupil,
    Weights,
    distill_loss,
    every_other_layer,
    init_from_teacher,
    layer_map,
    soft_target_loss,
    task_batches,
)
from plmkit.jobs.distill_options import DistillArgs
from plmkit.models import build, preset_config
from plmkit.tasks.batching import pad_collate
from plmkit.tasks.classify import ClassifyTask
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training.modeldir import save_model
from pretrained_tiny import pretrained_bert_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert(layers: int, **sizes: int) -> torch.nn.Module:
    return randomize(build(preset_config("bert-tiny", vocab_size=99, max_positions=32,
                                         num_layers=layers, **sizes)))


def test_every_other_layer_copies_the_right_weights() -> None:
    teacher, student = tiny_bert(4), tiny_bert(2)
    assert every_other_layer(4, 2) == [0, 2] and every_other_layer(6, 3) == [0, 2, 4]
    assert init_from_teacher(student, teacher) == [0, 2]
    for i, t in enumerate([0, 2]):
        for (name, p), q in zip(student.encoder.layers[i].named_parameters(),
                                teacher.encoder.layers[t].parameters(), strict=True):
            assert torch.equal(p, q), name
    assert torch.equal(student.encoder.embeddings.tokens.weight,
                       teacher.encoder.embeddings.tokens.weight)
    assert torch.equal(student.pooler.dense.weight, teacher.pooler.dense.weight)
    assert not torch.equal(student.encoder.layers[1].attn.qkv.weight,
                           teacher.encoder.layers[1].attn.qkv.weight)


def test_a_student_of_another_shape_keeps_its_weights() -> None:
    teacher, student = tiny_bert(4), tiny_bert(2, hidden_size=64, num_heads=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    assert init_from_teacher(student, teacher) is None
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())


def test_soft_target_loss_is_the_hand_computed_kl_times_t_squared() -> None:
    s = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]
    t = [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]
    temp = 2.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(x / temp) for x in row]
        return [x / sum(e) for x in e]

    kl = sum(sum(q * math.log(q / p) for p, q in zip(softmax(a), softmax(b), strict=True))
             for a, b in zip(s, t, strict=True)) / 2
    got = soft_target_loss(torch.tensor(s), torch.tensor(t), temp)
    assert got.item() == pytest.approx(kl * temp ** 2, rel=1e-5)


def test_distill_loss_weighs_the_hand_computed_terms() -> None:
    s_logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t_logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    s_last, t_last = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    s_emb, t_emb = torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    targets = torch.tensor([1, -100])  # the second row has no hard label
    w = Weights(temperature=1.0, ce=5.0, hard=2.0, cos=1.0, hidden=3.0, attn=0.0)
    loss, metrics = distill_loss(Forward(s_logits, [s_emb, s_last], []),
                                 Forward(t_logits, [t_emb, t_last], []), targets,
                                 torch.nn.Identity(), None, w)
    kd = soft_target_loss(s_logits, t_logits, 1.0).item()
    hard = -(2.0 - math.log(math.exp(1) + math.exp(2) + 1))  # row 0, label 1
    cos = ((1 - 0.0) + (1 - 1.0)) / 2  # orthogonal, then equal
    hidden = (0 + 1 + 0 + 4) / 4 + (1 + 4 + 0 + 0) / 4  # MSE of the embeddings + the layer
    assert metrics["hard_loss"].item() == pytest.approx(hard, rel=1e-5)
    assert metrics["cos_loss"].item() == pytest.approx(cos, abs=1e-6)
    assert metrics["hidden_loss"].item() == pytest.approx(hidden, rel=1e-6)
    assert loss.item() == pytest.approx(5 * kd + 2 * hard + cos + 3 * hidden, rel=1e-5)
    assert metrics["agreement"].item() == 0.5  # row 0: 1 vs 0; row 1: 2 vs 2
    assert layer_map(2, 6) == [0, 3, 6] and layer_map(3, 6) == [0, 2, 4, 6]


def test_a_copy_of_the_teacher_has_nothing_to_learn(tweets: list[str]) -> None:
    """Hidden states and attention maps come from the hooks on padded batches of real text:
    a student with the teacher's weights has zero soft, hidden and attention losses."""
    tok = train_tokenizer("wordpiece", iter(tweets), 500)
    teacher = randomize(build(preset_config("bert-tiny", vocab_size=tok.vocab_size,
                                            max_positions=64)), std=0.05)
    student = build(teacher.config)
    assert init_from_teacher(student, teacher) == [0, 1]
    batch = masked_batch(tok, tweets[:6])
    w = Weights(2.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    loss, m = Distillation(teacher, MaskedRows(), w)(Pupil(student.eval(), 128), batch)
    assert m["kd_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert m["hidden_loss"].item() == pytest.approx(0.0, abs=1e-8)
    assert m["attn_loss"].item() == pytest.approx(0.0, abs=1e-10)
    assert m["agreement"].item() == 1.0
    loss.backward()  # the attention term reaches the student's weights
    assert student.encoder.layers[0].attn.qkv.weight.grad is not None


def masked_batch(tok: Tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """Padded texts with two masked positions each, as the MLM batches lay them out."""
    enc = tok(texts, max_length=24, padding=False, return_tensors=False)
    batch = pad_collate(tok.pad_id)([{"input_ids": i, "attention_mask": m}
                                     for i, m in zip(enc["input_ids"], enc["attention_mask"],
                                                     strict=True)])
    ids = batch["input_ids"]
    assert (batch["attention_mask"] == 0).any()  # padded: the encoder runs real tokens only
    positions = torch.tensor([[1, 2]] * len(texts))
    return {"input_ids": ids, "input_mask": batch["attention_mask"],
            "segment_ids": torch.zeros_like(ids), "masked_lm_positions": positions,
            "masked_lm_ids": ids.gather(1, positions),
            "masked_lm_weights": torch.ones(len(texts), 2)}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    return finetuned_classifier_dir(tmp_path_factory, tweets)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real labelled tweets: half of the teacher's training set labelled, the rest unlabeled
    text, and the 300 tweets it did not see as the eval file."""
    root = tmp_path_factory.mktemp("distill-data")
    data = labelled_tweets()
    paths = {"train": root / "train.jsonl", "unlabeled": root / "unlabeled.txt",
             "eval": root / "eval.jsonl"}
    paths["train"].write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                      for t, y in data[:TRAIN // 2]), encoding="utf-8")
    paths["unlabeled"].write_text("".join(t.replace("\n", " ") + "\n"
                                          for t, _ in data[TRAIN // 2:TRAIN]), encoding="utf-8")
    paths["eval"].write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                     for t, y in data[TRAIN:]), encoding="utf-8")
    return paths


@pytest.mark.slow  # the shared tiny teacher (pretrained, fine-tuned) and 2 epochs: ~40 s
def test_task_student_learns_the_teachers_predictions(teacher: Path, files: dict[str, Path],
                                                      tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--student-layers", "1",
                 "--train", str(files["train"]), "--unlabeled", str(files["unlabeled"]),
                 "--eval", str(files["eval"]), "--out", str(out), "--epochs", "2",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["teacher_layers"] == [0] and result["examples"] == TRAIN
    model = plmkit.load(out)  # a fine-tuned model directory like finetune's OUT
    assert model.config.num_layers == 1 and model.task["name"] == "classify"
    assert main(["evaluate", "--model", str(out), "--eval", str(files["eval"])]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(result["accuracy"])
    taught, learnt = (predictions(d, files["eval"], tmp_path) for d in (teacher, out))
    agreement = sum(a == b for a, b in zip(taught, learnt, strict=True)) / len(taught)
    chance = max(taught.count(y) for y in set(taught)) / len(taught)
    assert agreement > chance + 0.05, (agreement, chance)


def predictions(model: Path, path: Path, tmp: Path) -> list[str]:
    output = tmp / f"{model.name}.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(path), "--output",
                 str(output), "--overwrite"]) == 0
    return [json.loads(line)["label"] for line in output.read_text().splitlines()]


def test_pretraining_distillation_writes_a_loadable_student(
        tmp_path_factory: pytest.TempPathFactory, tweets: list[str], tmp_path: Path,
        capsys) -> None:
    """A narrower student (its own preset shape: the projection W_h) on real tweets, with
    every term on; OUT loads and shares the teacher's tokenizer."""
    pretrained = pretrained_bert_dir(tmp_path_factory, tweets)
    corpus = tmp_path / "tweets.txt"
    corpus.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 400, 8)))
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(pretrained), "--student",
                 "bert-tiny::hidden_size=64:num_layers=1", "--corpus", str(corpus),
                 "--alpha-hidden", "1", "--alpha-attn", "1", "--steps", "4", "--batch-size",
                 "8", "--max-seq-len", "32", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["teacher_layers"] is None  # another width: fresh weights
    assert all(math.isfinite(result[k]) for k in ("kd_loss", "hidden_loss", "attn_loss"))
    model = plmkit.load(out)
    assert model.config.hidden_size == 64 and model.config.vocab_size == 1000
    assert (out / "tokenizer" / "tokenizer.json").read_text() == \
        (pretrained / "tokenizer" / "tokenizer.json").read_text()


def refusal(args: list[str], capsys) -> str:
    assert main(["distill", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_refusals_are_one_line(tmp_path: Path, tweets: list[str], capsys) -> None:
    teacher, other = tmp_path / "teacher", tmp_path / "other"
    for out, texts in ((teacher, tweets[:300]), (other, tweets[300:600])):
        tok = train_tokenizer("wordpiece", iter(texts), 300)  # two vocabularies of one size
        save_model(build(preset_config("bert-tiny", vocab_size=300)), out)
        tok.save(out / "tokenizer")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tweets[:50]))
    base = ["--corpus", str(corpus), "--out", str(tmp_path / "out")]
    assert "no such model directory" in refusal(
        ["--teacher", str(tmp_path / "missing"), "--student-layers", "1", *base], capsys)
    for option in ("--temperature", "--lr", "--epochs"):
        for bad in ("0", "-1", "nan"):
            assert f"{option} must be a positive number" in refusal(
                ["--teacher", str(teacher), "--student-layers", "1", option, bad, *base],
                capsys)
    assert "must share one" in refusal(
        ["--teacher", str(teacher), "--student", str(other), *base], capsys)
    assert "more than the teacher's 2" in refusal(
        ["--teacher", str(teacher), "--student-layers", "3", *base], capsys)
    assert "--student bert-tiny:mlm:masking=static: a student is PRESET[::FIELD=VALUE...]" in \
        refusal(["--teacher", str(teacher), "--student", "bert-tiny:mlm:masking=static", *base],
                capsys)
    assert "--student bert-tiny::num_layers=abc: num_layers must be an integer" in refusal(
        ["--teacher", str(teacher), "--student", "bert-tiny::num_layers=abc", *base], capsys)
    assert "pretrained (give --corpus)" in refusal(
        ["--teacher", str(teacher), "--student-layers", "1", "--train", str(corpus),
         "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


def test_records_without_a_label_and_unlabeled_text_get_no_hard_target(
        tmp_path: Path, tweets: list[str]) -> None:
    tok = train_tokenizer("wordpiece", iter(tweets[:300]), 300)
    train, unlabeled = tmp_path / "train.jsonl", tmp_path / "more.txt"
    train.write_text("".join(json.dumps({"text": t, **({"label": "pos"} if i % 2 else {})})
                             + "\n" for i, t in enumerate(tweets[:10])))
    unlabeled.write_text("\n".join(t.replace("\n", " ") for t in tweets[10:16]) + "\n")
    f = Finetuned(torch.nn.Identity(), ClassifyTask(["neg", "pos"]), tok,
                  FinetuneOptions(max_seq_len=32, batch_size=4))
    args = DistillArgs(teacher=tmp_path, out=tmp_path / "out", train=train, unlabeled=unlabeled)
    data = task_batches(f, args, f.options)
    labels = [e["labels"] for e in data.examples]
    assert len(labels) == 16 and labels.count(1) == 5 and labels.count(IGNORE) == 11


def test_help_lists_every_option_with_examples(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["distill", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--student-layers" in text and "--alpha-attn" in text
