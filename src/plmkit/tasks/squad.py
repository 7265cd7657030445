"""Extractive span QA in the SQuAD v1.1 / v2.0 JSON format (BERT, Devlin et al. 2019, sections
4.2 and 4.3; the windowing and decoding follow the reference `run_squad.py`).

Each question becomes one or more windows "[CLS] question [SEP] passage-window [SEP]" (the
tokenizer's own pair layout): at most `MAX_QUERY` question tokens, windows of the passage every
`DOC_STRIDE` tokens so that a window fits in `max_seq_len` (384). A Linear(H, 2) over the last
hidden states gives start and end logits; the loss is the mean of the start and end cross-entropies,
the label being [CLS] (position 0) when the answer is not inside the window or there is none
(v2.0). Decoding takes the `N_BEST` best starts and ends of every window, keeps the spans inside the
passage that start on a token the window has the "max context" of and are at most `MAX_ANSWER`
tokens long, merges the windows and cuts the best span's text out of the original passage by
character offsets. In v2.0 the question is unanswerable when the null score ([CLS] start + end,
the lowest of the windows) beats the best span by more than `null_threshold` (section 4.3).

`evaluate_predictions` scores a `{question id: answer text}` file by the official rules.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Encoding
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.tasks import register_head
from plmkit.tasks.base import FeatureTask, TaskOutput
from plmkit.tasks.batching import Batch, in_batches, pad_collate, run_model
from plmkit.tasks.files import read_text
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer

MAX_SEQ = 384
DOC_STRIDE = 128
MAX_QUERY = 64
MAX_ANSWER = 30
N_BEST = 20
PUNCTUATION = frozenset(string.punctuation)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Question:
    """One SQuAD question with its passage; `answers` are (text, character start) pairs, empty
    for an unanswerable v2.0 question."""

    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.answers]


@dataclass
class SquadFile:
    questions: list[Question]
    version_2: bool  # some question has "is_impossible" (SQuAD v2.0)


def read_json(path: Path) -> Any:
    """A JSON file, or a one-line UserError with the line of the syntax error."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_squad(path: Path) -> SquadFile:
    """The questions of a SQuAD v1.1 / v2.0 file, each answer checked against its context."""
    data = read_json(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise UserError(f"{path}: not a SQuAD file (no \"data\" list at the top)")
    questions: list[Question] = []
    version_2 = False
    seen: set[str] = set()
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, f"article {a}")):
            where = f"article {a} paragraph {p}"
            context = _field(paragraph, "context", str, path, where)
            for qa in _field(paragraph, "qas", list, path, where):
                question = _read_question(qa, context, path, where)
                if question.qid in seen:
                    raise UserError(f"{path}: question {question.qid!r} appears twice")
                seen.add(question.qid)
                version_2 |= "is_impossible" in qa
                questions.append(question)
    return SquadFile(questions, version_2)


def _read_question(qa: Any, context: str, path: Path, where: str) -> Question:
    qid = str(_field(qa, "id", (str, int), path, where))
    where = f"question {qid!r}"
    text = _field(qa, "question", str, path, where)
    impossible = qa.get("is_impossible", False)
    answers = [] if impossible else _field(qa, "answers", list, path, where)
    question = Question(qid, text, context)
    for answer in answers:
        answer_text = _field(answer, "text", str, path, where)
        start = _field(answer, "answer_start", int, path, where)
        _check_offset(context, answer_text, start, f"{path}: {where}")
        question.answers.append((answer_text, start))
    return question


def _check_offset(context: str, text: str, start: int, where: str) -> None:
    """A UserError unless `text` is a non-empty span of `context` starting at `start`."""
    end = start + len(text)
    if not text:
        raise UserError(f"{where}: empty answer text at answer_start {start}")
    if start < 0:
        raise UserError(f"{where}: answer_start {start} is negative")
    if end > len(context):
        raise UserError(f"{where}: answer {text!r} at answer_start {start} ends at character "
                        f"{end}, past the end of its {len(context)}-character context")
    if context[start:end] != text:
        raise UserError(f"{where}: answer {text!r} is not at answer_start {start} of its "
                        f"context (found {context[start:end]!r})")


