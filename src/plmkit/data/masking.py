"""Token selection for every masking objective: the one place that owns each paper's masking
policy and its defaults (`FAMILY_MASKING`, `masking_defaults`).

BERT (the default): Google BERT's ``create_masked_lm_predictions`` (create_pretraining_data.py),
written around *units*: a unit is a span ``[start, end)`` of token positions masked together
(one token; one whole word; an ALBERT n-gram; an ERNIE phrase or entity). A sequence
predicts ``num_to_predict`` tokens; units are shuffled and taken whole while the budget allows,
a unit that would overflow it is skipped (an ALBERT n-gram is first cut to n - 1, ..., 1 words,
as ALBERT's version of the function does); each chosen token becomes [MASK] 80% of the time,
stays itself 10% and becomes a random token 10% (BERT paper §3.1 and Appendix C.2).

`mask_tokens` does this for one sequence with numpy (static masking while building instances);
`mask_batch` does the same for a padded batch with torch (dynamic masking in a collator).
`mask_units` masks by units given from outside (ERNIE's knowledge masking, `unit_starts`) and
draws 80/10/10 once per unit, so a phrase or an entity is hidden, kept or replaced whole.
ELECTRA re-draws BERT's choice as [MASK] 85% / kept 15% (`mask_chosen`); XLNet picks its
prediction targets as spans of whole words with context around them (`span_targets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch

MASK_PROB = 0.15  # BERT §3.1: 15% of WordPiece tokens
MASK_TOKEN_FRAC = 0.8  # of those: 80% [MASK]
KEEP_FRAC = 0.1  # 10% unchanged; the remaining 10% a random token
ELECTRA_MASK_FRAC = 0.85  # ELECTRA pretrain_helpers.py `mask`: [MASK] 85%, the original 15%
XLNET_MAX_GRAM = 5  # XLNet targets: spans of up to 5 words, p(n) proportional to 1/n
XLNET_ALPHA, XLNET_BETA = 6, 1  # with a context of alpha/beta * n tokens per n-word span

# Each family's masking when the user names none, as `DataOptions` fields; the `DataOptions`
# defaults are BERT's (static, dupe_factor 10, 15%, 80/10/10, single tokens). ERNIE's levels
# are the stages of its objective (`LEVELS`); XLNet's spans are its own (`span_targets`).
FAMILY_MASKING: dict[str, dict[str, Any]] = {
    "roberta": {"masking": "dynamic"},  # RoBERTa section 4.1
    "albert": {"whole_word": True, "max_ngram": 3},  # ALBERT section 4.1: n-grams, n <= 3
    "electra": {"masking": "dynamic"},  # the reference masks on the fly
}

# ERNIE's knowledge-masking levels (section 3.2) and the bits of a token's unit flags that mark
# where a phrase-level / entity-level unit begins (`data/ernie.py` computes them).
Level = Literal["basic", "phrase", "entity"]
LEVELS: tuple[Level, ...] = ("basic", "phrase", "entity")
PHRASE_START, ENTITY_START = 1, 2


def masking_defaults(family: str, config: Any) -> dict[str, Any]:
    """The `DataOptions` masking fields of `family` (`FAMILY_MASKING`), with the masking rate
    of the model `config` when it has one (ELECTRA's: Table 6, 15%, 25% for large)."""
    rate = getattr(config, "mask_prob", None)
    return {**FAMILY_MASKING.get(family, {}), **({} if rate is None else {"mask_prob": rate})}


def max_predictions(seq_len: int, mask_prob: float = MASK_PROB) -> int:
    """BERT's max_predictions_per_seq: 20 at 128, 80 at 512 (15% rounded up to tens)."""
    return max(1, math.ceil(seq_len * mask_prob / 10) * 10)


class MaskingVocab(Protocol):
    """What masking needs from a tokenizer (`plmkit.tokenizers.Tokenizer` has it)."""

    vocab_size: int
    mask_id: int
    special_ids: frozenset[int]
    is_continuation: np.ndarray


@dataclass(frozen=True, eq=False)
class MaskingSpec:
    """The vocabulary facts and the policy of one masking objective.

    ``is_continuation`` (V,) bool marks tokens that continue a word ("##x" in WordPiece); it is
    needed for ``whole_word``. Random replacements are drawn uniformly from the non-special ids
    (the reference draws from the whole vocabulary, [CLS] and [PAD] included).
    """

    vocab_size: int
    mask_id: int
    special_ids: frozenset[int]
    is_continuation: np.ndarray | None = None
    mask_prob: float = MASK_PROB
    max_predictions: int = 20  # max_predictions_per_seq at length 128 in the reference
    whole_word: bool = False
    max_ngram: int = 1  # ALBERT: spans of n <= max_ngram units, p(n) proportional to 1/n

    def __post_init__(self) -> None:
        if self.whole_word and self.is_continuation is None:
            raise ValueError("whole_word masking needs is_continuation")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), not {self.mask_prob}")
        if self.max_predictions < 1:
            raise ValueError(f"max_predictions must be >= 1, not {self.max_predictions}")
        if self.max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1, not {self.max_ngram}")

    @classmethod
    def from_vocab(
        cls,
        vocab: MaskingVocab,
        *,
        mask_prob: float = MASK_PROB,
        max_predictions: int = 20,
        whole_word: bool = False,
        max_ngram: int = 1,
    ) -> MaskingSpec:
        """The spec for a tokenizer's vocabulary and the given policy."""
        return cls(vocab.vocab_size, vocab.mask_id, frozenset(vocab.special_ids),
                   vocab.is_continuation, mask_prob, max_predictions, whole_word, max_ngram)

    @cached_property
    def sorted_specials(self) -> np.ndarray:
        """Special ids below ``vocab_size``, ascending (for drawing non-special ids)."""
        return np.array(sorted(i for i in self.special_ids if i < self.vocab_size), dtype=np.int64)

    @cached_property
    def is_special(self) -> np.ndarray:
        """(V,) bool: which ids are special (a lookup cheaper than `np.isin` on short rows)."""
        table = np.zeros(self.vocab_size, dtype=bool)
        table[self.sorted_specials] = True
        return table

    @cached_property
    def plain_ids(self) -> np.ndarray:
        """(V - #specials,) int64: the non-special ids, ascending."""
        return np.flatnonzero(~self.is_special).astype(np.int64)


