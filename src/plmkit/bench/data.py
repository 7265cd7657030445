"""`plmkit bench --data`: how fast plmkit turns raw text into BERT pretraining batches, and
whether its loader keeps the training step fed (issue 10, "Performance").

Three measurements:

- `measure_data`: raw text -> ready batches (the seven reference fields as tensors), plmkit's
  pipeline (token shards, then `BertPretrainingStream` for `dupe_factor` epochs) against
  `reference_batches`, a plain port of Google BERT's ``create_pretraining_data.py``, on the
  same files, tokenizer and `BertInstanceConfig`, interleaved (A B A B ...), medians: the time
  until the first training step can start (preparation and the first batch: plmkit makes
  instances as training asks for them, the reference makes all of them first), the batches
  per second after it (what training sees), and MB/s of the whole.
- `loader_share`: the real `Trainer` trains a preset on plmkit's real loader (as `plmkit
  pretrain` builds it: no worker processes, each batch made inline when the loop asks for it),
  timing each wait in ``next()`` and each step between two batches; the loader alone is then
  timed over a whole epoch, since it makes a window of documents at a time and a short run
  may miss those costly batches. The share is loader ms per batch / (that + the step's).
- `prepare_curve`: seconds and peak RSS of `prepare_corpus` on a corpus of real text repeated
  and shuffled to each size, by one process or several on gloo (each in a fresh process).
"""

from __future__ import annotations

import itertools
import json
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
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
from plmkit.training.distributed import Dist

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
    """Raw text -> ready batches, plmkit against the reference port (medians of `reps`)."""

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
    plmkit_first_s: float  # raw text -> the first batch: when the first step can start
    port_first_s: float
    plmkit_batches_s: float  # batches per second after the first: what training sees
    port_batches_s: float


@dataclass
class Pass:
    """One pass of raw text -> batches, timed from the start."""

    instances: int
    batches: int
    first_s: float  # until the first batch
    total_s: float  # until the last

    @property
    def batches_per_s(self) -> float:
        """Batches after the first, per second."""
        return (self.batches - 1) / (self.total_s - self.first_s)


def timed_batches(start: float, batches: Iterable[dict[str, Tensor]],
                  done: Callable[[], bool] = lambda: False) -> Pass:
    """Iterate `batches` (until `done()` after a batch), timing them from `start`."""
    first = None
    count = instances = 0
    for b in batches:
        count += 1
        instances += len(b["next_sentence_labels"])
        if first is None:
            first = time.perf_counter() - start
        if done():
            break
    if first is None:
        raise UserError("the corpus made no batches")
    return Pass(instances, count, first, time.perf_counter() - start)


def plmkit_pass(paths: list[Path], tok: Tokenizer, options: DataOptions, seq: int,
                work: Path) -> Pass:
    """Raw text -> batches through plmkit: token shards in `work`, then the `mlm+nsp` batches
    over `dupe_factor` epochs (the last batch may run a few instances into the next)."""
    start = time.perf_counter()
    shards = prepare_corpus(paths, tok, work, fingerprint=fingerprint(tok), force=True)
    batches = get_objective("mlm+nsp").batches(shards, tok, options, seq, seed=0)
    return timed_batches(start, batches,
                         lambda: batches.state_dict()["epoch"] >= options.dupe_factor)


def port_pass(paths: list[Path], tok: Tokenizer, options: DataOptions, seq: int) -> Pass:
    """Raw text -> batches through the reference port, with the instance settings plmkit
    derives from `options` (every instance is made before the first batch)."""
    start = time.perf_counter()
    config = BertInstanceConfig.from_options(options, seq, nsp=True)
    return timed_batches(start, reference_batches(paths, tok, config, options.batch_size))