def _field(record: Any, name: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    if not isinstance(record, dict) or name not in record:
        raise UserError(f"{path}: {where}: missing {name!r}")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{path}: {where}: {name!r} has the wrong type "
                        f"({type(value).__name__})")
    return value


# ---------------------------------------------------------------------------------------------
# Windows (features)


@dataclass
class Window:
    """One model input for a question: `offsets[i]` is the character span in the passage of
    token i, None outside the passage; `max_context[i]` says whether this window is the one
    where passage token i has the most context; `start` / `end` the label positions (0 = [CLS])."""

    question: int  # index into the questions
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]
    max_context: list[bool]
    start: int = 0
    end: int = 0

    def features(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "attention_mask": [1] * len(self.input_ids),
                "token_type_ids": self.token_type_ids, "start_positions": self.start,
                "end_positions": self.end}


def doc_spans(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of each passage window: every `stride` tokens until the end is covered
    (run_squad.py's sliding window)."""
    spans, start = [], 0
    while True:
        size = min(length - start, window)
        spans.append((start, size))
        if start + size >= length:
            return spans
        start += min(size, stride)


def max_context_span(spans: Sequence[tuple[int, int]], position: int) -> int:
    """The span in which `position` has the most context: the largest min(left, right) context,
    ties to the longer span (score + 0.01 * length, as in run_squad.py)."""
    best, best_score = 0, -1.0
    for i, (start, size) in enumerate(spans):
        if not start <= position < start + size:
            continue
        score = min(position - start, start + size - 1 - position) + 0.01 * size
        if score > best_score:
            best, best_score = i, score
    return best


def make_windows(tokenizer: Tokenizer, questions: Sequence[Question], max_seq_len: int = MAX_SEQ,
                 doc_stride: int = DOC_STRIDE, max_query: int = MAX_QUERY) -> list[Window]:
    """The windows of every question, labelled with its first answer (if any)."""
    backend = tokenizer.backend
    specials = backend.num_special_tokens_to_add(True)
    windows: list[Window] = []
    for index, q in enumerate(questions):
        query = backend.encode(q.question, add_special_tokens=False)
        query.truncate(max_query)
        room = max_seq_len - len(query.ids) - specials
        if room <= 0:
            raise UserError(f"max_seq_len {max_seq_len} leaves no room for the passage")
        passage = backend.encode(q.context, add_special_tokens=False)
        spans = doc_spans(len(passage.ids), room, doc_stride)
        answer = _token_span(passage.offsets, q.answers[0]) if q.answers else None
        for i, (start, size) in enumerate(spans):
            piece = backend.encode(q.context, add_special_tokens=False)
            piece.truncate(start + size)
            piece.truncate(size, direction="left")
            pair = backend.post_process(query, piece, add_special_tokens=True)
            windows.append(_window(index, pair, spans, i, answer))
    return windows


def _window(index: int, pair: Encoding, spans: Sequence[tuple[int, int]], i: int,
            answer: tuple[int, int] | None) -> Window:
    first = pair.sequence_ids.index(1)  # position of the window's first passage token
    start, _ = spans[i]
    offsets: list[tuple[int, int] | None] = []
    context: list[bool] = []
    for s, o in zip(pair.sequence_ids, pair.offsets, strict=True):
        offsets.append(tuple(o) if s == 1 else None)  # type: ignore[arg-type]
        position = start + len(context) - first  # token index in the whole passage
        context.append(s == 1 and max_context_span(spans, position) == i)
    window = Window(index, pair.ids, pair.type_ids, offsets, context)
    size = spans[i][1]
    if answer is not None and start <= answer[0] and answer[1] < start + size:
        window.start, window.end = answer[0] - start + first, answer[1] - start + first
    return window


def _token_span(offsets: Sequence[tuple[int, int]], answer: tuple[str, int]) -> tuple[int, int]:
    """First and last passage token overlapping the answer's characters."""
    text, char_start = answer
    char_end = char_start + len(text)
    inside = [i for i, (s, e) in enumerate(offsets) if s < char_end and e > char_start]
    if not inside:  # an answer of whitespace only: the token after it
        inside = [next((i for i, (s, _) in enumerate(offsets) if s >= char_start),
                       len(offsets) - 1)]
    return inside[0], inside[-1]


# ---------------------------------------------------------------------------------------------
# Model


@register_head("squad")
class SpanQA(nn.Module):
    """A backbone and a Linear(H, 2): start and end logits over every token (BERT section 4.2).
    `version_2`: trained with unanswerable questions, so it may answer "" (section 4.3)."""

    def __init__(self, backbone: nn.Module, version_2: bool = False, null_threshold: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config  # type: ignore[attr-defined]
        self.task = {"name": "squad", "version_2": version_2, "null_threshold": null_threshold}
        self.qa = nn.Linear(self.config.hidden_size, 2)
        nn.init.normal_(self.qa.weight, std=getattr(self.config, "initializer_range", 0.02))
        nn.init.zeros_(self.qa.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> TaskOutput:
        """input_ids: (B, S) -> logits (B, S, 2): [..., 0] start, [..., 1] end."""
        hidden = self.backbone(input_ids, attention_mask, token_type_ids).last_hidden_state
        return TaskOutput(hidden, self.qa(hidden))  # (B, S, H), (B, S, 2)


def span_loss(logits: Tensor, start: Tensor, end: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """logits: (B, S, 2), start / end: (B,) -> mean of the start and end cross-entropies."""
    start_logits, end_logits = logits.float().unbind(-1)  # (B, S) each
    loss = (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)) / 2
    with torch.no_grad():
        exact = (start_logits.argmax(-1) == start) & (end_logits.argmax(-1) == end)
    return loss, {"span_accuracy": exact.float().mean()}


# ---------------------------------------------------------------------------------------------
# Decoding


@dataclass
class Span:
    """A candidate answer: token positions in its window, character span, score (logit sum)."""

    score: float
    start: int
    end: int
    char_start: int
    char_end: int


def window_spans(start_logits: Tensor, end_logits: Tensor, window: Window,
                 n_best: int = N_BEST, max_answer: int = MAX_ANSWER) -> list[Span]:
    """The valid spans among the `n_best` best starts x `n_best` best ends of one window:
    inside the passage, start on a max-context token, start <= end < start + max_answer.
    start_logits / end_logits: (S,) over the window's tokens (padding cut off)."""
    length = len(window.offsets)
    k = min(n_best, length)
    starts = start_logits[:length].topk(k).indices  # (k,)
    ends = end_logits[:length].topk(k).indices  # (k,)
    in_passage = torch.tensor([o is not None for o in window.offsets])  # (S,)
    max_context = torch.tensor(window.max_context)  # (S,)
    s, e = starts[:, None], ends[None, :]  # (k, 1), (1, k)
    ok = in_passage[s] & in_passage[e] & max_context[s] & (e >= s) & (e - s < max_answer)
    scores = start_logits[s] + end_logits[e]  # (k, k)
    out = []
    for i, j in ok.nonzero().tolist():
        a, b = int(starts[i]), int(ends[j])
        out.append(Span(float(scores[i, j]), a, b, window.offsets[a][0],  # type: ignore[index]
                        window.offsets[b][1]))  # type: ignore[index]
    return out


@dataclass
class Answer:
    text: str
    score: float  # probability among the n-best candidates (and the null answer in v2.0)
    char_start: int  # -1 for no answer
    char_end: int


def decode(question: Question, logits: Sequence[Tensor], windows: Sequence[Window],
           version_2: bool, null_threshold: float = 0.0, n_best: int = N_BEST,
           max_answer: int = MAX_ANSWER) -> Answer:
    """The answer to `question` from the (S, 2) logits of each of its windows."""
    spans = [span for lg, w in zip(logits, windows, strict=True)
             for span in window_spans(lg[:, 0], lg[:, 1], w, n_best, max_answer)]
    spans = sorted(spans, key=lambda s: s.score, reverse=True)[:n_best]
    null = min(float(lg[0, 0] + lg[0, 1]) for lg in logits)  # [CLS] start + end
    scores = torch.tensor([s.score for s in spans] + ([null] if version_2 else []))
    probs = scores.softmax(0) if len(scores) else scores
    if not spans or (version_2 and null - spans[0].score > null_threshold):
        return Answer("", float(probs[-1]) if version_2 else 0.0, -1, -1)
    best = spans[0]
    text = question.context[best.char_start:best.char_end]
    return Answer(text, float(probs[0]), best.char_start, best.char_end)


# ---------------------------------------------------------------------------------------------
# Official metrics (the SQuAD v1.1 / v2.0 evaluation scripts)


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation, articles (a, an, the) and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_score(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold: str, prediction: str) -> float:
    """Token-level F1 of the normalised answers (1 when both are empty, 0 when one is)."""
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(questions: Sequence[Question], predictions: Mapping[str, str],
                  version_2: bool) -> dict[str, float]:
    """`exact_match` and `f1` (0-100), the best over each question's gold answers; a question
    without a prediction scores 0; v2.0 adds `HasAns_*` and `NoAns_*` (an unanswerable question
    scores 1 only for an empty prediction)."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for q in questions:
        golds = [t for t in q.texts if normalize_answer(t)] or [""]
        pred = predictions.get(q.qid)
        exact[q.qid] = max(exact_score(g, pred) for g in golds) if pred is not None else 0.0
        f1[q.qid] = max(f1_score(g, pred) for g in golds) if pred is not None else 0.0
    out = _averages(exact, f1, [q.qid for q in questions], "")
    if version_2:
        has = [q.qid for q in questions if any(normalize_answer(t) for t in q.texts)]
        has_set = set(has)
        out |= _averages(exact, f1, has, "HasAns_")
        out |= _averages(exact, f1, [q.qid for q in questions if q.qid not in has_set], "NoAns_")
    return out


def _averages(exact: Mapping[str, float], f1: Mapping[str, float], ids: Sequence[str],
              prefix: str) -> dict[str, float]:
    n = len(ids)
    if not n and prefix:
        return {f"{prefix}total": 0.0}
    name = "exact" if prefix else "exact_match"
    return {f"{prefix}{name}": 100.0 * sum(exact[i] for i in ids) / max(n, 1),
            f"{prefix}f1": 100.0 * sum(f1[i] for i in ids) / max(n, 1),
            f"{prefix}total": float(n)}


def evaluate_predictions(dev_json: Path, predictions_json: Path) -> dict[str, float]:
    """Score a predictions file `{question id: answer text}` ("" = no answer) against a SQuAD
    dev file by the official rules (`plmkit evaluate --task squad`)."""
    dev = read_squad(dev_json)
    predictions = read_json(predictions_json)
    if not isinstance(predictions, dict):
        raise UserError(f"{predictions_json}: not a JSON object {{question id: answer text}}")
    known = {q.qid for q in dev.questions}
    for qid, text in predictions.items():
        if qid not in known:
            raise UserError(f"{predictions_json}: question {qid!r} is not in {dev_json}")
        if not isinstance(text, str):
            raise UserError(f"{predictions_json}: question {qid!r}: the answer is not a string")
    return squad_metrics(dev.questions, predictions, dev.version_2)


# ---------------------------------------------------------------------------------------------
# The task


class SquadTask(FeatureTask):
    """`plmkit finetune --task squad`: see the module docstring."""

    name = "squad"
    main_metric = "f1"
    default_max_seq_len = MAX_SEQ

    def __init__(self, train: Path | None = None, version_2: bool = False,
                 null_threshold: float = 0.0):
        self.train = train
        self.version_2 = version_2
        self.null_threshold = null_threshold

    def build_model(self, backbone: nn.Module) -> SpanQA:
        return SpanQA(backbone, self.version_2, self.null_threshold)

    def train_features(self, tokenizer: Tokenizer, options: FinetuneOptions
                       ) -> list[dict[str, Any]]:
        if self.train is None:
            raise UserError("squad: no training file")
        windows = make_windows(tokenizer, read_squad(self.train).questions, _seq_len(options))
        return [w.features() for w in windows]

    def objective(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return span_loss(out.logits, batch["start_positions"], batch["end_positions"])

    def read_eval(self, path: Path) -> SquadFile:
        return read_squad(path)

    def evaluate(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                 options: FinetuneOptions) -> dict[str, float]:
        data = self.read_eval(path)
        answers = self.answer(model, tokenizer, data.questions, options)
        predictions = {q.qid: a.text for q, a in zip(data.questions, answers, strict=True)}
        return squad_metrics(data.questions, predictions, data.version_2)

    def predict(self, model: nn.Module, tokenizer: Tokenizer, path: Path,
                options: FinetuneOptions) -> list[dict[str, Any]]:
        """One record per question: id, answer ("" = none), score, character start and end."""
        questions = read_squad(path).questions
        answers = self.answer(model, tokenizer, questions, options)
        return [{"id": q.qid, "answer": a.text, "score": a.score, "start": a.char_start,
                 "end": a.char_end} for q, a in zip(questions, answers, strict=True)]

    def answer(self, model: nn.Module, tokenizer: Tokenizer, questions: Sequence[Question],
               options: FinetuneOptions) -> list[Answer]:
        """The decoded answer to each question (the model's `.task` decides v2.0 and the
        null threshold when it has one)."""
        task = getattr(model, "task", {})
        version_2 = task.get("version_2", self.version_2)
        threshold = task.get("null_threshold", self.null_threshold)
        windows = make_windows(tokenizer, questions, _seq_len(options))
        logits = _window_logits(model, tokenizer, windows, options.batch_size)
        by_question: dict[int, list[int]] = collections.defaultdict(list)
        for i, w in enumerate(windows):
            by_question[w.question].append(i)
        return [decode(q, [logits[i] for i in by_question[n]],
                       [windows[i] for i in by_question[n]], version_2, threshold)
                for n, q in enumerate(questions)]


def _window_logits(model: nn.Module, tokenizer: Tokenizer, windows: Sequence[Window],
                   batch_size: int) -> list[Tensor]:
    """The (S_i, 2) logits of each window, padding cut off, on the CPU."""
    batches = in_batches([w.features() for w in windows], batch_size, pad_collate(tokenizer.pad_id))
    out: list[Tensor] = []
    for batch, output in run_model(model, batches):
        lengths = batch["attention_mask"].sum(1).tolist()
        out.extend(lg[:n].float().cpu() for lg, n in zip(output.logits, lengths, strict=True))
    return out


def _seq_len(options: FinetuneOptions) -> int:
    return options.max_seq_len or MAX_SEQ


def answer_question(model: nn.Module, tokenizer: Tokenizer, question: str, context: str,
                    options: FinetuneOptions | None = None) -> Answer:
    """The answer to one question about one passage (e.g. for `plmkit serve`'s /v1/qa)."""
    task = SquadTask()
    return task.answer(model, tokenizer, [Question("0", question, context)],
                       options or FinetuneOptions(batch_size=8))[0]


def make_task(train: Path | None = None, saved: Mapping[str, Any] | None = None,
              **options: Any) -> SquadTask:
    """The SQuAD task: from a training file (v2.0 when it has "is_impossible") or from a
    fine-tuned model's `.task` dict. Takes no task options."""
    if options:
        raise UserError(f"squad takes no task options (got {', '.join(options)})")
    if saved is not None:
        return SquadTask(None, bool(saved.get("version_2", False)),
                         float(saved.get("null_threshold", 0.0)))
    version_2 = read_squad(train).version_2 if train is not None else False
    return SquadTask(train, version_2)

