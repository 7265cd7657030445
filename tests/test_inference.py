"""The fast inference path (`plmkit.inference.optimize`): bf16 weights, compiled with frozen
weights, the same outputs as the eager float32 model up to bf16 rounding."""

import torch

from plmkit import build, preset_config
from plmkit.inference import optimize


def _model_and_inputs():
    torch.manual_seed(0)
    model = build(preset_config("bert-tiny"))
    ids = torch.randint(5, 1000, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # one padded row
    return model, (ids, mask, torch.zeros_like(ids))


def test_bf16_copy_leaves_the_model_alone_and_stays_close() -> None:
    model, inputs = _model_and_inputs()
    fast = optimize(model, bf16=True, compile=False)
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert not fast.training and next(fast.parameters()).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in fast.parameters())
    model.eval()
    with torch.no_grad():
        want = model(*inputs).last_hidden_state
        got = fast(*inputs).last_hidden_state.float()
    torch.testing.assert_close(got, want, atol=0.1, rtol=0.05)


def test_compiled_frozen_model_matches_eager() -> None:
    model, inputs = _model_and_inputs()
    model.eval()
    fast = optimize(model, bf16=False)
    keep = inputs[1].bool()  # padded positions are not defined (eager leaves them at zero)
    with torch.no_grad():
        want = model(*inputs)
        got = fast(*inputs)
    torch.testing.assert_close(got.last_hidden_state[keep], want.last_hidden_state[keep],
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-4, rtol=1e-4)


def test_compiled_bf16_model_is_close() -> None:
    model, inputs = _model_and_inputs()
    model.eval()
    fast = optimize(model, bf16=True)
    keep = inputs[1].bool()
    with torch.no_grad():
        want = model(*inputs).last_hidden_state[keep]
        got = fast(*inputs).last_hidden_state.float()[keep]
    torch.testing.assert_close(got, want, atol=0.1, rtol=0.05)
