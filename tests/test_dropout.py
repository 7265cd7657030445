"""plmkit's CPU dropout (`nn/dropout.py`): the drop rate, the scale, the backward pass, seeds,
and the written-out attention path it is used in."""

import torch
import torch.nn.functional as F

from plmkit.nn.attention import attend, writes_out
from plmkit.nn.dropout import LEVELS, Dropout, dropout, keep_mask


def test_drop_rate_and_scale_match_p() -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    # binomial standard deviation sqrt(p (1 - p) / n) = 3e-4; 5 sigma
    assert abs(dropped - 0.1) < 1.5e-3
    kept = y[y != 0]
    scale = LEVELS / (LEVELS - round(0.1 * LEVELS))
    assert torch.allclose(kept, torch.full_like(kept, scale))
    assert abs(y.mean().item() - 1.0) < 2e-3  # the expectation is kept


def test_the_16_bit_uniforms_are_uniform() -> None:
    torch.manual_seed(1)
    for p in (0.05, 0.5, 0.9):
        mask, _ = keep_mask(torch.empty(400_000), p)
        assert abs(1 - mask.mean().item() - p) < 5 * (p * (1 - p) / 4e5) ** 0.5


def test_backward_applies_the_same_mask() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.3)
    (y * 2).sum().backward()
    factor = y.detach() / x.detach()  # 0 or the scale, per element
    assert torch.allclose(x.grad, 2 * factor)
    scale = LEVELS / (LEVELS - round(0.3 * LEVELS))
    assert torch.allclose(factor[factor != 0], torch.tensor(scale))
    assert 0 < (factor == 0).sum() < factor.numel()


def test_seeded_and_identity_in_eval() -> None:
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.2))
    module = Dropout(0.2).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_attention_without_dropout_matches_sdpa_and_with_it_keeps_rows_unbiased() -> None:
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = torch.rand(2, 1, 1, 5) > 0.3
    mask[..., 0] = True
    record: list[torch.Tensor] = []
    y = attend(q, k, v, mask, recorder=record)  # written out, no dropout
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    assert record[0].shape == (2, 3, 5, 5)
    ones = torch.ones(1, 1, 4096, 8)
    out = attend(ones, ones, ones, dropout_p=0.1)  # uniform weights on 4096 values of 1
    assert abs(out.mean().item() - 1.0) < 0.01


def test_bf16_training_attention_is_written_out_with_sdpa_gradients() -> None:
    torch.manual_seed(5)
    x = torch.randn(1, 2, 16, 8, requires_grad=True)
    assert writes_out(x.bfloat16(), x.bfloat16(), 0.0)  # bf16 training
    assert not writes_out(x, x, 0.0)  # float32 without dropout: SDPA
    assert writes_out(x, x, 0.1)  # dropout: plmkit's cheaper masks
    with torch.no_grad():
        assert not writes_out(x.bfloat16(), x.bfloat16(), 0.0)  # inference keeps SDPA
    grads = []
    for fn in (attend, F.scaled_dot_product_attention):
        q, k, v = (torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(i))
                   .bfloat16().requires_grad_() for i in range(3))
        fn(q, k, v).float().square().sum().backward()
        grads.append([t.grad.float() for t in (q, k, v)])
    for ours, sdpa in zip(*grads, strict=True):
        torch.testing.assert_close(ours, sdpa, atol=0.05, rtol=0.02)
