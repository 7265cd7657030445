"""`plmkit export --format hf` of fine-tuned models: every task head loads in its transformers
class with the same logits (each family, tiny random models), and on models fine-tuned a few
steps on real data `transformers.pipeline(task, model=EXPORT)` predicts what plmkit predicts;
the tokenizer beside the weights gives plmkit's ids and the model card carries the metrics."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

import plmkit
from plmkit.cli import main
from plmkit.data.builders import peoples_daily_sentences, read_tweets
from plmkit.deploy.fill_mask import fill_mask
from plmkit.errors import UserError
from plmkit.interop.export import save_hf
from plmkit.interop.native import load_finetuned
from plmkit.models import build, preset_config
from plmkit.tasks.classify import SequenceClassifier
from plmkit.tasks.squad import SpanQA
from plmkit.tasks.swag import MultipleChoice
from plmkit.tasks.tag import TokenClassifier
from plmkit.tokenizers import Tokenizer
from pretrained_tiny import pretrained_bert_dir
from test_tasks_classify import tiny_model_dir
from test_tasks_squad import TRAIN_QAS
from test_tasks_swag import QUESTIONS, write_swag_csv

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "classify": lambda b: SequenceClassifier(b, ["negative", "neutral", "positive"]),
    "tag": lambda b: TokenClassifier(b, ["O", "B-PER", "I-PER"]),
    "squad": SpanQA,
    "swag": MultipleChoice,
}
AUTO = {"classify": transformers.AutoModelForSequenceClassification,
        "tag": transformers.AutoModelForTokenClassification,
        "squad": transformers.AutoModelForQuestionAnswering,
        "swag": transformers.AutoModelForMultipleChoice}
FAMILIES = ["bert", "roberta", "albert", "electra", "ernie", "xlnet"]
UNEXPORTABLE = {("electra", "classify")}  # ElectraClassificationHead adds dense + GELU


def hf_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids)
    if hasattr(out, "start_logits"):
        return torch.stack([out.start_logits, out.end_logits], -1)  # (B, S, 2)
    return out.logits


@pytest.mark.parametrize("task", sorted(HEADS))
@pytest.mark.parametrize("family", FAMILIES)
def test_each_head_loads_in_its_transformers_class(family: str, task: str,
                                                   tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HEADS[task](build(preset_config(f"{family}-tiny"))).eval()
    if (family, task) in UNEXPORTABLE:
        with pytest.raises(UserError, match="dense \\+ GELU"):
            save_hf(model, tmp_path)
        return
    save_hf(model, tmp_path)
    hf = AUTO[task].from_pretrained(tmp_path).eval()
    assert type(hf).__name__.startswith(("Bert", "Roberta", "Albert", "Electra", "Ernie",
                                         "XLNet"))
    ids = torch.randint(5, 100, (2, 3, 9) if task == "swag" else (2, 9))
    with torch.no_grad():
        ours, theirs = model(ids).logits, hf_logits(hf, ids)
    torch.testing.assert_close(theirs.reshape(ours.shape), ours, atol=1e-5, rtol=1e-4)


def test_mean_pooling_is_refused(tmp_path: Path) -> None:
    model = SequenceClassifier(build(preset_config("bert-tiny")), ["a", "b"], pooling="mean")
    with pytest.raises(UserError, match="--pooling mean"):
        save_hf(model, tmp_path)


def export(model_dir: Path, out: Path) -> Path:
    assert main(["export", "--format", "hf", "--model", str(model_dir), "--out", str(out)]) == 0
    return out


def finetune(task: str, model_dir: Path, train: Path, out: Path, *more: str) -> Path:
    assert main(["finetune", "--task", task, "--model", str(model_dir), "--train", str(train),
                 "--out", str(out), "--lr", "1e-3", "--no-progress", *more]) == 0
    return out


@pytest.fixture(scope="module")
def tweets_split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, str]]]:
    tweets = random.Random(1).sample(read_tweets(), 1300)
    return {"train": tweets[:1200], "test": tweets[1200:]}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, tweets: list[str],
               tweets_split: dict[str, list[tuple[str, str]]]) -> tuple[Path, Path]:
    """The pretrained tiny BERT fine-tuned 3 epochs on 1000 real tweets (eval on 200), and its
    export."""
    root = tmp_path_factory.mktemp("classify")
    model_dir = pretrained_bert_dir(tmp_path_factory, tweets)
    for name, rows in (("train", tweets_split["train"][:1000]),
                       ("dev", tweets_split["train"][1000:])):
        (root / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    out = finetune("classify", model_dir, root / "train.jsonl", root / "out", "--eval",
                   str(root / "dev.jsonl"), "--epochs", "3", "--batch-size", "16",
                   "--max-seq-len", "48")
    return out, export(out, root / "hf")


def test_text_classification_pipeline_predicts_as_plmkit(
        classifier: tuple[Path, Path], tweets_split: dict, tmp_path: Path) -> None:
    out, hf = classifier
    texts = [t for t, _ in tweets_split["test"]]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    loaded = load_finetuned(out)
    ours = loaded.task.predict(loaded.model, loaded.tokenizer, path, loaded.options)
    pipe = transformers.pipeline("text-classification", model=str(hf))
    theirs = pipe(texts, truncation=True, max_length=48, top_k=None)
    spread = [max(r["scores"][label] for r in ours) - min(r["scores"][label] for r in ours)
              for label in ours[0]["scores"]]
    assert max(spread) > 0.05  # the scores depend on the text
    for mine, scores in zip(ours, theirs, strict=True):
        best = max(scores, key=lambda s: s["score"])
        assert best["label"] == mine["label"]
        for s in scores:
            assert s["score"] == pytest.approx(mine["scores"][s["label"]], abs=1e-5)


def test_auto_tokenizer_gives_plmkit_ids(classifier: tuple[Path, Path],
                                         tweets_split: dict) -> None:
    out, hf = classifier
    texts = [t for t, _ in tweets_split["test"][:50]] + ["Ünïcode CAFÉ, 東京 & emoji 🙂!"]
    theirs = transformers.AutoTokenizer.from_pretrained(hf)(texts)["input_ids"]
    ours = Tokenizer.load(out / "tokenizer")(texts, padding=False,
                                             return_tensors=False)["input_ids"]
    assert theirs == ours
    assert len(transformers.AutoTokenizer.from_pretrained(hf)) == Tokenizer.load(hf).vocab_size


def test_model_card_names_task_metrics_and_version(classifier: tuple[Path, Path]) -> None:
    out, hf = classifier
    card = (hf / "README.md").read_text()
    results = json.loads((out / "eval_results.json").read_text())
    assert "pipeline_tag: text-classification" in card
    assert f"plmkit {plmkit.__version__}" in card
    assert f"| accuracy | {results['accuracy']:.4f} |" in card
    assert "lr=0.001" in card
    config = json.loads((hf / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["problem_type"] == "single_label_classification"


def test_regression_export_says_so(tmp_path: Path) -> None:
    model = SequenceClassifier(build(preset_config("bert-tiny")), None)
    save_hf(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["problem_type"], config["num_labels"]) == ("regression", 1)


def test_pruned_classifier_exports_with_the_same_predictions(
        classifier: tuple[Path, Path], tweets_split: dict, tmp_path: Path) -> None:
    out, _ = classifier
    assert main(["prune", "--model", str(out), "--heads", "0:0", "--out",
                 str(tmp_path / "pruned")]) == 0
    hf = export(tmp_path / "pruned", tmp_path / "hf")
    model = plmkit.load(tmp_path / "pruned").eval()
    ids = Tokenizer.load(hf)([t for t, _ in tweets_split["test"][:8]], padding=True)
    with torch.no_grad():
        ours = model(**ids).logits
        theirs = transformers.AutoModelForSequenceClassification.from_pretrained(hf)(**ids)
    torch.testing.assert_close(theirs.logits, ours, atol=1e-5, rtol=1e-4)


def test_token_classification_pipeline_tags_as_plmkit(tmp_path: Path) -> None:
    """People's Daily entities, one character a word: the pipeline's tag of each character is
    plmkit's."""
    sentences = peoples_daily_sentences()[:600]
    conll = "\n\n".join("\n".join(f"{c} {t}" for c, t in s) for s in sentences) + "\n"
    (tmp_path / "train.conll").write_text(conll, encoding="utf-8")
    model_dir = tiny_model_dir(tmp_path / "tiny", ["".join(c for c, _ in s) for s in sentences])
    out = finetune("tag", model_dir, tmp_path / "train.conll", tmp_path / "out",
                   "--epochs", "3", "--batch-size", "16", "--max-seq-len", "64")
    hf = export(out, tmp_path / "hf")
    test = [s for s in peoples_daily_sentences()[600:640] if len(s) < 60]
    (tmp_path / "test.conll").write_text(
        "\n\n".join("\n".join(c for c, _ in s) for s in test) + "\n", encoding="utf-8")
    loaded = load_finetuned(out)
    ours = loaded.task.predict(loaded.model, loaded.tokenizer, tmp_path / "test.conll",
                               loaded.options)
    pipe = transformers.pipeline("token-classification", model=str(hf), ignore_labels=[])
    scores = []
    for mine, sentence in zip(ours, test, strict=True):
        found = pipe("".join(c for c, _ in sentence))
        assert [entity["entity"] for entity in found] == mine["tags"]
        scores += [entity["score"] for entity in found]
    assert max(scores) - min(scores) > 0.05  # the tags' probabilities depend on the text


