"""`plmkit bench --data`: how fast plmkit turns raw text into BERT pretraining batches, and
whether its loader keeps the training step fed (issue 10, "Performance").

Two measurements:

- `measure_data`: MB/s of raw text -> ready batches (the seven reference fields as tensors),
  plmkit's pipeline (token shards, then `BertPretrainingStream` for `dupe_factor` epochs)
  against `reference_batches`, a plain port of Google BERT's ``create_pretraining_data.py``,
  on the same files, tokenizer and `BertInstanceConfig`, interleaved (A B A B ...), medians.
- `loader_share`: the real `Trainer` trains a preset on plmkit's real loader (as `plmkit
  pretrain` builds it: no worker processes, each batch made inline when the loop asks for it),
  timing each wait in ``next()`` and each step between two batches; the loader alone is then
  timed over a whole epoch, since it makes a window of documents at a time and a short run
  may miss those costly batches. The share is loader ms per batch / (that + the step's).
"""

from __future__ import annotations

import itertools
import random
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from plmkit.data.bert import FIELDS, BertInstanceConfig, BertVocab
from plmkit.data.corpus import read_documents
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus, fingerprint, prepare_corpus
from plmkit.errors import UserError
from plmkit.jobs.pretrain import (
    PretrainArgs,
    data_options,
    model_config,
    model_needs,
    reads_pairs,
)
from plmkit.models import build, get_family, preset_config
from plmkit.objectives import get_objective
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training import TrainConfig, Trainer

Document = list[list[int]]  # sentences of token ids
WARMUP_STEPS = 3  # trainer steps left out of `loader_share` (first window, allocator warm-up)
LOADER_STEPS = 20  # trainer steps `run_data` times per preset
VOCAB_SIZE = 30522  # of the tokenizer trained when none is given (`plmkit pretrain`'s default)


# ---------------------------------------------------------------------------------------------
# The reference: create_pretraining_data.py, ported plainly (per-token Python, random.Random)


@dataclass
class RefInstance:
    """One training instance before padding: [CLS] A [SEP] B [SEP], masked."""

    tokens: list[int]
    segment_ids: list[int]
    is_random_next: bool
    masked_lm_positions: list[int]
    masked_lm_labels: list[int]


def read_reference_documents(paths: Iterable[Path], tok: Tokenizer) -> list[Document]:
    """Documents as the reference reads them: one sentence a line, a blank line between
    documents, each line tokenized on its own; empty documents dropped."""
    documents: list[Document] = [[]]
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    documents.append([])
                    continue
                ids = tok.encode(line)
                if ids:
                    documents[-1].append(ids)
    return [d for d in documents if d]


def reference_instances(documents: list[Document], vocab: BertVocab,
                        config: BertInstanceConfig, rng: random.Random) -> list[RefInstance]:
    """Documents shuffled, `dupe_factor` passes over them, all instances shuffled."""
    rng.shuffle(documents)
    instances = []
    for _ in range(config.dupe_factor):
        for index in range(len(documents)):
            instances.extend(reference_document(documents, index, vocab, config, rng))
    rng.shuffle(instances)
    return instances


def reference_document(documents: list[Document], index: int, vocab: BertVocab,
                       config: BertInstanceConfig, rng: random.Random) -> list[RefInstance]:
    """create_instances_from_document: chunks of sentences up to a target length, each split
    into A and B (B the true continuation, or half the time a random document's text)."""
    document = documents[index]
    max_tokens = config.max_seq_length - 3
    target = max_tokens
    if rng.random() < config.short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances = []
    chunk: list[list[int]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = [t for sentence in chunk[:a_end] for t in sentence]
            random_next = len(chunk) == 1 or rng.random() < 0.5
            if random_next:
                b = random_segment(documents, index, target - len(a), rng)
                i -= len(chunk) - a_end  # the unused sentences go back
            else:
                b = [t for sentence in chunk[a_end:] for t in sentence]
            truncate_pair(a, b, max_tokens, rng)
            instances.append(reference_instance(a, b, random_next, vocab, config, rng))
            chunk, length = [], 0
        i += 1
    return instances


def random_segment(documents: list[Document], index: int, target: int,
                   rng: random.Random) -> list[int]:
    """Sentences of another document (up to 10 draws), from a random one, to `target` tokens."""
    other = index
    for _ in range(10):
        other = rng.randint(0, len(documents) - 1)
        if other != index:
            break
    document = documents[other]
    b: list[int] = []
    for sentence in document[rng.randint(0, len(document) - 1):]:
        b.extend(sentence)
        if len(b) >= target:
            break
    return b


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Drop tokens one at a time from the longer side (B on a tie), front or back by a coin."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def reference_instance(a: list[int], b: list[int], random_next: bool, vocab: BertVocab,
                       config: BertInstanceConfig, rng: random.Random) -> RefInstance:
    """[CLS] A [SEP] B [SEP] with segment ids 0 / 1, masked."""
    tokens = [vocab.cls_id, *a, vocab.sep_id, *b, vocab.sep_id]
    segment_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    positions, labels = mask_reference(tokens, vocab, config, rng)
    return RefInstance(tokens, segment_ids, random_next, positions, labels)