def measure_data(paths: list[Path], tok: Tokenizer, seq: int, batch: int, reps: int,
                 dupe_factor: int = 10) -> DataRecord:
    """Both pipelines `reps` times, interleaved, at BERT's settings (15% masked, at most
    `max_predictions(seq)`, short_seq_prob 0.1, NSP, static masks)."""
    options = DataOptions(batch_size=batch, dupe_factor=dupe_factor)
    ours: list[Pass] = []
    port: list[Pass] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            ours.append(plmkit_pass(paths, tok, options, seq, Path(tmp) / f"shards-{rep}"))
            port.append(port_pass(paths, tok, options, seq))
    mb = sum(p.stat().st_size for p in paths) / 1e6
    pairs = [b.total_s / a.total_s for a, b in zip(ours, port, strict=True)]

    def median(passes: list[Pass], value: Callable[[Pass], float]) -> float:
        return statistics.median(value(x) for x in passes)

    ours_s, port_s = median(ours, lambda x: x.total_s), median(port, lambda x: x.total_s)
    return DataRecord(
        mb, seq, batch, dupe_factor, reps, mb / ours_s, mb / port_s, port_s / ours_s,
        min(pairs), max(pairs),
        ours[-1].instances, port[-1].instances,
        median(ours, lambda x: x.first_s), median(port, lambda x: x.first_s),
        median(ours, lambda x: x.batches_per_s), median(port, lambda x: x.batches_per_s))


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
# Preparing a large corpus: time and memory against size


@dataclass
class CurveRecord:
    """`prepare_corpus` on `corpus_mb` of text by `ranks` processes, each a fresh one."""

    corpus_mb: float
    ranks: int
    seconds: float  # from every rank ready to every rank holding the prepared corpus
    mb_s: float
    peak_rss_mb: float  # the highest peak RSS of the preparing processes
    base_rss_mb: float  # that process's RSS before preparing (imports, the tokenizer)
    tokens: int


def repeated_corpus(source: Path, mb: float, out: Path, seed: int = 0) -> Path:
    """`out`: the documents of the text corpus `source` (blocks between blank lines), in a fresh
    shuffled order on each pass, written until it holds `mb` MB; streamed to disk."""
    docs = [d.strip(b"\n") + b"\n\n" for d in source.read_bytes().split(b"\n\n") if d.strip()]
    if not docs:
        raise UserError(f"{source}: no documents to repeat")
    rng, size, goal = random.Random(seed), 0, int(mb * 1e6)
    with open(out, "wb") as f:
        while size < goal:
            rng.shuffle(docs)
            for doc in docs:
                size += f.write(doc)
                if size >= goal:
                    break
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _curve_rank(rank: int, world: int, store: str, corpus: Path, tokenizer: Path, out: Path,
                report: Path) -> None:
    """One preparing process: joins the gloo group (when `world` > 1), prepares, reports."""
    ranks = Dist()
    if world > 1:
        tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                 world_size=world)
        ranks = Dist(rank=rank, world=world)
    try:
        tok = Tokenizer.load(tokenizer)
        base = _peak_rss_mb()
        ranks.barrier()
        start = time.perf_counter()
        shards = prepare_corpus([corpus], tok, out, fingerprint=fingerprint(tok), force=True,
                                ranks=ranks)
        seconds = time.perf_counter() - start
        (report / f"rank-{rank}.json").write_text(json.dumps(
            {"seconds": seconds, "peak": _peak_rss_mb(), "base": base,
             "tokens": shards.num_tokens}))
    finally:
        if world > 1:
            tdist.destroy_process_group()


def prepare_curve(source: Path, tokenizer: Path, sizes_mb: list[float], ranks: list[int],
                  work: Path) -> list[CurveRecord]:
    """For each size, `source` repeated and shuffled to it (`repeated_corpus`) and prepared by
    each number of `ranks` processes (spawned fresh, so each peak RSS is the preparation's)."""
    records = []
    for mb in sizes_mb:
        corpus = repeated_corpus(source, mb, work / "corpus.txt")
        size = corpus.stat().st_size / 1e6
        for world in ranks:
            report = Path(tempfile.mkdtemp(dir=work))
            mp.spawn(_curve_rank, args=(world, str(report / "store"), corpus, tokenizer,
                                        work / "shards", report), nprocs=world)
            runs = [json.loads((report / f"rank-{r}.json").read_text()) for r in range(world)]
            top = max(runs, key=lambda x: x["peak"])
            seconds = max(x["seconds"] for x in runs)
            records.append(CurveRecord(size, world, seconds, size / seconds, top["peak"],
                                       top["base"], runs[0]["tokens"]))
        corpus.unlink()
    return records