def squad_json(path: Path) -> Path:
    paragraphs = [{"context": c, "qas": [{"id": f"q{i}", "question": q, "answers": [
        {"text": a, "answer_start": c.index(a)}]}]} for i, (c, q, a) in enumerate(TRAIN_QAS)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t",
                                                            "paragraphs": paragraphs}]}))
    return path


def best_span(start: torch.Tensor, end: torch.Tensor, context: list[bool],
              longest: int = 30) -> tuple[int, int]:
    """The (start, end) token pair in the context with the highest start + end logit."""
    scores = start[:, None] + end[None, :]  # (S, S)
    allowed = torch.tensor(context)
    valid = allowed[:, None] & allowed[None, :]
    valid &= torch.ones_like(valid).triu() & ~torch.ones_like(valid).triu(longest)
    flat = scores.masked_fill(~valid, float("-inf")).argmax()
    return int(flat // scores.shape[1]), int(flat % scores.shape[1])


def test_question_answering_model_answers_as_plmkit(tmp_path: Path, minilm_dir: Path) -> None:
    """transformers 5 has no question-answering pipeline: AutoModelForQuestionAnswering's
    logits, decoded by BERT's rule (best start + end within the passage), give plmkit's
    answers."""
    train = squad_json(tmp_path / "train.json")
    out = finetune("squad", minilm_dir, train, tmp_path / "out", "--epochs", "3",
                   "--max-seq-len", "64", "--batch-size", "8")
    hf = export(out, tmp_path / "hf")
    loaded = load_finetuned(out)
    ours = loaded.task.predict(loaded.model, loaded.tokenizer, train, loaded.options)
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(hf).eval()
    for mine, (context, question, _) in zip(ours, TRAIN_QAS, strict=True):
        enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0]
        with torch.no_grad():
            out_ = model(**enc)
        first, last = best_span(out_.start_logits[0], out_.end_logits[0],
                                [i == 1 for i in enc.sequence_ids(0)])
        start, end = int(offsets[first][0]), int(offsets[last][1])
        assert (context[start:end], start, end) == (mine["answer"], mine["start"], mine["end"])


