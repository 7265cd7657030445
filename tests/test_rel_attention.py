"""Relative attention (Transformer-XL): the relative shift, masks, memory without gradient."""

from __future__ import annotations

import torch

from plmkit.models.xlnet import XLNet, XLNetConfig
from plmkit.nn.positions import sinusoids
from plmkit.nn.rel_attention import (
    attention_masks,
    relative_encoding,
    relative_index,
    update_memory,
)

TINY = XLNetConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                   intermediate_size=24, mem_len=5, reuse_len=None)


def test_relative_index_picks_the_distance_of_each_pair() -> None:
    for attn_type in ("bi", "uni"):
        qlen, mlen, d = 4, 3, 8
        klen = qlen + mlen
        table = relative_encoding(qlen, klen, d, attn_type)  # (R, d)
        index = relative_index(torch.arange(qlen)[None], qlen, klen, len(table))[0]
        for i in range(qlen):
            for j in range(klen):
                distance = mlen + i - j
                if attn_type == "uni" and distance < 0:
                    continue  # the future: masked
                expected = sinusoids(torch.tensor([float(distance)]), d)[0]
                torch.testing.assert_close(table[index[i, j]], expected)


def test_clamp_len_caps_distances() -> None:
    table = relative_encoding(4, 10, 8, clamp_len=2)
    torch.testing.assert_close(table[0], sinusoids(torch.tensor([2.0]), 8)[0])


def test_masks_memory_visible_content_sees_itself_query_not() -> None:
    perm = torch.ones(1, 3, 3, dtype=torch.bool)  # nobody may see anybody in the segment
    content, query = attention_masks(1, 3, 2, None, perm, "bi", torch.device("cpu"))
    assert content[0, :, :2].all() and query[0, :, :2].all()  # the memory
    assert torch.equal(content[0, :, 2:], torch.eye(3, dtype=torch.bool))
    assert not query[0, :, 2:].any()
    causal, _ = attention_masks(1, 3, 0, None, None, "uni", torch.device("cpu"))
    assert torch.equal(causal[0], torch.ones(3, 3, dtype=torch.bool).tril())
    assert attention_masks(2, 3, 0, None, None, "bi", torch.device("cpu")) == (None, None)


def test_update_memory_keeps_reuse_part_and_last_mem_len() -> None:
    prev = torch.arange(4.0).view(1, 4, 1)
    current = torch.arange(10.0, 16.0).view(1, 6, 1).requires_grad_()
    new = update_memory(prev, current, mem_len=5, reuse_len=3)
    assert new.flatten().tolist() == [2.0, 3.0, 10.0, 11.0, 12.0]
    assert not new.requires_grad


def test_memory_has_no_gradient_and_changes_the_output() -> None:
    model = XLNet(TINY)
    x = torch.randint(0, 50, (2, 6))
    first = model(x, use_mems=True)
    assert len(first.mems) == 2 and all(not m.requires_grad for m in first.mems)
    assert first.mems[0].shape == (2, 5, 16)  # mem_len 5 of 6
    model.zero_grad()
    second = model(x, mems=first.mems).last_hidden_state
    second.sum().backward()
    assert all(m.grad is None for m in first.mems)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x, mems=first.mems).last_hidden_state,
                                  model(x).last_hidden_state)
