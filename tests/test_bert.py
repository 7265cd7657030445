"""BERT: presets, parity with transformers in both directions, the real MiniLM checkpoint."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import transformers

import plmkit
from conftest import randomize
from plmkit.models.bert import PRESETS, Bert, BertConfig

TINY = {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 37, "max_positions": 64, "type_vocab_size": 2}


def hf_config(**kw) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=kw["vocab_size"], hidden_size=kw["hidden_size"],
        num_hidden_layers=kw["num_layers"], num_attention_heads=kw["num_heads"],
        intermediate_size=kw["intermediate_size"],
        max_position_embeddings=kw.get("max_positions", 512),
        type_vocab_size=kw.get("type_vocab_size", 2),
    )


def inputs(vocab: int = 99, batch: int = 3, seq: int = 11) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0  # one padded row
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def compare(ours: Bert, theirs: transformers.BertForPreTraining) -> None:
    ours.eval()
    theirs.eval()
    x = inputs(ours.config.vocab_size)
    with torch.no_grad():
        out = ours(**x)
        ref = theirs(**x, output_hidden_states=True)
        keep = x["attention_mask"].bool()
        torch.testing.assert_close(out.last_hidden_state[keep], ref.hidden_states[-1][keep],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.mlm_logits(out.last_hidden_state)[keep],
                                   ref.prediction_logits[keep], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.sentence_logits(out.pooler_output),
                                   ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name: str) -> None:
    with torch.device("meta"):
        ours = plmkit.build(plmkit.preset_config(name))
        theirs = transformers.BertModel(hf_config(**{**BertConfig().__dict__, **PRESETS[name]}))
    backbone = sum(p.numel() for m in (ours.encoder, ours.pooler) for p in m.parameters())
    assert backbone == sum(p.numel() for p in theirs.parameters())
    if name == "bert-base":
        assert 109e6 < backbone < 111e6  # "110M" (BERT paper, section 3)


@pytest.mark.parametrize("safe", [True, False])
def test_load_transformers_pretraining_checkpoint(tmp_path: Path, safe: bool) -> None:
    theirs = randomize(transformers.BertForPreTraining(hf_config(**TINY)))
    theirs.save_pretrained(tmp_path, safe_serialization=safe)
    compare(plmkit.load(tmp_path), theirs)


def test_load_base_model_without_heads(tmp_path: Path) -> None:
    theirs = randomize(transformers.BertModel(hf_config(**TINY)))
    theirs.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="head parameters"):
        ours = plmkit.load(tmp_path).eval()
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(**x).pooler_output, theirs.eval()(**x).pooler_output,
                                   atol=1e-5, rtol=1e-5)


def test_save_hf_loads_in_transformers(tmp_path: Path) -> None:
    ours = randomize(Bert(BertConfig(**TINY)))
    plmkit.save_hf(ours, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing / unexpected keys
        theirs = transformers.BertForPreTraining.from_pretrained(tmp_path)
    compare(ours, theirs)
    base = transformers.AutoModel.from_pretrained(tmp_path).eval()
    x = inputs()
    keep = x["attention_mask"].bool()  # plmkit leaves padded positions at zero (nn/masks.py)
    with torch.no_grad():
        torch.testing.assert_close(ours(**x).last_hidden_state[keep],
                                   base(**x).last_hidden_state[keep], atol=1e-5, rtol=1e-5)


def test_native_round_trip(tmp_path: Path) -> None:
    ours = randomize(Bert(BertConfig(**TINY))).eval()
    plmkit.save_model(ours, tmp_path)
    again = plmkit.load(tmp_path).eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(ours(**x).last_hidden_state, again(**x).last_hidden_state)
    assert again.mlm.bias.data_ptr() != 0 and torch.equal(ours.mlm.bias, again.mlm.bias)


def test_mlm_on_positions_equals_full_then_gather() -> None:
    model = Bert(BertConfig(**TINY)).eval()
    x = inputs()
    positions = torch.tensor([[1, 4, 0], [2, 3, 6], [0, 0, 0]])
    with torch.no_grad():
        hidden = model(**x).last_hidden_state
        full = model.mlm_logits(hidden)
        some = model.mlm_logits(hidden, positions)
    torch.testing.assert_close(some, full.gather(1, positions[..., None].expand(-1, -1, 99)))


def test_pre_ln_trains_and_differs() -> None:
    post = Bert(BertConfig(**TINY))
    pre = Bert(BertConfig(**TINY, norm="pre"))
    pre.load_state_dict(post.state_dict(), strict=False)
    x = inputs()
    assert pre.encoder.final_norm is not None
    assert not torch.allclose(pre.eval()(**x).last_hidden_state,
                              post.eval()(**x).last_hidden_state)


def test_real_minilm_matches_transformers(minilm_dir: Path) -> None:
    from plmkit.tokenizers import Tokenizer

    sentences = ["The quick brown fox jumps over the lazy dog.",
                 "Self-driving cars will change how cities are built, or will they?",
                 "Pretraining on a domain corpus helps."]
    tok = Tokenizer.load(minilm_dir)
    batch = tok(sentences, max_length=128)
    ours = plmkit.load(minilm_dir).eval()
    theirs = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        a = ours(**batch).last_hidden_state
        b = theirs(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-5)
    reference = transformers.AutoTokenizer.from_pretrained(minilm_dir)(
        sentences, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], reference["input_ids"])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(plmkit.UserError, match="not divisible"):
        BertConfig(hidden_size=100, num_heads=12)
    with pytest.raises(plmkit.UserError, match="did you mean bert-base"):
        plmkit.preset_config("bert-bsae")
    with pytest.raises(plmkit.UserError, match="not a model directory"):
        plmkit.load(tmp_path)
    with pytest.raises(plmkit.UserError, match="exceeds the model's 64 positions"):
        Bert(BertConfig(**TINY))(torch.zeros(1, 65, dtype=torch.long))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(plmkit.UserError, match="not supported"):
        plmkit.load(tmp_path)
