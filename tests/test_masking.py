"""Token selection against Google BERT's create_masked_lm_predictions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from plmkit.data.masking import (
    MaskingSpec,
    candidates,
    choose_units,
    mask_batch,
    mask_tokens,
    ngram_probs,
    ngram_units,
    num_to_predict,
    random_ids,
    replace_tokens,
    select_units,
    word_starts,
    word_units,
)
from plmkit.tokenizers import train_tokenizer

V, PAD, CLS, SEP, MASK = 1000, 0, 2, 3, 4
SPECIALS = frozenset(range(5))
IS_CONT = np.zeros(V, dtype=bool)
IS_CONT[500:] = True  # ids 500.. are "##" continuation pieces


def spec(**policy: object) -> MaskingSpec:
    return MaskingSpec(V, MASK, SPECIALS, IS_CONT, **policy)  # type: ignore[arg-type]


def sequence(rng: np.random.Generator, n: int, cont: float = 0.0) -> np.ndarray:
    """[CLS] a.. [SEP] b.. [SEP] with ``n`` ordinary tokens, a fraction ``cont`` continuations."""
    words = rng.integers(5, 500, size=n)
    pieces = np.where(rng.random(n) < cont, rng.integers(500, V, size=n), words)
    pieces[0] = words[0]
    half = n // 2
    return np.concatenate([[CLS], pieces[:half], [SEP], pieces[half:], [SEP]]).astype(np.int64)


def test_num_to_predict_is_15_percent_rounded_half_even_at_least_one_capped() -> None:
    assert num_to_predict(21, 0.15, 20) == 3
    assert num_to_predict(10, 0.15, 20) == 2  # round(1.5) = 2
    assert num_to_predict(30, 0.15, 20) == 4  # round(4.5) = 4, as Python's round
    assert num_to_predict(3, 0.15, 20) == 1
    assert num_to_predict(512, 0.15, 80) == 77
    assert num_to_predict(512, 0.15, 20) == 20


def test_word_units_groups_continuations_but_not_across_specials() -> None:
    ids = np.array([CLS, 10, 600, 601, 11, SEP, 602, 12, SEP])
    cand = candidates(ids, SPECIALS)
    assert word_units(cand).tolist() == [[i, i + 1] for i in (1, 2, 3, 4, 6, 7)]
    whole = word_units(cand, word_starts(ids, IS_CONT))
    assert whole.tolist() == [[1, 4], [4, 5], [6, 7], [7, 8]]


def test_select_units_skips_a_unit_that_overflows_and_goes_on() -> None:
    units = np.array([[0, 3], [3, 4]])
    for seed in range(20):
        assert select_units(units, 1, np.random.default_rng(seed)).tolist() == [3]
    assert select_units(np.zeros((0, 2), np.int64), 5, np.random.default_rng(0)).size == 0


def test_an_ngram_that_overflows_is_cut_to_a_shorter_one() -> None:
    """ALBERT's reference tries n - 1, ..., 1 words before it skips an n-gram."""
    grams = np.array([[1, 6, 4, 3]])  # from token 1: 3 words (5 tokens), 2 (3), 1 (2)
    for budget, span in ((5, [1, 6]), (4, [1, 4]), (3, [1, 4]), (2, [1, 3])):
        assert choose_units(grams, budget, np.random.default_rng(0)).tolist() == [span]
    assert choose_units(grams, 1, np.random.default_rng(0)).size == 0  # not even one word
    words = np.array([[1, 3], [3, 4], [4, 6], [6, 7], [8, 9]])  # (U, 2) [SEP] at 7
    for seed in range(20):
        grams = ngram_units(words, 3, np.random.default_rng(seed))  # (U, 4)
        assert grams[:, 0].tolist() == words[:, 0].tolist()
        assert (np.diff(grams[:, 1:], axis=1) <= 0).all() and (grams[:, -1] == words[:, 1]).all()
        assert np.isin(grams[:, 1:], words[:, 1]).all() and (grams[:4, 1:] <= 7).all()


def test_select_units_never_takes_overlapping_units() -> None:
    units = np.array([[0, 2], [1, 3], [2, 4], [3, 5]])  # bigrams, as ALBERT n-grams overlap
    for seed in range(50):
        pos = select_units(units, 4, np.random.default_rng(seed))
        assert len(pos) == 4 and len(set(pos.tolist())) == 4


def test_random_ids_are_uniform_over_non_special_ids() -> None:
    s = MaskingSpec(12, MASK, frozenset({0, 2, 3, 4, 7}))
    draws = random_ids(np.random.default_rng(0), 70_000, s)
    counts = np.bincount(draws, minlength=12)
    assert counts[[0, 2, 3, 4, 7]].sum() == 0
    assert np.all(np.abs(counts[[1, 5, 6, 8, 9, 10, 11]] - 10_000) < 500)