def mask_reference(tokens: list[int], vocab: BertVocab, config: BertInstanceConfig,
                   rng: random.Random) -> tuple[list[int], list[int]]:
    """create_masked_lm_predictions, in place on `tokens`: 15% of the non-[CLS]/[SEP] tokens
    (at most max_predictions_per_seq) in random order, each 80% [MASK], 10% kept, 10% a random
    id of the whole vocabulary; returns the sorted positions and their original ids."""
    candidates = [i for i, t in enumerate(tokens) if t not in (vocab.cls_id, vocab.sep_id)]
    rng.shuffle(candidates)
    budget = min(config.max_predictions_per_seq,
                 max(1, round(len(tokens) * config.mask_prob)))  # half to even, as the reference
    masked = []
    for i in candidates[:budget]:
        masked.append((i, tokens[i]))
        if rng.random() < 0.8:
            tokens[i] = vocab.mask_id
        elif rng.random() >= 0.5:
            tokens[i] = rng.randint(0, vocab.vocab_size - 1)
    masked.sort()
    return [i for i, _ in masked], [label for _, label in masked]


def reference_features(instance: RefInstance, config: BertInstanceConfig) -> dict[str, list]:
    """write_instance_to_example_files: the seven fields, zero-padded to S and P."""
    pad_s = config.max_seq_length - len(instance.tokens)
    pad_p = config.max_predictions_per_seq - len(instance.masked_lm_positions)
    return {
        "input_ids": instance.tokens + [0] * pad_s,
        "input_mask": [1] * len(instance.tokens) + [0] * pad_s,
        "segment_ids": instance.segment_ids + [0] * pad_s,
        "masked_lm_positions": instance.masked_lm_positions + [0] * pad_p,
        "masked_lm_ids": instance.masked_lm_labels + [0] * pad_p,
        "masked_lm_weights": [1.0] * len(instance.masked_lm_labels) + [0.0] * pad_p,
        "next_sentence_labels": int(instance.is_random_next),
    }


def reference_batches(paths: list[Path], tok: Tokenizer, config: BertInstanceConfig,
                      batch: int, seed: int = 12345) -> Iterator[dict[str, Tensor]]:
    """Raw text -> (B, ...) tensor batches of the reference fields, through the port."""
    documents = read_reference_documents(paths, tok)
    instances = reference_instances(documents, tok, config, random.Random(seed))
    features = [reference_features(x, config) for x in instances]
    for start in range(0, len(features), batch):
        chunk = features[start : start + batch]
        yield {k: torch.tensor([f[k] for f in chunk]) for k in FIELDS}


# ---------------------------------------------------------------------------------------------
# Throughput: MB/s of raw text -> ready batches


@dataclass
class DataRecord:
    """Raw text -> ready batches, plmkit against the reference port."""

    corpus_mb: float  # bytes of the raw input text / 1e6
    seq: int
    batch: int
    dupe_factor: int
    reps: int
    plmkit_mb_s: float
    port_mb_s: float
    ratio: float  # port median seconds / plmkit median seconds
    ratio_lo: float  # lowest and highest ratio of one interleaved (plmkit, port) pair
    ratio_hi: float
    plmkit_instances: int
    port_instances: int


