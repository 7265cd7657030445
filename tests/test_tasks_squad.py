"""SQuAD span QA: official EM / F1, windows over long passages, span decoding, training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.tasks.options import FinetuneOptions
from plmkit.tasks.squad import (
    Question,
    SpanQA,
    SquadTask,
    Window,
    decode,
    doc_spans,
    evaluate_predictions,
    exact_score,
    f1_score,
    make_task,
    make_windows,
    max_context_span,
    normalize_answer,
    read_squad,
    squad_metrics,
    window_spans,
)
from plmkit.tokenizers import Tokenizer

# ----------------------------------------------------------------------------- official metrics


def test_normalize_answer_follows_the_official_rules() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple a day, the end.") == "apple day end"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("U.S.-made") == "usmade"  # punctuation removed, not split on


def test_exact_and_f1_on_hand_made_cases() -> None:
    assert exact_score("the Eiffel Tower", "Eiffel Tower.") == 1
    assert f1_score("Eiffel Tower", "tower") == pytest.approx(2 / 3)  # P 1, R 1/2
    assert f1_score("a red car", "the red red car") == pytest.approx(0.8)  # P 2/3, R 1
    assert f1_score("Paris", "London") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("", "Paris") == 0.0 and f1_score("x", "") == 0.0


def squad_file(path: Path, qas: list[dict], context: str = "Paris is the capital of France.",
               version_2: bool = False) -> Path:
    if version_2:
        for qa in qas:
            qa.setdefault("is_impossible", not qa["answers"])
    path.write_text(json.dumps({"version": "2.0" if version_2 else "1.1", "data": [
        {"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}))
    return path


def qa(qid: str, *answers: str, context: str = "Paris is the capital of France.") -> dict:
    return {"id": qid, "question": "?", "answers": [
        {"text": a, "answer_start": context.index(a)} for a in answers]}


def test_metrics_take_the_best_gold_answer_and_count_missing_as_wrong(tmp_path: Path) -> None:
    dev = squad_file(tmp_path / "dev.json", [qa("a", "Paris", "Paris is"), qa("b", "France"),
                                             qa("c", "the capital")])
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a": "paris is", "b": "of France"}))
    metrics = evaluate_predictions(dev, pred)
    assert metrics["exact_match"] == pytest.approx(100 / 3)  # a exact, b not, c missing
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)  # b: P 1/2, R 1 -> 2/3
    assert "HasAns_total" not in metrics


def test_v2_no_answer_scores_only_an_empty_prediction(tmp_path: Path) -> None:
    dev = squad_file(tmp_path / "dev.json", [qa("a", "Paris"), qa("b"), qa("c"), qa("d", "France")],
                     version_2=True)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a": "Paris", "b": "", "c": "France", "d": ""}))
    m = evaluate_predictions(dev, pred)
    assert (m["HasAns_total"], m["NoAns_total"], m["total"]) == (2, 2, 4)
    assert m["HasAns_exact"] == m["HasAns_f1"] == 50.0
    assert m["NoAns_exact"] == m["NoAns_f1"] == 50.0
    assert m["exact_match"] == m["f1"] == 50.0


def one_answer(text: str, start: object) -> str:
    return json.dumps({"data": [{"paragraphs": [{"context": "We met in Paris.", "qas": [
        {"id": "q17", "question": "?", "answers": [{"text": text, "answer_start": start}]}]}]}]})


@pytest.mark.parametrize("content, message", [
    ("{\"data\": [", "dev.json:1: invalid JSON"),
    (json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}),
     "dev.json: article 0 paragraph 0: missing 'context'"),
    (json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q1"}]}]}]}),
     "dev.json: question 'q1': missing 'question'"),
    (one_answer("Paris", 3),
     "dev.json: question 'q17': answer 'Paris' is not at answer_start 3 of its context "
     "(found 'met i')"),
    (one_answer("We", -16),  # Python slicing would find "We" there
     "dev.json: question 'q17': answer_start -16 is negative"),
    (one_answer("Paris.", 13),
     "dev.json: question 'q17': answer 'Paris.' at answer_start 13 ends at character 19, past "
     "the end of its 16-character context"),
    (one_answer("", 40), "dev.json: question 'q17': empty answer text at answer_start 40"),
    (one_answer("Paris", 10.0), "dev.json: question 'q17': 'answer_start' has the wrong type"),
])
def test_malformed_squad_files_name_the_file_and_record(tmp_path: Path, content: str,
                                                        message: str) -> None:
    path = tmp_path / "dev.json"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read_squad(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_predictions_for_unknown_questions_are_refused(tmp_path: Path) -> None:
    dev = squad_file(tmp_path / "dev.json", [qa("a", "Paris")])
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a": "Paris", "zz": "x"}))
    with pytest.raises(UserError, match=r"pred.json: question 'zz' is not in .*dev.json"):
        evaluate_predictions(dev, pred)


# ----------------------------------------------------------------------------- windows


def test_doc_spans_and_the_max_context_rule() -> None:
    # run_squad.py's example: "the man went to the store and bought a gallon of milk",
    # windows of 5 every 3 tokens; "bought" (7) has most context in span C (left 1, right 3).
    spans = doc_spans(11, 5, 3)
    assert spans == [(0, 5), (3, 5), (6, 5)]
    assert max_context_span(spans, 7) == 2
    assert max_context_span(spans, 4) == 1 and max_context_span(spans, 0) == 0
    covered = [start + k for start, size in spans for k in range(size)]
    assert set(covered) == set(range(11))


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> Tokenizer:
    return Tokenizer.load(minilm_dir)


LONG = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(80))


def test_long_passage_is_split_and_the_answer_labelled_in_its_window(tokenizer: Tokenizer) -> None:
    context = LONG + " The capital of France is Paris."
    answer = ("Paris", context.index("Paris"))
    q = Question("q", "What is the capital of France?", context, [answer])
    windows = make_windows(tokenizer, [q])
    passage = len(tokenizer.encode(context))
    assert len(windows) > 1 and passage > 384
    assert all(len(w.input_ids) <= 384 for w in windows)
    assert all(w.input_ids[0] == tokenizer.cls_id for w in windows)
    # every passage token is the max-context token of exactly one window
    assert sum(sum(w.max_context) for w in windows) == passage
    labelled = [w for w in windows if w.start]
    assert len(labelled) == 1 and windows[0].start == windows[0].end == 0
    w = labelled[0]
    start, end = w.offsets[w.start], w.offsets[w.end]
    assert context[start[0]:end[1]] == "Paris"
    assert tokenizer.decode(w.input_ids[w.start:w.end + 1]) == "paris"
    # the question is in every window, the passage tokens carry segment 1
    assert all(w.token_type_ids[w.offsets.index(next(o for o in w.offsets if o))] == 1
               for w in windows)


def test_answer_in_the_second_window_is_merged_back(tokenizer: Tokenizer) -> None:
    context = LONG + " The capital of France is Paris."
    q = Question("q", "What is the capital of France?", context)
    windows = make_windows(tokenizer, [q])
    target = context.index("Paris")
    logits = []
    for w in windows:
        lg = torch.zeros(len(w.input_ids), 2)  # (S, 2)
        for i, o in enumerate(w.offsets):
            if o is not None and o[0] == target:
                lg[i] = 5.0
        logits.append(lg)
    answer = decode(q, logits, windows, version_2=False)
    assert answer.text == "Paris" and (answer.char_start, answer.char_end) == (target, target + 5)


def test_spans_start_only_on_max_context_tokens(tokenizer: Tokenizer) -> None:
    q = Question("q", "Which topic?", LONG)
    first, second = make_windows(tokenizer, [q])[:2]
    # a token of the first window whose max context is in the second window
    i = max(k for k, o in enumerate(first.offsets) if o is not None and not first.max_context[k])
    lg = torch.zeros(len(first.input_ids), 2)
    lg[i] = 10.0
    assert window_spans(lg[:, 0], lg[:, 1], first) == [] or all(
        s.start != i for s in window_spans(lg[:, 0], lg[:, 1], first))
    assert second.max_context[second.offsets.index(first.offsets[i])]


def random_window(rng: random.Random) -> Window:
    length = rng.randint(8, 60)
    query = rng.randint(1, length - 4)
    offsets: list[tuple[int, int] | None] = [None] * (query + 2)
    while len(offsets) < length - 1:
        n = len(offsets) - query - 2
        offsets.append((3 * n, 3 * n + 2))
    offsets.append(None)  # the last [SEP]
    context = [o is not None and rng.random() < 0.8 for o in offsets]
    return Window(0, [0] * length, [0] * length, offsets, context)


def test_span_decoding_never_returns_an_invalid_span() -> None:
    rng = random.Random(0)
    for _ in range(300):
        w = random_window(rng)
        lg = torch.randn(len(w.input_ids), 2) * rng.choice([0.1, 1.0, 10.0])
        for span in window_spans(lg[:, 0], lg[:, 1], w, max_answer=rng.randint(1, 30)):
            assert span.start <= span.end
            assert w.offsets[span.start] is not None and w.offsets[span.end] is not None
            assert w.max_context[span.start]
            assert span.char_start < span.char_end


def test_decoded_text_is_a_substring_of_the_passage_or_empty() -> None:
    rng = random.Random(1)
    context = "".join(rng.choice("abc ") for _ in range(200))
    q = Question("q", "?", context)
    for _ in range(100):
        windows = [random_window(rng) for _ in range(rng.randint(1, 3))]
        logits = [torch.randn(len(w.input_ids), 2) for w in windows]
        answer = decode(q, logits, windows, version_2=rng.random() < 0.5,
                        null_threshold=rng.uniform(-2, 2))
        assert answer.text == context[answer.char_start:answer.char_end] or answer.char_start == -1
        assert 0.0 <= answer.score <= 1.0


def test_v2_null_threshold_decides_no_answer() -> None:
    w = Window(0, [0] * 6, [0] * 6, [None, None, (0, 5), (6, 8), (9, 12), None], [True] * 6)
    q = Question("q", "?", "Paris is nice")
    lg = torch.zeros(6, 2)
    lg[0] = 2.0  # null score 4
    lg[2] = 1.5  # best span "Paris": 3
    assert decode(q, [lg], [w], version_2=True).text == ""
    assert decode(q, [lg], [w], version_2=True, null_threshold=1.5).text == "Paris"
    assert decode(q, [lg], [w], version_2=False).text == "Paris"


# ----------------------------------------------------------------------------- training


TRAIN_QAS = [
    ("Paris is the capital of France.", "What is the capital of France?", "Paris"),
    ("Berlin is the capital of Germany.", "What is the capital of Germany?", "Berlin"),
    ("The cat sat on the mat.", "Where did the cat sit?", "on the mat"),
    ("Water boils at 100 degrees.", "At what temperature does water boil?", "100 degrees"),
    ("Mount Everest is the highest mountain.", "Which mountain is the highest?", "Mount Everest"),
    ("The Nile flows through Egypt.", "Which country does the Nile flow through?", "Egypt"),
    ("Shakespeare wrote Hamlet.", "Who wrote Hamlet?", "Shakespeare"),
    ("The sun rises in the east.", "Where does the sun rise?", "the east"),
]


@pytest.fixture
def train_json(tmp_path: Path) -> Path:
    paragraphs = [{"context": c, "qas": [{"id": f"q{i}", "question": q, "answers": [
        {"text": a, "answer_start": c.index(a)}]}]} for i, (c, q, a) in enumerate(TRAIN_QAS)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t",
                                                            "paragraphs": paragraphs}]}))
    return path


def train_steps(task: SquadTask, model: torch.nn.Module, batch: dict, steps: int,
                lr: float) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss, metrics = task.objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(metrics) == {"span_accuracy"}
    return losses


def test_short_training_run_lowers_the_loss_and_round_trips(
        minilm_dir: Path, tokenizer: Tokenizer, train_json: Path, tmp_path: Path) -> None:
    task = make_task(train_json)
    assert isinstance(task, SquadTask) and not task.version_2
    options = FinetuneOptions(batch_size=8, max_seq_len=64)
    model = task.build_model(plmkit.load(minilm_dir))
    batch = next(iter(task.train_batches(tokenizer, options)))
    assert task.steps_per_epoch(options) == 1
    assert batch["input_ids"].shape[0] == 8 and batch["start_positions"].shape == (8,)
    model.backbone.requires_grad_(False)  # the head only: fast on a CPU
    losses = train_steps(task, model, batch, 5, lr=1e-2)
    assert losses[-1] < 0.8 * losses[0]

    plmkit.save_model(model, tmp_path / "out")
    loaded = plmkit.load(tmp_path / "out")
    assert isinstance(loaded, SpanQA) and loaded.task == model.task
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch["input_ids"]).logits, loaded(batch["input_ids"]).logits)
    records = make_task(saved=loaded.task).predict(loaded, tokenizer, train_json, options)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(len(TRAIN_QAS))]


@pytest.mark.slow
def test_finetuning_the_whole_model_learns_the_answers(
        minilm_dir: Path, tokenizer: Tokenizer, train_json: Path) -> None:
    task = make_task(train_json)
    options = FinetuneOptions(batch_size=8, max_seq_len=64)
    model = task.build_model(plmkit.load(minilm_dir))
    batch = next(iter(task.train_batches(tokenizer, options)))
    losses = train_steps(task, model, batch, 12, lr=1e-4)
    assert losses[-1] < 0.5 * losses[0]
    assert task.evaluate(model, tokenizer, train_json, options)["f1"] > 50.0


def test_squad_metrics_of_a_v1_file_have_no_v2_keys(train_json: Path) -> None:
    data = read_squad(train_json)
    gold = {q.qid: q.texts[0] for q in data.questions}
    assert squad_metrics(data.questions, gold, data.version_2) == {
        "exact_match": 100.0, "f1": 100.0, "total": float(len(TRAIN_QAS))}