def test_mask_tokens_takes_one_token_units_as_the_walk_of_select_units() -> None:
    s = spec()
    cases = [sequence(np.random.default_rng(n), n) for n in range(1, 130, 7)]
    for seed, ids in enumerate([np.array([CLS, SEP, SEP]), *cases]):
        fast = mask_tokens(ids, np.random.default_rng(seed), s)
        rng = np.random.default_rng(seed)
        budget = num_to_predict(len(ids), s.mask_prob, s.max_predictions)
        walked = replace_tokens(ids, select_units(word_units(candidates(ids, SPECIALS)), budget,
                                                  rng), rng, s)
        assert all(np.array_equal(a, b) for a, b in zip(fast, walked, strict=True))


def test_mask_tokens_follows_the_reference() -> None:
    rng = np.random.default_rng(0)
    s = spec()
    outcome = np.zeros(3)  # [MASK], kept, random
    for _ in range(2000):
        ids = sequence(rng, int(rng.integers(5, 300)))
        m = mask_tokens(ids, rng, s)
        assert len(m.positions) == num_to_predict(len(ids), 0.15, 20)
        assert np.all(np.diff(m.positions) > 0)
        assert not np.isin(ids[m.positions], list(SPECIALS)).any()
        assert np.array_equal(m.labels, ids[m.positions])
        untouched = np.ones(len(ids), dtype=bool)
        untouched[m.positions] = False
        assert np.array_equal(m.ids[untouched], ids[untouched])
        new = m.ids[m.positions]
        assert not np.isin(new[new != MASK], list(SPECIALS)).any()
        kept, randomized = new == m.labels, (new != MASK) & (new != m.labels)
        outcome += [(new == MASK).sum(), kept.sum(), randomized.sum()]
    frac = outcome / outcome.sum()
    assert frac == pytest.approx([0.8, 0.1, 0.1], abs=0.01)


def test_mask_tokens_whole_word_masks_every_piece_of_a_word() -> None:
    rng = np.random.default_rng(1)
    s = spec(whole_word=True)
    split_words = 0
    for _ in range(500):
        ids = sequence(rng, 60, cont=0.4)
        m = mask_tokens(ids, rng, s)
        masked = np.zeros(len(ids), dtype=bool)
        masked[m.positions] = True
        for start, end in word_units(candidates(ids, SPECIALS), word_starts(ids, IS_CONT)):
            assert masked[start:end].all() or not masked[start:end].any()
            split_words += end - start > 1 and masked[start]
        assert len(m.positions) <= num_to_predict(len(ids), 0.15, 20)
    assert split_words > 100


def test_whole_word_needs_continuation_table() -> None:
    with pytest.raises(ValueError, match="is_continuation"):
        MaskingSpec(V, MASK, SPECIALS, whole_word=True)


def padded_batch(rng: np.random.Generator, lengths: list[int], cont: float = 0.0):
    rows = [sequence(rng, n - 3, cont) for n in lengths]
    S = max(lengths)
    ids = torch.full((len(rows), S), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), S, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.from_numpy(r)
        mask[i, : len(r)] = 1
    return ids, mask


def test_mask_batch_budget_matches_num_to_predict_for_every_length() -> None:
    lengths = list(range(5, 300))
    ids, mask = padded_batch(np.random.default_rng(0), lengths)
    out = mask_batch(ids, mask, torch.Generator().manual_seed(0), spec())
    expected = [num_to_predict(n, 0.15, 20) for n in lengths]
    assert out.weights.sum(1).long().tolist() == expected
    assert out.positions.shape == out.labels.shape == out.weights.shape == (len(lengths), 20)


def test_mask_batch_follows_the_reference() -> None:
    rng = np.random.default_rng(2)
    ids, mask = padded_batch(rng, rng.integers(6, 128, size=512).tolist())
    out = mask_batch(ids, mask, torch.Generator().manual_seed(2), spec())
    valid = out.weights.bool()  # (B, P)
    assert torch.equal(out.labels, ids.gather(1, out.positions) * valid)
    assert (out.positions[~valid] == 0).all() and (out.labels[~valid] == 0).all()
    pos = torch.where(valid, out.positions, 10**6)
    assert (pos.diff(dim=1)[valid[:, 1:]] > 0).all()  # ascending
    assert not torch.isin(out.labels[valid], torch.tensor(sorted(SPECIALS))).any()
    chosen = torch.zeros_like(ids, dtype=torch.bool).scatter_(1, out.positions, valid)
    assert torch.equal(out.input_ids[~chosen], ids[~chosen])  # PAD, CLS, SEP untouched
    new = out.input_ids.gather(1, out.positions)[valid]
    old = out.labels[valid]
    frac = torch.stack([new == MASK, new == old, (new != MASK) & (new != old)]).float().mean(1)
    assert frac.tolist() == pytest.approx([0.8, 0.1, 0.1], abs=0.015)
    assert not torch.isin(new[new != MASK], torch.tensor(sorted(SPECIALS))).any()