class MaskedTokens(NamedTuple):
    """One masked sequence: ``ids`` with replacements, sorted ``positions`` and their ``labels``."""

    ids: np.ndarray  # (L,)
    positions: np.ndarray  # (n,) int64, ascending
    labels: np.ndarray  # (n,) int64, the original ids at `positions`


class MaskedBatch(NamedTuple):
    """A masked batch, predictions padded to ``max_predictions`` (P) as in the reference."""

    input_ids: torch.Tensor  # (B, S)
    positions: torch.Tensor  # (B, P) int64, ascending, padded with 0
    labels: torch.Tensor  # (B, P) int64, padded with 0
    weights: torch.Tensor  # (B, P) float32, 1.0 for a real prediction, 0.0 for padding


def num_to_predict(length: int, mask_prob: float, max_predictions: int) -> int:
    """Predictions for a sequence of ``length`` tokens ([CLS] and [SEP] included), as the reference.

    Python's ``round`` rounds half to even, as the reference's ``int(round(...))`` does.
    """
    return min(max_predictions, max(1, round(length * mask_prob)))


def candidates(ids: np.ndarray, special_ids: frozenset[int]) -> np.ndarray:
    """(L,) bool: positions that may be masked (not [CLS], [SEP], [PAD] or another special)."""
    return ~np.isin(ids, np.fromiter(special_ids, dtype=np.int64))


def word_starts(ids: np.ndarray, is_continuation: np.ndarray) -> np.ndarray:
    """(L,) bool: tokens that begin a word (not a "##" continuation piece)."""
    return ~is_continuation[ids]


