"""Greedy and beam search: the key/value cache changes nothing but the cost, beam 1 is greedy,
the length limit and the GNMT length penalty."""

from __future__ import annotations

import itertools

import pytest
import torch

from plmkit.data.parallel import TokenBatches
from plmkit.deploy.generate import beam_search, greedy, length_penalty
from plmkit.models.transformer import Transformer, TransformerConfig
from plmkit.objectives.seq2seq import Seq2Seq

VOCAB = 40


@pytest.fixture(scope="module")
def model() -> Transformer:
    """A small model trained briefly to reverse random sequences: it ends its outputs at
    different lengths, and beam search and greedy decoding disagree on some."""
    torch.manual_seed(1)
    config = TransformerConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                               intermediate_size=64, dropout=0.0, attention_dropout=0.0)
    model = Transformer(config)
    gen = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(256):
        seq = torch.randint(3, VOCAB, (int(torch.randint(2, 9, (1,), generator=gen)),),
                            generator=gen).tolist()
        examples.append(([*seq, 2], [*seq[::-1], 2]))
    batches = TokenBatches(examples, 400, pad_id=1, bos_id=0)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    objective = Seq2Seq()
    for _, batch in zip(range(60), itertools.cycle(batches), strict=False):
        loss, _ = objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def sources() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (4, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 7:] = 0
    return ids.masked_fill(mask == 0, 1), mask


def _same(a, b) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_cached_greedy_equals_full_recomputation(model, sources) -> None:
    ids, mask = sources
    _same(greedy(model, ids, mask, max_extra=12), greedy(model, ids, mask, max_extra=12,
                                                         use_cache=False))


def test_cached_beam_search_equals_full_recomputation(model, sources) -> None:
    ids, mask = sources
    cached = beam_search(model, ids, mask, max_extra=12)
    _same(cached, beam_search(model, ids, mask, max_extra=12, use_cache=False))
    assert len({len(h.tokens) for h in cached}) > 1  # a real test: lengths differ
    assert [h.tokens for h in cached] != [h.tokens for h in greedy(model, ids, mask)]


def test_beam_one_is_greedy(model, sources) -> None:
    ids, mask = sources
    _same(beam_search(model, ids, mask, beam=1, max_extra=12), greedy(model, ids, mask,
                                                                       max_extra=12))


def test_output_length_is_at_most_input_plus_extra(model, sources) -> None:
    ids, mask = sources
    for search in (greedy, beam_search):
        for hyp, length in zip(search(model, ids, mask, max_extra=2), mask.sum(1).tolist(),
                               strict=True):
            assert len(hyp.tokens) <= length + 2
            assert hyp.tokens[-1] == model.config.eos_token_id  # forced to end at the limit
            assert {0, 1}.isdisjoint(hyp.tokens)  # never <s> or <pad>


def test_length_penalty_is_gnmt() -> None:
    assert length_penalty(1, 0.6) == pytest.approx(1.0)
    assert length_penalty(10, 0.6) == pytest.approx((15 / 6) ** 0.6)
    assert length_penalty(10, 0.0) == 1.0


def test_cache_grows_one_position_per_step(model, sources) -> None:
    ids, mask = sources
    memory = model.encode(ids, mask)
    cache = model.new_cache()
    step = torch.zeros(ids.shape[0], 1, dtype=torch.long)
    for t in range(3):
        model.decode(step, memory, None, cache)
        assert cache.length == t + 1
        assert cache.layers[0].memory[0].shape[2] == ids.shape[1]  # projected once, kept
    cache.reorder(torch.tensor([1, 1, 0, 0]))
    assert torch.equal(cache.layers[1].keys[0], cache.layers[1].keys[1])