def plmkit_pass(paths: list[Path], tok: Tokenizer, options: DataOptions, seq: int,
                work: Path) -> int:
    """Raw text -> batches through plmkit: token shards in `work`, then the `mlm+nsp` batches
    over `dupe_factor` epochs (the last batch may run a few instances into the next); returns
    the instances made."""
    shards = prepare_corpus(paths, tok, work, fingerprint=fingerprint(tok), force=True)
    batches = get_objective("mlm+nsp").batches(shards, tok, options, seq, seed=0)
    count = 0
    for b in batches:
        count += len(b["next_sentence_labels"])
        if batches.state_dict()["epoch"] >= options.dupe_factor:
            break
    return count


def port_pass(paths: list[Path], tok: Tokenizer, options: DataOptions, seq: int) -> int:
    """Raw text -> batches through the reference port, with the instance settings plmkit
    derives from `options`; returns the instances made."""
    config = BertInstanceConfig.from_options(options, seq, nsp=True)
    batches = reference_batches(paths, tok, config, options.batch_size)
    return sum(len(b["next_sentence_labels"]) for b in batches)


def measure_data(paths: list[Path], tok: Tokenizer, seq: int, batch: int, reps: int,
                 dupe_factor: int = 10) -> DataRecord:
    """Both pipelines `reps` times, interleaved, at BERT's settings (15% masked, at most
    `max_predictions(seq)`, short_seq_prob 0.1, NSP, static masks)."""
    options = DataOptions(batch_size=batch, dupe_factor=dupe_factor)
    ours: list[float] = []
    port: list[float] = []
    counts = (0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            start = time.perf_counter()
            made = plmkit_pass(paths, tok, options, seq, Path(tmp) / f"shards-{rep}")
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            counts = (made, port_pass(paths, tok, options, seq))
            port.append(time.perf_counter() - start)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    pairs = [b / a for a, b in zip(ours, port, strict=True)]
    mo, mp = statistics.median(ours), statistics.median(port)
    return DataRecord(mb, seq, batch, dupe_factor, reps, mb / mo, mb / mp, mp / mo,
                      min(pairs), max(pairs), *counts)


# ---------------------------------------------------------------------------------------------
# Loader share of the training step


@dataclass
class LoaderRecord:
    """How long the training loop waits for plmkit's loader, against the step itself."""

    preset: str
    batch: int
    seq: int
    steps: int  # trainer steps timed (after `WARMUP_STEPS`)
    step_ms: float  # median time from receiving a batch to asking for the next
    wait_ms: float  # mean wait in next() during those steps
    loader_ms: float  # mean time per batch over a whole epoch of the corpus, loader alone
    fraction: float  # loader_ms / (loader_ms + step_ms)


class BatchSource(Protocol):
    """A pretraining loader: batches, and a position with an ``epoch`` (every plmkit one)."""

    def __iter__(self) -> Iterator[dict[str, Tensor]]: ...
    def state_dict(self) -> dict[str, Any]: ...


class TimedSource:
    """Iterates `source`, recording when each ``next()`` began and ended."""

    def __init__(self, source: Iterable[dict[str, Tensor]]):
        self.source = source
        self.spans: list[tuple[float, float]] = []

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        batches = iter(self.source)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                return
            self.spans.append((start, time.perf_counter()))
            yield batch


def epoch_batch_ms(source: BatchSource) -> float:
    """Mean milliseconds per batch over one whole epoch of `source` (the loader makes a window
    of documents at a time, so a few batches cost much more than the rest)."""
    start = time.perf_counter()
    count = 0
    for _ in source:
        count += 1
        if source.state_dict()["epoch"] >= 1:
            break
    return 1e3 * (time.perf_counter() - start) / count


def timed_training(preset: str, source: TimedSource, tok: Tokenizer, seq: int,
                   steps: int) -> None:
    """Train `preset` on its default objective for `steps` steps with the `Trainer` (CPU or
    CUDA as it picks), nothing saved."""
    family = get_family(preset_config(preset).family)
    with tempfile.TemporaryDirectory() as tmp:
        # inline loading (prefetch=0): the wait a step would see without the prefetch thread
        config = TrainConfig(steps=steps, out_dir=tmp, log_every=steps, eval_every=0,
                             save_every=0, progress=False, checkpoints=False, prefetch=0,
                             **family.optim_defaults)
        objective = get_objective(family.default_objective)
        model = build(model_config(preset, tok, seq, needs=model_needs(objective, seq)))
        Trainer(model, objective, source, config, save_model=lambda *_: None).train()


def loader_share(shards: ShardedCorpus, tok: Tokenizer, preset: str, seq: int, batch: int,
                 steps: int) -> LoaderRecord:
    """The batches `plmkit pretrain` would give `preset`: timed in `WARMUP_STEPS + steps`
    trainer steps, and alone over a whole epoch; the share of the loader in a step."""
    family = get_family(preset_config(preset).family)
    if reads_pairs(get_objective(family.default_objective)):
        raise UserError(f"{preset}: the data bench covers pretraining on text corpora")
    options = data_options(PretrainArgs(preset, [], Path(), batch_size=batch), family)

    def batches() -> BatchSource:
        return get_objective(family.default_objective).batches(shards, tok, options, seq, 0)

    source = TimedSource(batches())
    timed_training(preset, source, tok, seq, WARMUP_STEPS + steps + 1)  # +1: a last next()
    spans = source.spans[WARMUP_STEPS:]
    waits = [end - start for start, end in spans[:-1]]
    step = statistics.median(nxt[0] - cur[1] for cur, nxt in itertools.pairwise(spans))
    loader = epoch_batch_ms(batches())
    return LoaderRecord(preset, batch, seq, len(waits), 1e3 * step,
                        1e3 * statistics.mean(waits), loader, loader / (loader + 1e3 * step))


# ---------------------------------------------------------------------------------------------
# Entry point and table


def run_data(corpus: Path, tokenizer: Path | None, presets: list[str], seq: int, batch: int,
             reps: int) -> tuple[list[DataRecord], list[LoaderRecord]]:
    """The data bench on a text corpus (one sentence a line, blank lines between documents):
    throughput against the reference port, then the loader share for each preset. Without
    `tokenizer` a WordPiece vocabulary is trained on the corpus first (not timed)."""
    paths = [corpus]
    tok = Tokenizer.load(tokenizer) if tokenizer else train_tokenizer(
        "wordpiece", (s for d in read_documents(paths) for s in d), VOCAB_SIZE)
    data = [measure_data(paths, tok, seq, batch, reps)]
    with tempfile.TemporaryDirectory() as tmp:
        shards = prepare_corpus(paths, tok, Path(tmp), fingerprint=fingerprint(tok), force=True)
        loader = [loader_share(shards, tok, p, seq, batch, LOADER_STEPS) for p in presets]
    return data, loader


def table(data: list[DataRecord], loader: list[LoaderRecord]) -> str:
    """Two fixed-width tables: throughput, then loader share."""
    head = (f"{'corpus MB':>10}{'batch x seq':>12}{'dupe':>5}{'plmkit MB/s':>13}"
            f"{'port MB/s':>11}{'ratio':>8}{'pairs':>13}{'instances (plmkit / port)':>28}")
    rows = [f"{r.corpus_mb:>10.2f}{f'{r.batch}x{r.seq}':>12}{r.dupe_factor:>5}"
            f"{r.plmkit_mb_s:>13.3f}{r.port_mb_s:>11.3f}{r.ratio:>7.2f}x"
            f"{f'{r.ratio_lo:.2f}-{r.ratio_hi:.2f}':>13}"
            f"{f'{r.plmkit_instances} / {r.port_instances}':>28}" for r in data]
    head2 = (f"{'model':<14}{'batch x seq':>12}{'steps':>7}{'step ms':>10}{'wait ms':>9}"
             f"{'loader ms':>11}{'loader share':>14}")
    rows2 = [f"{r.preset:<14}{f'{r.batch}x{r.seq}':>12}{r.steps:>7}{r.step_ms:>10.1f}"
             f"{r.wait_ms:>9.2f}{r.loader_ms:>11.2f}{100 * r.fraction:>13.2f}%" for r in loader]
    return "\n".join([head, *rows, "", head2, *rows2])
