"""SWAG multiple choice: reading, batch shapes, the score vector, training, malformed files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.tasks.options import FinetuneOptions
from plmkit.tasks.swag import MultipleChoice, SwagTask, make_task, read_swag
from plmkit.tokenizers import Tokenizer

SWAG_COLUMNS = ["video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                "ending0", "ending1", "ending2", "ending3", "label"]
QUESTIONS = [
    ("The man lit the stove.", "He", ["put a pan on it.", "swam to the island.",
                                      "sang to the moon.", "flew away."], 0),
    ("She opened her umbrella.", "The", ["dog barked at cars.", "rain kept falling on it.",
                                         "moon went dark.", "car sped off."], 1),
    ("The baby started crying.", "Her mother", ["painted the fence.", "read a novel.",
                                                "picked her up.", "fixed the roof."], 2),
    ("The batter swung the bat.", "The ball", ["melted in the sun.", "sang a song.",
                                               "fell asleep.", "flew over the fence."], 3),
]


def write_swag_csv(path: Path, rows: list[tuple] = QUESTIONS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SWAG_COLUMNS)
        writer.writeheader()
        for i, (sent1, sent2, endings, label) in enumerate(rows):
            writer.writerow({"video-id": f"v{i}", "fold-ind": i, "startphrase": f"{sent1} {sent2}",
                             "sent1": sent1, "sent2": sent2, "gold-source": "gold",
                             **{f"ending{k}": e for k, e in enumerate(endings)}, "label": label})
    return path


@pytest.fixture
def swag_csv(tmp_path: Path) -> Path:
    return write_swag_csv(tmp_path / "train.csv")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> Tokenizer:
    return Tokenizer.load(minilm_dir)


def test_reads_the_official_csv_and_jsonl(swag_csv: Path, tmp_path: Path) -> None:
    examples = read_swag(swag_csv)
    assert [ex.label for ex in examples] == [0, 1, 2, 3]
    assert examples[0].context == "The man lit the stove."
    assert examples[0].endings[0] == "He put a pan on it."
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text("".join(json.dumps({"context": c, "endings": e, "label": y}) + "\n"
                             for c, _, e, y in QUESTIONS))
    assert [ex.endings for ex in read_swag(jsonl)] == [e for _, _, e, _ in QUESTIONS]


def test_startphrase_is_the_context_without_sent1(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("startphrase,ending0,ending1,label\nA cat,sleeps.,flies.,0\n")
    (ex,) = read_swag(path)
    assert (ex.context, ex.endings, ex.label) == ("A cat", ["sleeps.", "flies."], 0)


@pytest.mark.parametrize("content, message", [
    ("sent1,sent2,ending0,ending1\nA,B,c,d\n", "x.csv:2: no 'label' column"),
    ("sent1,sent2,ending0,ending1,label\nA,B,c,d,2\n", "x.csv:2: label '2' is not in 0..1"),
    ("sent1,sent2,ending0,ending1,label\nA,B,c,d,yes\n", "x.csv:2: label 'yes' is not a choice"),
    ("sent2,ending0,ending1,label\nB,c,d,0\n", "x.csv:2: no 'startphrase' column"),
    ("sent1,sent2,ending0,label\nA,B,c,0\n", "x.csv:2: no 'ending0' and 'ending1' columns"),
    ("sent1,sent2,ending0,ending1,ending2,label\nA,B,c,d,e,0\nA,B,c,d,,1\n",
     "x.csv:3: 'ending2' is empty"),
])
def test_malformed_csv_names_the_file_and_record(tmp_path: Path, content: str,
                                                 message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read_swag(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_malformed_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps({"context": "c", "endings": e, "label": 0}) + "\n"
                            for e in (["a", "b", "c"], ["a", "b"])))
    with pytest.raises(UserError, match=r"x.jsonl:2: 2 endings, but the first record has 3"):
        read_swag(path)
    path.write_text(json.dumps({"context": "c", "endings": ["a", "b"], "label": 5}) + "\n")
    with pytest.raises(UserError, match=r"x.jsonl:1: label 5 is not in 0..1"):
        read_swag(path)
    path.write_text(json.dumps({"context": "c", "endings": "ab", "label": 0}) + "\n")
    with pytest.raises(UserError, match=r"x.jsonl:1: 'endings' must be a list"):
        read_swag(path)


def test_batches_are_batch_by_choices_by_tokens_and_scores_use_each_cls(
        minilm_dir: Path, tokenizer: Tokenizer, swag_csv: Path) -> None:
    task = make_task(swag_csv)
    options = FinetuneOptions(batch_size=3, max_seq_len=32)
    batches = task.train_batches(tokenizer, options)
    assert task.steps_per_epoch(options) == 2
    batch = next(iter(batches))
    b, c, s = batch["input_ids"].shape
    assert (b, c) == (3, 4) and s <= 32
    assert batch["attention_mask"].shape == batch["token_type_ids"].shape == (b, c, s)
    assert (batch["input_ids"][:, :, 0] == tokenizer.cls_id).all()
    model = task.build_model(plmkit.load(minilm_dir)).eval()
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        assert out.logits.shape == (b, c) and out.last_hidden_state.shape[:3] == (b, c, s)
        # the score of choice j of question i is the score vector dotted with its [CLS] vector
        i, j = 1, 2
        single = model.backbone(batch["input_ids"][i, j][None],
                                batch["attention_mask"][i, j][None],
                                batch["token_type_ids"][i, j][None]).pooler_output[0]
        expected = single @ model.score.weight[0] + model.score.bias[0]
        assert torch.allclose(out.logits[i, j], expected, atol=1e-5)


def test_short_training_run_lowers_the_loss_and_round_trips(
        minilm_dir: Path, tokenizer: Tokenizer, swag_csv: Path, tmp_path: Path) -> None:
    task = make_task(swag_csv)
    assert isinstance(task, SwagTask)
    options = FinetuneOptions(batch_size=4, max_seq_len=32)
    model = task.build_model(plmkit.load(minilm_dir))
    batch = next(iter(task.train_batches(tokenizer, options)))
    model.backbone.requires_grad_(False)  # the head only: fast on a CPU
    losses = train_steps(task, model, batch, 8, lr=3e-2)
    assert losses[-1] < 0.8 * losses[0]

    plmkit.save_model(model, tmp_path / "out")
    loaded = plmkit.load(tmp_path / "out")
    assert isinstance(loaded, MultipleChoice) and loaded.task == {"name": "swag"}
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch["input_ids"]).logits, loaded(batch["input_ids"]).logits)
    records = make_task(saved=loaded.task).predict(loaded, tokenizer, swag_csv, options)
    assert [r["line"] for r in records] == [2, 3, 4, 5]
    assert all(len(r["scores"]) == 4 and r["label"] in range(4) for r in records)


def train_steps(task: SwagTask, model: torch.nn.Module, batch: dict, steps: int,
                lr: float) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss, metrics = task.objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(metrics) == {"accuracy"}
    return losses


@pytest.mark.slow
def test_finetuning_the_whole_model_learns_the_choices(
        minilm_dir: Path, tokenizer: Tokenizer, swag_csv: Path) -> None:
    torch.manual_seed(0)  # dropout's masks
    task = make_task(swag_csv)
    options = FinetuneOptions(batch_size=4, max_seq_len=32)
    model = task.build_model(plmkit.load(minilm_dir))
    batch = next(iter(task.train_batches(tokenizer, options)))
    losses = train_steps(task, model, batch, 15, lr=1e-4)
    assert losses[-1] < 0.5 * losses[0]
    assert task.evaluate(model, tokenizer, swag_csv, options) == {"accuracy": 1.0}
