"""Padding removal (`nn/masks.Unpadded`): the encoder computes real tokens only, with the same
outputs and gradients at real positions as the padded computation, zeros at padded ones."""

import pytest
import torch

from plmkit import build, preset_config
from plmkit.nn import masks
from plmkit.nn.masks import Unpadded, encoder_mask


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(5, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 5:], mask[2, 9:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_encoder_mask_kinds() -> None:
    x = _batch()["attention_mask"]
    assert encoder_mask(torch.ones(2, 4)) is None and encoder_mask(None) is None
    unpadded = encoder_mask(x)
    assert isinstance(unpadded, Unpadded)
    assert unpadded.index.tolist() == x.flatten().nonzero().squeeze(1).tolist()
    h = torch.randn(3, 12, 4)
    back = unpadded.pad(unpadded.unpad(h))
    keep = x.bool()
    assert torch.equal(back[keep], h[keep]) and not back[~keep].any()


@pytest.mark.parametrize("preset", ["bert-tiny", "albert-tiny"])
def test_unpadded_equals_padded_at_real_positions(preset: str, monkeypatch) -> None:
    model = build(preset_config(preset, dropout=0.0, attention_dropout=0.0))
    batch = _batch()
    keep = batch["attention_mask"].bool()

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        hidden = model(**batch).last_hidden_state
        hidden[keep].square().sum().backward()
        return hidden.detach(), [p.grad.clone() for p in model.parameters()
                                 if p.grad is not None]

    fast, fast_grads = run()
    assert not fast[~keep].any()  # padded positions are not computed
    # the bool mask: every position computed
    monkeypatch.setattr(masks, "encoder_mask", masks.padding_mask)
    slow, slow_grads = run()
    torch.testing.assert_close(fast[keep], slow[keep], atol=1e-5, rtol=1e-5)
    assert len(fast_grads) == len(slow_grads)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