def test_multiple_choice_model_chooses_as_plmkit(tmp_path: Path, minilm_dir: Path) -> None:
    train = write_swag_csv(tmp_path / "train.csv")
    out = finetune("swag", minilm_dir, train, tmp_path / "out", "--epochs", "2",
                   "--max-seq-len", "32", "--batch-size", "4")
    hf = export(out, tmp_path / "hf")
    loaded = load_finetuned(out)
    ours = loaded.task.predict(loaded.model, loaded.tokenizer, train, loaded.options)
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf)
    model = transformers.AutoModelForMultipleChoice.from_pretrained(hf).eval()
    for mine, (sent1, sent2, endings, _) in zip(ours, QUESTIONS, strict=True):
        batch = tokenizer([sent1] * len(endings), [f"{sent2} {e}" for e in endings],
                          padding=True, return_tensors="pt")
        with torch.no_grad():
            probs = model(**{k: v[None] for k, v in batch.items()}).logits.softmax(-1)[0]
        assert int(probs.argmax()) == mine["label"]
        assert probs.tolist() == pytest.approx(mine["scores"], abs=1e-5)


def test_fill_mask_pipeline_predicts_as_plmkit(tmp_path_factory: pytest.TempPathFactory,
                                               tweets: list[str], tmp_path: Path) -> None:
    run = pretrained_bert_dir(tmp_path_factory, tweets)
    hf = export(run, tmp_path / "hf")
    texts = ["i love this [MASK] so much", "the [MASK] is going to be great tonight"]
    ours = fill_mask(plmkit.load(run), Tokenizer.load(run / "tokenizer"), texts, top_k=5)
    pipe = transformers.pipeline("fill-mask", model=str(hf), top_k=5)
    for mine, text in zip(ours, texts, strict=True):
        theirs = pipe(text)
        assert [p["token"] for p in theirs] == [p["id"] for p in mine[0]]
        assert [p["score"] for p in theirs] == pytest.approx([p["score"] for p in mine[0]],
                                                             abs=1e-5)
        assert all(p["token_str"].strip() for p in theirs)