def curve_table(records: list[CurveRecord]) -> str:
    """The curve as a fixed-width table."""
    head = (f"{'corpus MB':>10}{'ranks':>7}{'seconds':>10}{'MB/s':>8}{'peak RSS MB':>13}"
            f"{'before MB':>11}{'tokens':>14}")
    rows = [f"{r.corpus_mb:>10.1f}{r.ranks:>7}{r.seconds:>10.1f}{r.mb_s:>8.2f}"
            f"{r.peak_rss_mb:>13.0f}{r.base_rss_mb:>11.0f}{r.tokens:>14}" for r in records]
    return "\n".join([head, *rows])


# ---------------------------------------------------------------------------------------------
# Entry point and table


def corpus_tokenizer(corpus: Path, tokenizer: Path | None) -> Tokenizer:
    """`tokenizer`, or a WordPiece vocabulary trained on `corpus` (`plmkit pretrain`'s)."""
    if tokenizer:
        return Tokenizer.load(tokenizer)
    return train_tokenizer("wordpiece", (s for d in read_documents([corpus]) for s in d),
                           VOCAB_SIZE)


def run_curve(corpus: Path, tokenizer: Path | None, sizes_mb: list[float], ranks: list[int]
              ) -> list[CurveRecord]:
    """`prepare_curve` of the text corpus `corpus` (its tokenizer trained first when none is
    given, not timed), in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer is None:
            tokenizer = Path(tmp) / "tokenizer"
            corpus_tokenizer(corpus, None).save(tokenizer)
        return prepare_curve(corpus, tokenizer, sizes_mb, ranks, Path(tmp))


def run_data(corpus: Path, tokenizer: Path | None, presets: list[str], seq: int, batch: int,
             reps: int) -> tuple[list[DataRecord], list[LoaderRecord]]:
    """The data bench on a text corpus (one sentence a line, blank lines between documents):
    plmkit against the reference port, then the loader share for each preset. Without
    `tokenizer` a WordPiece vocabulary is trained on the corpus first (not timed)."""
    paths = [corpus]
    tok = corpus_tokenizer(corpus, tokenizer)
    data = [measure_data(paths, tok, seq, batch, reps)]
    with tempfile.TemporaryDirectory() as tmp:
        shards = prepare_corpus(paths, tok, Path(tmp), fingerprint=fingerprint(tok), force=True)
        loader = [loader_share(shards, tok, p, seq, batch, LOADER_STEPS) for p in presets]
    return data, loader


def data_rows(r: DataRecord) -> list[str]:
    """One record against the port: time to the first step, batches/s, MB/s, instances."""
    lines = [f"corpus {r.corpus_mb:.2f} MB, batch {r.batch} x {r.seq}, dupe_factor "
             f"{r.dupe_factor}, medians of {r.reps} interleaved runs",
             f"{'':<28}{'plmkit':>12}{'port':>12}{'plmkit gain':>13}"]
    for name, ours, port, gain, fmt in (
            ("time to the first step, s", r.plmkit_first_s, r.port_first_s,
             r.port_first_s / r.plmkit_first_s, ".2f"),
            ("batches/s in training", r.plmkit_batches_s, r.port_batches_s,
             r.plmkit_batches_s / r.port_batches_s, ".1f"),
            ("raw text -> batches, MB/s", r.plmkit_mb_s, r.port_mb_s, r.ratio, ".3f")):
        lines.append(f"{name:<28}{ours:>12{fmt}}{port:>12{fmt}}{gain:>12.2f}x")
    lines.append(f"{'instances':<28}{r.plmkit_instances:>12}{r.port_instances:>12}"
                 f"   (MB/s ratio of pairs {r.ratio_lo:.2f}-{r.ratio_hi:.2f})")
    return lines


def table(data: list[DataRecord], loader: list[LoaderRecord]) -> str:
    """Fixed-width tables: each record against the port, then the loader share."""
    rows = [line for r in data for line in data_rows(r)]
    head2 = (f"{'model':<14}{'batch x seq':>12}{'steps':>7}{'step ms':>10}{'wait ms':>9}"
             f"{'loader ms':>11}{'loader share':>14}")
    rows2 = [f"{r.preset:<14}{f'{r.batch}x{r.seq}':>12}{r.steps:>7}{r.step_ms:>10.1f}"
             f"{r.wait_ms:>9.2f}{r.loader_ms:>11.2f}{100 * r.fraction:>13.2f}%" for r in loader]
    return "\n".join([*rows, "", head2, *rows2])