def test_mask_batch_whole_word() -> None:
    rng = np.random.default_rng(3)
    ids, mask = padded_batch(rng, [120] * 64, cont=0.4)
    out = mask_batch(ids, mask, torch.Generator().manual_seed(3), spec(whole_word=True))
    for row in range(len(ids)):
        chosen = np.zeros(ids.shape[1], dtype=bool)
        chosen[out.positions[row][out.weights[row].bool()].numpy()] = True
        r = ids[row].numpy()
        cand = candidates(r, SPECIALS) & mask[row].bool().numpy()
        units = word_units(cand, word_starts(r, IS_CONT))
        for start, end in units:
            assert chosen[start:end].all() or not chosen[start:end].any()
        assert chosen.sum() <= num_to_predict(120, 0.15, 20)
        assert chosen.sum() >= num_to_predict(120, 0.15, 20) - 2  # the greedy walk fills up


def test_mask_batch_shapes_are_static_and_the_generator_decides() -> None:
    ids, mask = padded_batch(np.random.default_rng(4), [8, 6])
    a = mask_batch(ids, mask, torch.Generator().manual_seed(7), spec(max_predictions=20))
    b = mask_batch(ids, mask, torch.Generator().manual_seed(7), spec(max_predictions=20))
    assert a.positions.shape == (2, 20)  # P even when the sequence is shorter than P
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = [mask_batch(ids, mask, torch.Generator().manual_seed(s), spec()) for s in range(8)]
    assert any(not torch.equal(c[0].positions, x.positions) for x in c[1:])


def test_mask_batch_skips_a_word_that_overflows_and_goes_on() -> None:
    ids = torch.tensor([[CLS, 10, 600, 601, 11, SEP]] * 16)  # budget round(6 * 0.15) = 1
    out = mask_batch(ids, torch.ones_like(ids), torch.Generator().manual_seed(0),
                     spec(whole_word=True))
    assert (out.positions[:, 0] == 4).all() and (out.weights.sum(1) == 1).all()


def reference_ngram_lengths(ids: np.ndarray, special: np.ndarray, word_start: np.ndarray,
                            budget: int, rng: np.random.Generator, max_n: int = 3) -> list[int]:
    """The words in each span that ALBERT's ``create_masked_lm_predictions`` chooses, written
    again from the reference: whole words, shuffled starts, n ~ 1/n cut at the end, a shorter
    n while the n-gram overflows the budget, then skip if it still does or overlaps."""
    words: list[list[int]] = []
    for i, t in enumerate(ids.tolist()):
        if special[t]:
            continue
        if words and not word_start[t]:
            words[-1].append(i)
        else:
            words.append([i])
    covered: set[int] = set()
    lengths: list[int] = []
    for k in rng.permutation(len(words)).tolist():
        if len(covered) >= budget:
            break
        n = 1 + int(rng.choice(max_n, p=ngram_probs(max_n)))
        while n > 1 and len(covered) + sum(map(len, words[k:k + n])) > budget:
            n -= 1
        span = {i for word in words[k:k + n] for i in word}
        if len(covered) + len(span) > budget or covered & span:
            continue
        covered |= span
        lengths.append(len(words[k:k + n]))
    return lengths


def test_ngram_span_lengths_match_the_reference_on_real_text(tweets: list[str]) -> None:
    """Spans of 1/2/3 words in the shares that the reference's selection gives on the same
    tweets (one and two tweets a sequence: small budgets, where overflow is frequent): about
    0.70/0.22/0.08 here, 0.61/0.26/0.135 with 20 predictions in 250 tokens."""
    tok = train_tokenizer("unigram", tweets, 2000)
    s = MaskingSpec.from_vocab(tok, whole_word=True, max_ngram=3)
    word_start = ~np.asarray(tok.is_continuation)
    pieces = [tok.encode(t) for t in tweets]
    ours: list[int] = []
    theirs: list[int] = []
    rng = np.random.default_rng(0)
    for per in (1, 1, 1, 2, 2, 2):  # three passes each
        for i in range(0, len(pieces) - per, per):
            ids = np.array([tok.cls_id, *itertools.chain(*pieces[i:i + per]), tok.sep_id])
            budget = num_to_predict(len(ids), s.mask_prob, s.max_predictions)
            theirs += reference_ngram_lengths(ids, s.is_special, word_start, budget, rng)
            units = word_units(~s.is_special[ids], word_starts(ids, s.is_continuation))
            spans = choose_units(ngram_units(units, 3, rng), budget, rng)  # (K, 2)
            ours += np.searchsorted(units[:, 0], spans).dot([-1, 1]).tolist()  # words each
    share = [np.bincount(x, minlength=4)[1:] / len(x) for x in (ours, theirs)]
    assert len(ours) > 25_000 and abs(len(ours) / len(theirs) - 1) < 0.015  # skipping: 1.035
    np.testing.assert_allclose(share[0], share[1], atol=0.01)  # skipping: 0.716 vs 0.699
