"""BERT pretraining instances, made as Google BERT's ``create_pretraining_data.py`` makes them.

Each instance has the reference's seven fields, padded to ``max_seq_length`` (S) and
``max_predictions_per_seq`` (P): ``input_ids``, ``input_mask``, ``segment_ids`` (S,);
``masked_lm_positions``, ``masked_lm_ids``, ``masked_lm_weights`` (P,); and
``next_sentence_labels`` (), which is 1 when segment B is a random sentence from another document
and 0 when it is the true continuation (the reference's convention, and Hugging Face's
``BertForPreTraining``'s).

`BertPretrainingStream` walks the documents of a `ShardedCorpus` epoch after epoch. Every random
choice is derived from ``(seed, dupe, document, instance)``, so an instance and its static mask
are a pure function of where they are in the stream: resuming needs only the position.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from plmkit.data.masking import (
    MASK_PROB,
    MaskedTokens,
    MaskingSpec,
    MaskingVocab,
    mask_batch,
    mask_tokens,
    max_predictions,
)
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.errors import UserError

FIELDS = (
    "input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
    "masked_lm_weights", "next_sentence_labels",
)
Instance = dict[str, np.ndarray]
Pair = tuple[np.ndarray, np.ndarray, bool]  # tokens A, tokens B, is_random_next

# Tags that keep the random streams derived from one seed apart.
_ORDER, _PAIRS, _MASKS, _WINDOW = 0, 1, 2, 3


class BertVocab(MaskingVocab, Protocol):
    """The ids a BERT instance needs (`plmkit.tokenizers.Tokenizer` has them)."""

    cls_id: int
    sep_id: int
    pad_id: int


class Documents(Protocol):
    """Documents of sentences of token ids (`ShardedCorpus` is one)."""

    @property
    def num_documents(self) -> int: ...

    def document(self, i: int) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class BertInstanceConfig:
    """How instances are made; the defaults are the reference's at length 128.

    ``nsp=False`` makes single-segment instances ([CLS] A [SEP], up to the full length) for
    MLM alone, or with ``two_segment_prob`` > 0 that share of them split into two consecutive
    segments [CLS] A [SEP] B [SEP] with no label (ELECTRA's inputs). ``static_masking`` masks
    each instance once per dupe copy (``dupe_factor`` copies, as the reference writes them to
    disk); otherwise `BertPretrainingStream.collate` masks afresh every time an instance is
    seen (RoBERTa's dynamic masking).
    """

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20  # 20 at 128, 80 at 512 (BERT README)
    short_seq_prob: float = 0.1
    mask_prob: float = MASK_PROB
    whole_word: bool = False
    dupe_factor: int = 10
    nsp: bool = True
    static_masking: bool = True
    sentence_order: bool = False  # with nsp: ALBERT's SOP pairs instead of random next
    max_ngram: int = 1  # ALBERT's n-gram masking
    two_segment_prob: float = 0.0  # without nsp: chunks split in two segments (ELECTRA: 0.9)

    def __post_init__(self) -> None:
        if self.max_seq_length < 5:
            raise ValueError(f"max_seq_length must be >= 5, not {self.max_seq_length}")
        if self.dupe_factor < 1:
            raise ValueError(f"dupe_factor must be >= 1, not {self.dupe_factor}")
        if not 0.0 <= self.two_segment_prob <= 1.0:
            raise ValueError(f"two_segment_prob must be in [0, 1], not {self.two_segment_prob}")

    @classmethod
    def from_options(cls, options: DataOptions, seq_len: int, **kw: Any) -> BertInstanceConfig:
        """The config for `options` at `seq_len`; ``kw`` sets nsp / sentence_order."""
        return cls(
            max_seq_length=seq_len,
            max_predictions_per_seq=max_predictions(seq_len, options.mask_prob),
            mask_prob=options.mask_prob, whole_word=options.whole_word,
            dupe_factor=options.dupe_factor, static_masking=options.masking == "static",
            max_ngram=options.max_ngram, **kw,
        )

    def same_as(self, saved: dict[str, Any]) -> bool:
        """Whether a config saved by `dataclasses.asdict` (fields added since take their
        defaults) is this one."""
        return dataclasses.asdict(BertInstanceConfig(**saved)) == dataclasses.asdict(self)

    @property
    def max_num_tokens(self) -> int:
        """Room for segment tokens: less [CLS] and two [SEP] (one without NSP)."""
        return self.max_seq_length - (3 if self.nsp else 2)

    def masking(self, vocab: MaskingVocab) -> MaskingSpec:
        return MaskingSpec.from_vocab(vocab, mask_prob=self.mask_prob,
                                      max_predictions=self.max_predictions_per_seq,
                                      whole_word=self.whole_word, max_ngram=self.max_ngram)


def check_nsp_corpus(corpus: ShardedCorpus) -> None:
    """Raise `UserError` unless ``corpus`` can make both true and random next-sentence pairs."""
    counts = corpus.sentence_counts()
    multi = int((counts >= 2).sum())
    if corpus.num_documents < 2 or multi == 0:
        raise UserError(
            f"{corpus.name}: documents too short for next-sentence prediction (need at least 2 "
            f"documents, some with 2+ sentences; found {corpus.num_documents} documents, {multi} "
            "with 2+ sentences; use --objective mlm)"
        )


def document_pairs(
    corpus: Documents, index: int, config: BertInstanceConfig, rng: np.random.Generator
) -> list[Pair]:
    """The reference's ``create_instances_from_document`` up to masking.

    Sentences gather into a chunk until it reaches the target length (``max_num_tokens``, or
    with ``short_seq_prob`` a random length in [2, max_num_tokens], drawn once per document as in
    the reference). A random prefix of the chunk is A; B is the rest of the chunk, or (half the
    time, and always for a one-sentence chunk) sentences from a random other document, and then
    the chunk's unused sentences are put back. Without NSP the whole chunk is A.
    """
    document = corpus.document(index)
    target = config.max_num_tokens
    if rng.random() < config.short_seq_prob:
        target = int(rng.integers(2, config.max_num_tokens, endpoint=True))
    pairs: list[Pair] = []
    chunk: list[np.ndarray] = []
    length = i = 0
    last = len(document) - 1
    while i <= last:
        chunk.append(document[i])
        length += len(document[i])
        if i == last or length >= target:
            pair, unused = _split_chunk(corpus, index, chunk, target, config, rng)
            pairs.append(pair)
            i -= unused
            chunk, length = [], 0
        i += 1
    return pairs


def _split_chunk(
    corpus: Documents,
    index: int,
    chunk: list[np.ndarray],
    target: int,
    config: BertInstanceConfig,
    rng: np.random.Generator,
) -> tuple[Pair, int]:
    """One pair from a chunk, and how many of its sentences to put back."""
    empty = np.zeros(0, dtype=np.int64)
    if not config.nsp and config.two_segment_prob > 0:
        return consecutive_segments(chunk, target, config, rng), 0
    if not config.nsp:
        a, _ = truncate_seq_pair(np.concatenate(chunk), empty, config.max_num_tokens, rng)
        return (a, empty, False), 0
    if config.sentence_order:
        return sentence_order_pair(chunk, config, rng), 0
    a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
    a = np.concatenate(chunk[:a_end])
    if len(chunk) == 1 or rng.random() < 0.5:
        b = _random_next(corpus, index, target - len(a), rng)
        unused, is_random_next = len(chunk) - a_end, True
    else:
        b = np.concatenate(chunk[a_end:])
        unused, is_random_next = 0, False
    a, b = truncate_seq_pair(a, b, config.max_num_tokens, rng)
    return (a, b, is_random_next), unused


def sentence_order_pair(
    chunk: list[np.ndarray], config: BertInstanceConfig, rng: np.random.Generator
) -> Pair:
    """ALBERT's sentence-order pair (section 4.1): A is a random prefix of the chunk, B the rest,
    and half the time they are swapped (the third item, the label, is then True).

    A one-sentence chunk is cut inside its sentence, so both segments always come from one
    document (the reference would take B from a random document and label it 1).
    """
    if len(chunk) >= 2:
        a_end = int(rng.integers(1, len(chunk)))
        a, b = np.concatenate(chunk[:a_end]), np.concatenate(chunk[a_end:])
    else:
        cut = int(rng.integers(1, len(chunk[0]))) if len(chunk[0]) >= 2 else len(chunk[0])
        a, b = chunk[0][:cut], chunk[0][cut:]
    swapped = bool(rng.random() < 0.5)
    if swapped:
        a, b = b, a
    a, b = truncate_seq_pair(a, b, config.max_num_tokens, rng)
    return a, b, swapped


def consecutive_segments(chunk: list[np.ndarray], target: int, config: BertInstanceConfig,
                         rng: np.random.Generator) -> Pair:
    """ELECTRA's inputs (``build_pretraining_dataset.py`` ``_create_example``): with probability
    ``1 - two_segment_prob`` the chunk is one segment; else sentences fill A up to about half
    of ``target`` (the sentence that crosses the half goes to A by a fair coin) and the rest is
    B. A is cut to the length less [CLS] and [SEP], B to what remains less its [SEP], both at
    the end; an empty B makes a one-segment input. No label.

    Once B has begun, every later sentence goes to B: the reference would still give A a short
    sentence that fits, taking it out of its place in the text."""
    empty = np.zeros(0, dtype=np.int64)
    room = config.max_seq_length
    if rng.random() >= config.two_segment_prob:
        return np.concatenate(chunk)[: room - 2], empty, False
    half = (target - 1) // 2  # the reference's (target - 3) // 2, its target counting [CLS] [SEP]
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    length = 0
    for sentence in chunk:
        if not a or (not b and (length + len(sentence) < half
                                or (length < half and rng.random() < 0.5))):
            a.append(sentence)
            length += len(sentence)
        else:
            b.append(sentence)
    first = np.concatenate(a)[: room - 2]
    second = np.concatenate(b)[: max(0, room - len(first) - 3)] if b else empty
    return first, second, False


def _random_next(
    corpus: Documents, index: int, target_b: int, rng: np.random.Generator
) -> np.ndarray:
    """Sentences from a random other document, from a random start, until ``target_b`` tokens."""
    other = index
    for _ in range(10):  # the reference's tries at a document other than this one
        other = int(rng.integers(corpus.num_documents))
        if other != index:
            break
    document = corpus.document(other)
    b: list[np.ndarray] = []
    length = 0
    for sentence in document[int(rng.integers(len(document))) :]:
        b.append(sentence)
        length += len(sentence)
        if length >= target_b:
            break
    return np.concatenate(b)


def truncate_seq_pair(
    a: np.ndarray, b: np.ndarray, max_num_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Trim the pair to ``max_num_tokens`` as the reference's ``truncate_seq_pair``.

    The reference drops one token at a time from the longer side (B on a tie), from its front or
    its back by a fair coin; this computes how many each side loses, then draws the front/back
    split as the binomial it is.
    """
    excess = len(a) + len(b) - max_num_tokens
    if excess <= 0:
        return a, b
    gap = min(abs(len(a) - len(b)), excess)
    rest = excess - gap
    lose_a = (gap if len(a) > len(b) else 0) + rest // 2
    lose_b = (gap if len(a) <= len(b) else 0) + (rest + 1) // 2
    return _trim(a, lose_a, rng), _trim(b, lose_b, rng)


def _trim(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    front = int(rng.binomial(n, 0.5))
    return x[front : len(x) - (n - front)]


def build_instance(
    pair: Pair,
    vocab: BertVocab,
    config: BertInstanceConfig,
    spec: MaskingSpec,
    mask_rng: np.random.Generator | None,
) -> Instance:
    """[CLS] A [SEP] B [SEP] with segment ids 0/1, masked with ``mask_rng`` (None: not yet)."""
    ids, segment = pair_ids(pair, vocab, config)
    masked = mask_tokens(ids, mask_rng, spec) if mask_rng is not None else None
    return pad_instance(ids, segment, masked, pair[2], vocab, config)


def pair_ids(pair: Pair, vocab: BertVocab, config: BertInstanceConfig
             ) -> tuple[np.ndarray, np.ndarray]:
    """(L,) int64 ids of [CLS] A [SEP] (B [SEP]) and their (L,) segment ids 0/1; B is there
    with NSP / SOP, or when it has tokens (ELECTRA's two segments)."""
    a, b, _ = pair
    n_a, two = len(a), config.nsp or len(b) > 0
    ids = np.empty(n_a + len(b) + 3 if two else n_a + 2, dtype=np.int64)  # (L,)
    ids[0], ids[1 : n_a + 1], ids[n_a + 1], ids[-1] = vocab.cls_id, a, vocab.sep_id, vocab.sep_id
    if two:
        ids[n_a + 2 : -1] = b
    segment = np.zeros(len(ids), dtype=np.int64)
    segment[n_a + 2 :] = 1
    return ids, segment


def pad_instance(ids: np.ndarray, segment: np.ndarray, masked: MaskedTokens | None,
                 is_random_next: bool, vocab: BertVocab, config: BertInstanceConfig) -> Instance:
    """The reference fields of one sequence, padded to S and P (no MLM fields if unmasked)."""
    S, P, L = config.max_seq_length, config.max_predictions_per_seq, len(ids)
    rows = np.zeros((3, S), dtype=np.int64)  # one buffer for the three (S,) fields
    rows[0, :L] = ids if masked is None else masked.ids
    rows[0, L:] = vocab.pad_id
    rows[1, :L] = 1
    rows[2, :L] = segment
    instance = {"input_ids": rows[0], "input_mask": rows[1], "segment_ids": rows[2]}
    if masked is not None:
        k = len(masked.positions)
        predictions = np.zeros((2, P), dtype=np.int64)
        predictions[0, :k], predictions[1, :k] = masked.positions, masked.labels
        weights = np.zeros(P, dtype=np.float32)
        weights[:k] = 1.0
        instance |= {"masked_lm_positions": predictions[0], "masked_lm_ids": predictions[1],
                     "masked_lm_weights": weights}
    instance["next_sentence_labels"] = np.array(int(is_random_next), dtype=np.int64)
    return instance


class WindowStream(torch.utils.data.IterableDataset, abc.ABC):
    """An endless, seeded, resumable stream of instances made ``window`` documents at a time:
    `window_instances` is a pure function of (seed, epoch, window), so `state_dict`, the
    position of the next instance, is all a resumed run needs; use it with
    ``DataLoader(num_workers=0)`` so that no worker reads ahead."""

    def __init__(self, corpus: Documents, vocab: BertVocab, config: BertInstanceConfig,
                 seed: int, window: int) -> None:
        self.corpus, self.vocab, self.config = corpus, vocab, config
        self.spec = config.masking(vocab)
        self.seed, self.window = seed, window
        self._epoch = self._block = self._offset = 0
        self._order: tuple[int, np.ndarray] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Where the next instance comes from; everything random is derived from it."""
        return {"seed": self.seed, "window": self.window, "epoch": self._epoch,
                "block": self._block, "offset": self._offset,
                "config": dataclasses.asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict`; the next instance is the one that would have followed."""
        if not self.config.same_as(state["config"]):
            raise ValueError("the saved stream used another BertInstanceConfig")
        self.seed, self.window = state["seed"], state["window"]
        self._epoch, self._block, self._offset = state["epoch"], state["block"], state["offset"]
        self._order = None

    def __iter__(self) -> Iterator[Instance]:
        while True:
            instances = self.window_instances(self._epoch, self._block)
            while self._offset < len(instances):
                self._offset += 1
                yield instances[self._offset - 1]
            self._offset = 0
            self._block += 1
            if self._block * self.window >= self.corpus.num_documents:
                self._epoch, self._block = self._epoch + 1, 0

    @abc.abstractmethod
    def window_instances(self, epoch: int, block: int) -> list[Instance]:
        """The instances of window ``block`` of ``epoch``, in the order they are fed."""

    def document_order(self, key: int) -> np.ndarray:
        """The documents in the seeded order of ``key`` (an epoch, or a dupe copy)."""
        if self._order is None or self._order[0] != key:
            rng = np.random.default_rng([self.seed, _ORDER, key])
            self._order = (key, rng.permutation(self.corpus.num_documents))
        return self._order[1]

    def collate(self, instances: list[Instance]) -> dict[str, torch.Tensor]:
        """The seven (B, ...) fields of `instances` (see `collate`)."""
        return collate(instances, self.spec, self.config.static_masking)


class BertPretrainingStream(WindowStream):
    """BERT pretraining instances (a `WindowStream`).

    Each epoch visits the documents in a new seeded order, a window of ``window`` documents at a
    time; the instances of a window are shuffled together (the reference shuffles all instances
    of its output file). Epoch ``e`` uses dupe copy ``e % dupe_factor``: its pairs, and with
    static masking its masks, are those of every epoch with the same copy.
    """

    def __init__(
        self,
        corpus: ShardedCorpus,
        vocab: BertVocab,
        config: BertInstanceConfig | None = None,
        seed: int = 0,
        window: int = 256,
    ) -> None:
        config = config or BertInstanceConfig()
        super().__init__(corpus, vocab, config, seed, window)
        if config.nsp and not config.sentence_order:
            check_nsp_corpus(corpus)

    def document_instances(self, epoch: int, document: int) -> list[Instance]:
        """The instances of one document in one epoch (a pure function of seed, epoch, doc)."""
        dupe = epoch % self.config.dupe_factor
        rng = np.random.default_rng([self.seed, _PAIRS, dupe, document])
        instances = []
        for j, pair in enumerate(document_pairs(self.corpus, document, self.config, rng)):
            if self.config.static_masking:
                mask_rng = np.random.default_rng([self.seed, _MASKS, dupe, document, j])
                instances.append(self.build(pair, mask_rng))
            else:
                instance = self.build(pair, None)
                entropy = np.random.SeedSequence([self.seed, _MASKS, epoch, document, j])
                instance["mask_seed"] = entropy.generate_state(1, np.uint64)
                instances.append(instance)
        return instances

    def build(self, pair: Pair, mask_rng: np.random.Generator | None) -> Instance:
        """One instance of ``pair`` (`build_instance`; a subclass may mask otherwise)."""
        return build_instance(pair, self.vocab, self.config, self.spec, mask_rng)

    def window_instances(self, epoch: int, block: int) -> list[Instance]:
        docs = self.document_order(epoch)[block * self.window : (block + 1) * self.window]
        instances = [x for d in docs for x in self.document_instances(epoch, int(d))]
        rng = np.random.default_rng([self.seed, _WINDOW, epoch, block])
        return [instances[k] for k in rng.permutation(len(instances))]


def collate(instances: list[Instance], spec: MaskingSpec,
            static_masking: bool) -> dict[str, torch.Tensor]:
    """Stack instances into the seven (B, ...) fields; int64 except float32 weights.

    With dynamic masking the batch is masked here by `mask_batch`, with a generator seeded
    from the instances' positions in the stream (their "mask_seed"), so a resumed run masks
    identically.
    """
    batch = {k: torch.from_numpy(np.stack([x[k] for x in instances]))
             for k in FIELDS if k in instances[0]}
    if not static_masking:
        seeds = np.concatenate([x["mask_seed"] for x in instances])
        seed = np.random.SeedSequence(seeds.tolist()).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed))
        masked = mask_batch(batch["input_ids"], batch["input_mask"], generator, spec)
        batch["input_ids"] = masked.input_ids
        batch["masked_lm_positions"] = masked.positions
        batch["masked_lm_ids"] = masked.labels
        batch["masked_lm_weights"] = masked.weights
    return {k: batch[k] for k in FIELDS}
