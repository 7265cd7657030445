"""XLNet: presets, parity with transformers' XLNetLMHeadModel both ways, both streams, memory."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import transformers

import plmkit
from conftest import randomize
from plmkit.models.xlnet import PRESETS, XLNet, XLNetConfig

TINY = {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 37, "mem_len": 6, "reuse_len": None}


def hf_config(**kw) -> transformers.XLNetConfig:
    return transformers.XLNetConfig(
        vocab_size=kw["vocab_size"], d_model=kw["hidden_size"], n_layer=kw["num_layers"],
        n_head=kw["num_heads"], d_inner=kw["intermediate_size"], mem_len=kw.get("mem_len"),
        reuse_len=kw.get("reuse_len"), attn_type=kw.get("attn_type", "bi"),
    )


def inputs(batch: int = 3, seq: int = 9) -> dict[str, torch.Tensor]:
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, 5:] = 1
    types[:, -1] = 2
    return {"input_ids": torch.randint(0, 99, (batch, seq)), "token_type_ids": types}


def two_stream(batch: int = 3, seq: int = 9, targets: int = 4) -> dict[str, torch.Tensor]:
    mapping = torch.zeros(batch, targets, seq)
    for b in range(batch):
        mapping[b, torch.arange(targets), torch.randperm(seq)[:targets]] = 1.0
    return {"perm_mask": (torch.rand(batch, seq, seq) > 0.5).float(), "target_mapping": mapping}


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def compare(ours: XLNet, theirs: transformers.XLNetLMHeadModel) -> None:
    """Logits of both streams, with padding, then a second segment over the first's memory."""
    ours.eval()
    theirs.eval()
    if ours.config.attn_type == "uni":
        return compare_causal(ours, theirs)
    x, perm = inputs(), two_stream()
    mask = torch.ones(3, 9)
    mask[1, 6:] = 0
    with torch.no_grad():
        out = ours(**x, attention_mask=mask)
        ref = theirs(**x, attention_mask=mask)
        keep = mask.bool()
        close(ours.lm_logits(out.last_hidden_state)[keep], ref.logits[keep])
        out = ours(**x, **perm)
        close(ours.lm_logits(out.query_hidden_state), theirs(**x, **perm).logits)
        first = ours(**x, use_mems=True)
        ref_first = theirs(**x, use_mems=True)
        y = inputs()
        out = ours(**y, **perm, mems=first.mems, use_mems=True)
        ref = theirs(**y, **perm, mems=ref_first.mems, use_mems=True)
        close(ours.lm_logits(out.query_hidden_state), ref.logits)
        for m, r in zip(out.mems, ref.mems, strict=True):
            close(m, r.transpose(0, 1))  # transformers' memory is time-major


def compare_causal(ours: XLNet, theirs: transformers.XLNetLMHeadModel) -> None:
    """attn_type "uni" (transformers cannot add padding or perm masks to its causal mask)."""
    x, y = inputs(), inputs()
    with torch.no_grad():
        first, ref_first = ours(**x, use_mems=True), theirs(**x, use_mems=True)
        close(ours.lm_logits(first.last_hidden_state), ref_first.logits)
        out = ours(**y, mems=first.mems)
        close(ours.lm_logits(out.last_hidden_state), theirs(**y, mems=ref_first.mems).logits)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name: str) -> None:
    with torch.device("meta"):
        ours = plmkit.build(plmkit.preset_config(name))
        kw = {**XLNetConfig().__dict__, **PRESETS[name]}
        theirs = transformers.XLNetModel(hf_config(**kw))
    backbone = sum(p.numel() for n, p in ours.named_parameters() if n != "lm_bias")
    assert backbone == sum(p.numel() for p in theirs.parameters())
    if name == "xlnet-base":
        assert 116e6 < backbone < 118e6  # "117M"


def test_load_transformers_checkpoint(tmp_path: Path) -> None:
    theirs = randomize(transformers.XLNetLMHeadModel(hf_config(**TINY)))
    theirs.save_pretrained(tmp_path)
    compare(plmkit.load(tmp_path), theirs)


@pytest.mark.parametrize("attn_type", ["bi", "uni"])
def test_save_hf_loads_in_transformers(tmp_path: Path, attn_type: str) -> None:
    ours = randomize(XLNet(XLNetConfig(**TINY, attn_type=attn_type)))
    plmkit.save_hf(ours, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing / unexpected keys
        theirs = transformers.XLNetLMHeadModel.from_pretrained(tmp_path)
    assert theirs.config.attn_type == attn_type
    compare(ours, theirs)
    base = transformers.AutoModel.from_pretrained(tmp_path).eval()
    x = inputs()
    with torch.no_grad():
        close(ours.eval()(**x).last_hidden_state, base(**x).last_hidden_state)


def test_public_interface_and_native_round_trip(tmp_path: Path) -> None:
    model = plmkit.build(plmkit.preset_config("xlnet-tiny", vocab_size=99)).eval()
    x = inputs()
    out = model(x["input_ids"], torch.ones(3, 9), x["token_type_ids"])
    assert out.last_hidden_state.shape == (3, 9, 128)
    plmkit.save_model(model, tmp_path)
    with torch.no_grad():
        assert torch.equal(plmkit.load(tmp_path).eval()(**x).last_hidden_state,
                           model(**x).last_hidden_state)


def test_errors() -> None:
    with pytest.raises(plmkit.UserError, match="not divisible"):
        XLNetConfig(hidden_size=100, num_heads=12)
    with pytest.raises(plmkit.UserError, match="attn_type"):
        XLNetConfig(attn_type="both")  # type: ignore[arg-type]