def word_units(candidate: np.ndarray, word_start: np.ndarray | None = None) -> np.ndarray:
    """(U, 2) int64 ``[start, end)`` units: one per candidate token, or per whole word.

    With ``word_start`` a unit is a word start and the continuation pieces after it; a piece
    after a non-candidate starts its own unit (the reference would glue a "##" piece at the start
    of segment B onto the last word of A, across the [SEP]).
    """
    prev = np.concatenate([[False], candidate[:-1]])
    start = candidate if word_start is None else candidate & (word_start | ~prev)
    starts = np.flatnonzero(start)
    breaks = np.concatenate([np.flatnonzero(~candidate | start), [len(candidate)]])
    ends = breaks[np.searchsorted(breaks, starts, side="right")]
    return np.stack([starts, ends], axis=1).astype(np.int64)


def ngram_probs(max_n: int) -> np.ndarray:
    """(max_n,) p(n) proportional to 1/n: 6/11, 3/11, 2/11 for n <= 3 (ALBERT section 4.1)."""
    p = 1.0 / np.arange(1, max_n + 1)
    return p / p.sum()


def ngram_units(units: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """(U, 1 + max_n) n-gram candidates, one per unit of ``units`` (U, 2): its start, then the
    end of the n-gram of adjacent units from there, n drawn from `ngram_probs`, then the ends
    of each shorter one down to the single unit (the last repeated to fill the row).

    As in ALBERT's ``create_masked_lm_predictions``, an n-gram that runs past the end is cut
    there; here the end is that of a run of adjacent units (a span never crosses [SEP]).
    `choose_units` takes the first of the ends that fits the budget. Spans overlap; the walk
    skips one that overlaps a chosen span.
    """
    if len(units) == 0:
        return np.zeros((0, 1 + max_n), dtype=np.int64)
    index = np.arange(len(units))
    run = np.concatenate([[0], np.cumsum(units[1:, 0] != units[:-1, 1])])  # (U,) run of each
    room = np.minimum(np.searchsorted(run, run, side="right") - index, max_n)  # (U,) 1..max_n
    n = 1 + (rng.random(len(units))[:, None] > np.cumsum(ngram_probs(max_n))).sum(1)  # (U,)
    n = np.minimum(n, room)  # (U,) cut at the end of the run
    shorter = np.maximum(n[:, None] - np.arange(max_n), 1)  # (U, N) n, n - 1, ..., 1, 1
    return np.concatenate([units[:, :1], units[index[:, None] + shorter - 1, 1]], axis=1)


def select_units(units: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of shuffled ``units`` taken whole while they fit in ``budget`` tokens."""
    return _positions(choose_units(units, budget, rng))


def choose_units(units: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) ``[start, end)`` spans taken by a shuffled walk over ``units`` (U, 1 + E): a
    start and E candidate ends, the preferred first (one for a token or a word; an n-gram and
    its shorter versions, `ngram_units`).

    Each unit is taken with its first end that fits in what is left of ``budget`` tokens (the
    reference tries a shorter n-gram before it gives up). A unit that does not fit even so, or
    overlaps a chosen span, is skipped, and the walk goes on with the next (the reference loop).
    """
    if len(units) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    starts, ends = units[:, 0].tolist(), units[:, 1:].tolist()  # Python ints: units are few
    covered = bytearray(int(units[:, 1:].max()))
    chosen, taken = [], 0
    for k in rng.permutation(len(units)).tolist():
        if taken >= budget:
            break
        start = starts[k]
        end = next((e for e in ends[k] if taken + e - start <= budget), None)
        if end is None or covered.find(1, start, end) >= 0:
            continue
        covered[start:end] = b"\1" * (end - start)
        chosen.append((start, end))
        taken += end - start
    return np.array(chosen, dtype=np.int64).reshape(-1, 2)


def _positions(units: np.ndarray) -> np.ndarray:
    """Sorted positions covered by non-overlapping (K, 2) ``units``."""
    spans = sorted(p for start, end in units.tolist() for p in range(start, end))
    return np.array(spans, dtype=np.int64)


def random_ids(rng: np.random.Generator, n: int, spec: MaskingSpec) -> np.ndarray:
    """(n,) int64 ids drawn uniformly from the non-special ids."""
    return spec.plain_ids[rng.integers(0, _num_plain(spec), size=n)]


def replace_tokens(
    ids: np.ndarray, positions: np.ndarray, rng: np.random.Generator, spec: MaskingSpec
) -> MaskedTokens:
    """Apply 80% [MASK] / 10% keep / 10% random to ``positions`` of ``ids`` (BERT §3.1)."""
    u = rng.random(len(positions))
    return _replace(ids, positions, u, random_ids(rng, len(positions), spec), spec)


def _replace(ids: np.ndarray, positions: np.ndarray, u: np.ndarray, replacement: np.ndarray,
             spec: MaskingSpec) -> MaskedTokens:
    """[MASK] where ``u`` < 0.8, ``replacement`` where ``u`` >= 0.9, at ``positions`` (n,)."""
    labels = np.asarray(ids, dtype=np.int64)[positions]  # (n,)
    randomized = np.where(u >= MASK_TOKEN_FRAC + KEEP_FRAC, replacement, labels)  # (n,)
    out = np.array(ids, copy=True)
    out[positions] = np.where(u < MASK_TOKEN_FRAC, spec.mask_id, randomized)
    return MaskedTokens(out, positions, labels)


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, spec: MaskingSpec) -> MaskedTokens:
    """Mask one unpadded sequence ([CLS] ... [SEP] ... [SEP]) as the reference does."""
    ids = np.asarray(ids)
    candidate = ~spec.is_special[ids]  # (L,) as `candidates`
    budget = num_to_predict(len(ids), spec.mask_prob, spec.max_predictions)
    if spec.whole_word or spec.max_ngram > 1:
        start = word_starts(ids, spec.is_continuation) if spec.whole_word else None
        units = word_units(candidate, start)
        if spec.max_ngram > 1:
            units = ngram_units(units, spec.max_ngram, rng)
        positions = select_units(units, budget, rng)
    else:  # one-token units: the walk of `choose_units` takes the first `budget` shuffled
        single = candidate.nonzero()[0]  # (U,)
        shuffled = rng.permutation(len(single)) if len(single) else single
        positions = single[shuffled[:budget]]  # (n,)
        positions.sort()
    return replace_tokens(ids, positions, rng, spec)


def unit_starts(flags: np.ndarray, word_start: np.ndarray, level: Level) -> np.ndarray:
    """(L,) bool: the tokens that begin a knowledge-masking unit at ``level`` (ERNIE §3.2).

    basic: a character or a whole Latin word (``word_start``, not a "##" piece); phrase: a
    segmented word or phrase (`PHRASE_START` in ``flags`` (L,) uint8); entity: a whole person,
    place or organization name, phrases elsewhere (`ENTITY_START`).
    """
    if level == "basic":
        return word_start
    bit = PHRASE_START if level == "phrase" else ENTITY_START
    return (flags & bit) > 0


def mask_units(ids: np.ndarray, starts: np.ndarray, rng: np.random.Generator,
               spec: MaskingSpec) -> MaskedTokens:
    """Mask one unpadded sequence by the units that begin at ``starts`` (L,) bool: the budget
    of `mask_tokens`, and 80% [MASK] / 10% keep / 10% random drawn once per unit."""
    ids = np.asarray(ids)
    units = word_units(candidates(ids, spec.special_ids), starts)  # (U, 2)
    budget = num_to_predict(len(ids), spec.mask_prob, spec.max_predictions)
    chosen = choose_units(units, budget, rng)  # (K, 2)
    lengths = chosen[:, 1] - chosen[:, 0]  # (K,)
    u = np.repeat(rng.random(len(chosen)), lengths)  # (n,) one draw per unit
    spans = np.concatenate([np.arange(s, e) for s, e in chosen]) if len(chosen) else lengths
    order = np.argsort(spans)
    positions = spans[order].astype(np.int64)  # (n,) ascending
    return _replace(ids, positions, u[order], random_ids(rng, len(positions), spec), spec)


def mask_batch(
    input_ids: torch.Tensor,
    input_mask: torch.Tensor,
    generator: torch.Generator,
    spec: MaskingSpec,
) -> MaskedBatch:
    """Mask a right-padded batch, each row as `mask_tokens` would, with static shapes.

    ``input_mask`` (B, S) is 1 on real tokens; a row's budget counts them, [CLS] and [SEP]
    included, as in the reference. Returns predictions padded to ``spec.max_predictions``.
    """
    if spec.max_ngram > 1:
        return _mask_rows(input_ids, input_mask, generator, spec)
    device = input_ids.device  # the generator must live there too
    specials = torch.from_numpy(spec.sorted_specials).to(device)
    real = input_mask.bool()  # (B, S)
    candidate = real & ~torch.isin(input_ids, specials)  # (B, S)
    budget = (real.sum(1).double() * spec.mask_prob).round()  # (B,) half to even, as `round`
    budget = budget.clamp(1, spec.max_predictions).long()  # (B,)
    chosen = _choose_units(candidate, _batch_word_starts(input_ids, spec), budget, generator)
    u = torch.rand(input_ids.shape, generator=generator, device=device)  # (B, S)
    replacement = torch.randint(_num_plain(spec), input_ids.shape, generator=generator,
                                device=device)  # (B, S)
    replacement = _skip_specials(replacement, specials)
    out = torch.where(chosen & (u < MASK_TOKEN_FRAC), spec.mask_id, input_ids)
    out = torch.where(chosen & (u >= MASK_TOKEN_FRAC + KEEP_FRAC), replacement, out)
    positions, valid = _sorted_positions(chosen, spec.max_predictions)  # (B, P)
    labels = input_ids.gather(1, positions) * valid  # (B, P)
    return MaskedBatch(out, positions, labels.long(), valid.float())


def _mask_rows(
    input_ids: torch.Tensor,
    input_mask: torch.Tensor,
    generator: torch.Generator,
    spec: MaskingSpec,
) -> MaskedBatch:
    """`mask_tokens` row by row (n-gram spans overlap, which `_choose_units` cannot express),
    with a numpy generator seeded from ``generator``."""
    seed = int(torch.randint(2**62, (1,), generator=generator, device=input_ids.device))
    rng = np.random.default_rng(seed)
    ids = input_ids.cpu().numpy()  # (B, S)
    out = ids.copy()
    B, P = len(ids), spec.max_predictions
    positions, labels = np.zeros((B, P), np.int64), np.zeros((B, P), np.int64)
    weights = np.zeros((B, P), np.float32)
    for r, n in enumerate(input_mask.sum(1).tolist()):
        masked = mask_tokens(ids[r, :n], rng, spec)
        k = len(masked.positions)
        out[r, :n] = masked.ids
        positions[r, :k], labels[r, :k], weights[r, :k] = masked.positions, masked.labels, 1.0
    return MaskedBatch(*(torch.from_numpy(x).to(input_ids.device)
                         for x in (out, positions, labels, weights)))


def _batch_word_starts(input_ids: torch.Tensor, spec: MaskingSpec) -> torch.Tensor | None:
    if not spec.whole_word:
        return None
    return ~torch.from_numpy(spec.is_continuation).to(input_ids.device)[input_ids]  # (B, S)


def _choose_units(
    candidate: torch.Tensor,
    word_start: torch.Tensor | None,
    budget: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B, S) bool chosen positions: `word_units` + `select_units` for every row at once."""
    B, S = candidate.shape
    prev = torch.nn.functional.pad(candidate[:, :-1], (1, 0))  # (B, S) previous is a candidate
    start = candidate if word_start is None else candidate & (word_start | ~prev)  # (B, S)
    unit = (start.cumsum(1) - 1).clamp(min=0)  # (B, S) unit index of each candidate position
    size = torch.zeros_like(unit).scatter_add_(1, unit, candidate.long())  # (B, U=S) tokens
    key = torch.rand(B, S, generator=generator, device=candidate.device)  # (B, U) shuffle
    key = key.masked_fill(size == 0, 2.0)
    order = key.argsort(1)  # (B, U) units in random order, empty ones last
    size = size.gather(1, order)  # (B, U)
    taken = size.cumsum(1) <= budget[:, None]  # (B, U) the prefix that fits...
    taken &= size > 0
    _take_after_overflow(taken, size, budget)  # ...then smaller units that still fit
    in_unit = torch.zeros_like(taken).scatter_(1, order, taken)  # (B, U) by unit index
    return candidate & in_unit.gather(1, unit)  # (B, S)


def _take_after_overflow(taken: torch.Tensor, size: torch.Tensor, budget: torch.Tensor) -> None:
    """Continue the greedy walk past each row's first unit that overflowed (in place)."""
    total = (size * taken).sum(1)  # (B,)
    first = int((~taken).int().argmax(1).min())  # the earliest unit not taken in any row
    for k in range(first, int((size > 0).sum(1).max())):
        room = budget - total  # (B,)
        if not bool((room > 0).any()):
            break
        fits = ~taken[:, k] & (size[:, k] > 0) & (size[:, k] <= room)  # (B,)
        taken[:, k] |= fits
        total += size[:, k] * fits


def _sorted_positions(chosen: torch.Tensor, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending chosen positions per row, padded with 0 to P, and their validity (B, P)."""
    B, S = chosen.shape
    index = torch.arange(S, device=chosen.device).expand(B, S)  # (B, S)
    ranked = torch.where(chosen, index, S).sort(1).values  # (B, S) chosen first, ascending
    ranked = torch.nn.functional.pad(ranked, (0, max(0, P - S)), value=S)[:, :P]  # (B, P)
    valid = ranked < S  # (B, P)
    return torch.where(valid, ranked, 0), valid


def _num_plain(spec: MaskingSpec) -> int:
    return spec.vocab_size - len(spec.sorted_specials)


def _skip_specials(draw: torch.Tensor, specials: torch.Tensor) -> torch.Tensor:
    """Map k in [0, V - #specials) to the k-th non-special id (elementwise; `plain_ids` in
    numpy)."""
    for s in specials.tolist():
        draw = draw + (draw >= s)
    return draw


def scatter_predictions(ids: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
    """ids (B, S) with `values` (B, P) written at `positions` (B, P) where `valid` (B, P)."""
    seq = ids.shape[1]
    index = positions.masked_fill(~valid, seq)  # padded predictions go to a dropped column
    return torch.nn.functional.pad(ids, (0, 1)).scatter(1, index, values)[:, :seq]  # (B, S)


def mask_chosen(batch: dict[str, torch.Tensor], mask_id: int, generator: torch.Generator
                ) -> dict[str, torch.Tensor]:
    """`batch` with its chosen positions as ELECTRA leaves them: [MASK] with probability
    `ELECTRA_MASK_FRAC`, else the original token (whatever BERT's 80/10/10 had put there)."""
    positions, valid = batch["masked_lm_positions"], batch["masked_lm_weights"] > 0  # (B, P)
    u = torch.rand(positions.shape, generator=generator)  # (B, P)
    original = scatter_predictions(batch["input_ids"], positions, batch["masked_lm_ids"], valid)
    masks = torch.full_like(positions, mask_id)  # (B, P)
    return {**batch, "input_ids": scatter_predictions(original, positions, masks,
                                                      valid & (u < ELECTRA_MASK_FRAC))}


def span_targets(word_start: np.ndarray, maskable: np.ndarray, goal: int,
                 rng: np.random.Generator) -> np.ndarray:
    """XLNet's prediction targets (the reference's `_sample_mask`): (L,) bool, exactly
    min(goal, maskable.sum()) positions, spans of whole words first, then single maskable
    tokens at random."""
    length = len(word_start)
    starts = np.flatnonzero(word_start & maskable)  # positions where a word begins
    grams = np.arange(1, XLNET_MAX_GRAM + 1)
    p = 1.0 / grams
    chosen = np.zeros(length, dtype=bool)
    count = cur = 0
    while cur < length and count < goal:
        n = min(int(rng.choice(grams, p=p / p.sum())), goal - count)
        context = n * XLNET_ALPHA // XLNET_BETA
        left = int(rng.integers(context)) if context else 0
        k = int(np.searchsorted(starts, cur + left))  # the first word starting in reach
        if k + n >= len(starts):  # the span would run to the end: stop (as the reference)
            break
        begin, end = int(starts[k]), min(int(starts[k + n]), int(starts[k]) + goal - count)
        chosen[begin:end] = maskable[begin:end]
        count = int(chosen.sum())
        cur = end + context - left
    rest = np.flatnonzero(maskable & ~chosen)
    extra = min(goal - count, len(rest))
    chosen[rng.choice(rest, extra, replace=False)] = True
    return chosen
