"""Attention maps (explicit softmax path) and gradient head importance for every encoder
family."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import plmkit
from conftest import randomize
from plmkit.inspect import (
    attention_maps,
    attention_modules,
    attention_weights,
    head_importance,
    plot_attention,
    recording,
)
from plmkit.models import FAMILIES, build, preset_config
from plmkit.tasks.finetune import tokenizer_dir
from plmkit.tokenizers import Tokenizer
from pretrained_tiny import pretrained_bert_dir

FAMILY_PRESETS = [f"{name}-tiny" for name in ("bert", "roberta", "albert", "electra", "ernie",
                                              "xlnet") if name in FAMILIES]


@pytest.fixture(scope="module")
def pretrained_bert(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    return pretrained_bert_dir(tmp_path_factory, tweets)


def tiny(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize(build(preset_config(preset)), std=0.1).eval()


def padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, vocab, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # the second sequence has 4 real tokens
    return ids, mask


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_attention_rows_sum_to_one_and_skip_padding(preset: str) -> None:
    model = tiny(preset)
    ids, mask = padded_batch(model.config.vocab_size)
    layers = attention_weights(model, ids, mask)
    assert len(layers) == model.config.num_layers
    for w in layers:  # (B, h, S, T)
        assert w.shape == (2, model.config.num_heads, 7, 7)
        assert torch.allclose(w.sum(-1)[0], torch.ones(model.config.num_heads, 7), atol=1e-5)
        assert torch.allclose(w.sum(-1)[1, :, :4], torch.ones(model.config.num_heads, 4),
                              atol=1e-5)
        assert (w[1, :, :4, 4:] == 0).all()  # no real token attends to padding
        assert (w[0] > 0).all()


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_explicit_softmax_path_gives_the_same_outputs(preset: str) -> None:
    model = tiny(preset)
    ids, mask = padded_batch(model.config.vocab_size)
    with torch.no_grad():
        fast = model(ids, mask).last_hidden_state
        with recording(model) as store:
            slow = model(ids, mask).last_hidden_state
    assert store and all(m.recorder is None for m in attention_modules(model))
    assert torch.allclose(fast[0], slow[0], atol=1e-5)
    assert torch.allclose(fast[1, :4], slow[1, :4], atol=1e-5)


def test_importance_is_zero_for_a_silenced_head() -> None:
    """A head whose output columns are zero cannot change the loss: importance 0; the others
    are positive, and each layer's scores are normalized to unit L2 norm."""
    model = tiny("bert-tiny")
    d = model.config.hidden_size // model.config.num_heads
    with torch.no_grad():
        model.encoder.layers[1].attn.out.weight[:, d:2 * d] = 0  # layer 1, head 1
    ids = torch.randint(10, model.config.vocab_size, (4, 9))

    def loss(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        out = m(batch["input_ids"])
        return m.mlm_logits(out.last_hidden_state).logsumexp(-1).mean()

    scores = head_importance(model, loss, [{"input_ids": ids[:2]}, {"input_ids": ids[2:]}])
    assert scores.shape == (model.config.num_layers, model.config.num_heads)
    assert scores[1, 1] == 0
    assert (scores[0] > 0).all() and scores[1, 0] > 0
    assert torch.allclose(scores.norm(dim=1), torch.ones(model.config.num_layers))
    assert all(m.head_gate is None for m in attention_modules(model))


def test_attention_maps_and_pngs_of_a_pretrained_model(pretrained_bert: Path,
                                                       tmp_path: Path) -> None:
    model = plmkit.load(pretrained_bert)
    tok = Tokenizer.load(tokenizer_dir(pretrained_bert))
    maps = attention_maps(model, tok, "i love this song")
    cfg = model.config
    s = len(maps.tokens)
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]"
    assert maps.weights.shape == (cfg.num_layers, cfg.num_heads, s, s)
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)
    written = plot_attention(maps, tmp_path / "maps")
    assert len(written) == cfg.num_layers * cfg.num_heads + 1
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_attention_cli(pretrained_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "att"
    run = subprocess.run([sys.executable, "-m", "plmkit.cli", "attention", "--model",
                          str(pretrained_bert), "--text", "good morning", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / "overview.png").is_file() and (out / "layer1_head1.png").is_file()
    saved = np.load(out / "attention.npz")
    assert saved["weights"].shape[:2] == (2, 2)
    assert str(saved["tokens"][0]) == "[CLS]"
    bad = subprocess.run([sys.executable, "-m", "plmkit.cli", "attention", "--model",
                          str(tmp_path / "nope"), "--text", "x", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1

