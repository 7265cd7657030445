"""Attention maps (explicit softmax path) and gradient head importance for every encoder
family; masked-token prediction of a model pretrained by plmkit on real tweets; the
fill-mask, embed and generate commands."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import plmkit
from conftest import randomize
from plmkit.cli import main
from plmkit.deploy.fill_mask import fill_mask
from plmkit.deploy.inspect import (
    attention_maps,
    attention_modules,
    attention_weights,
    head_importance,
    plot_attention,
    recording,
)
from plmkit.interop.native import tokenizer_dir
from plmkit.models import FAMILIES, build, preset_config
from plmkit.tokenizers import Tokenizer
from pretrained_tiny import TRAIN_TWEETS, pretrained_bert_dir

FAMILY_PRESETS = [f"{name}-tiny" for name in ("bert", "roberta", "albert", "electra", "ernie",
                                              "xlnet") if name in FAMILIES]


@pytest.fixture(scope="module")
def pretrained_bert(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    return pretrained_bert_dir(tmp_path_factory, tweets)



pytestmark = pytest.mark.usefixtures("one_thread")

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


def test_attention_cli(pretrained_bert: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "att"
    assert main(["attention", "--model", str(pretrained_bert), "--text", "good morning",
                 "--out", str(out)]) == 0
    assert "2 layers x 2 heads" in capsys.readouterr().out
    assert (out / "overview.png").is_file() and (out / "layer1_head1.png").is_file()
    saved = np.load(out / "attention.npz")
    assert saved["weights"].shape[:2] == (2, 2)
    assert str(saved["tokens"][0]) == "[CLS]"
    assert main(["attention", "--model", str(tmp_path / "nope"), "--text", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["attention", "--model", str(pretrained_bert), "--text", "good night",
                 "--out", str(out)]) == 0  # its own output is redrawn
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "overview.png").write_text("my own")
    assert main(["attention", "--model", str(pretrained_bert), "--text", "x", "--out",
                 str(mine)]) == 2
    assert "not empty, holds files of its own (overview.png)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["overview.png"]
    assert (mine / "overview.png").read_text() == "my own"


def test_fill_mask_cli_text_file_and_stdin(pretrained_bert: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = plmkit.load(pretrained_bert)
    tok = Tokenizer.load(tokenizer_dir(pretrained_bert))
    expected = fill_mask(model, tok, ["thank you [MASK] much", "[MASK] morning"], top_k=3)
    assert len(expected[0]) == 1 and len(expected[0][0]) == 3
    assert main(["fill-mask", "--model", str(pretrained_bert), "--text",
                 "thank you [MASK] much", "--top-k", "3"]) == 0
    first = expected[0][0][0]
    assert capsys.readouterr().out.startswith(f"mask 1: {first['token']} ({first['score']:.3f})")
    lines = tmp_path / "masked.txt"
    lines.write_text("thank you [MASK] much\n\n[MASK] morning\n")
    assert main(["fill-mask", "--model", str(pretrained_bert), "--input", str(lines),
                 "--top-k", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["predictions"] for r in records] == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("no mask here\n[MASK] morning\n"))
    assert main(["fill-mask", "--model", str(pretrained_bert), "--top-k", "3"]) == 0
    streamed = capsys.readouterr()
    assert "no [MASK] in" in streamed.err
    assert streamed.out.startswith(f"mask 1: {expected[1][0][0]['token']} (")


def test_embed_cli_writes_npy_and_jsonl(pretrained_bert: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("i love this song\nworst day ever\n")
    for out in ("v.npy", "v.jsonl"):
        assert main(["embed", "--model", str(pretrained_bert), "--input", str(texts),
                     "--output", str(tmp_path / out), "--pooling", "mean"]) == 0
    vectors = np.load(tmp_path / "v.npy")
    records = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert vectors.shape == (2, 128)
    assert [r["text"] for r in records] == ["i love this song", "worst day ever"]
    np.testing.assert_allclose([r["embedding"] for r in records], vectors, rtol=1e-6)


def test_generate_cli_continues_a_learned_pattern(pretrained_bert: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A Transformer-XL trained on a repeated phrase continues it greedily."""
    tok = Tokenizer.load(tokenizer_dir(pretrained_bert))
    phrase = tok.encode("thank you so much for the great flight")
    torch.manual_seed(0)
    model = build(preset_config("transfo-xl-tiny", vocab_size=tok.vocab_size, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    ids = torch.tensor([phrase * 4])  # (1, 4 * len(phrase))
    for _ in range(60):
        logits = model.lm_logits(model(ids[:, :-1]).last_hidden_state)  # (1, S, V)
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    plmkit.save_model(model, tmp_path / "txl")
    tok.save(tmp_path / "txl" / "tokenizer")
    assert main(["generate", "--model", str(tmp_path / "txl"), "--text", "thank you so much",
                 "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("thank you so much for the great flight thank you")
    assert main(["generate", "--model", str(pretrained_bert), "--text", "hi"]) == 2
    assert "does not generate" in capsys.readouterr().err


def test_generate_cli_runs_a_seq2seq_model_by_beam_search(pretrained_bert: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from plmkit.jobs.seq2seq import translate_with

    tok = Tokenizer.load(tokenizer_dir(pretrained_bert))
    torch.manual_seed(0)
    model = build(preset_config("transformer-tiny", vocab_size=tok.vocab_size,
                                pad_token_id=tok.pad_id, bos_token_id=tok.cls_id,
                                eos_token_id=tok.sep_id)).eval()
    plmkit.save_model(model, tmp_path / "s2s")
    tok.save(tmp_path / "s2s" / "tokenizer")
    lines = tmp_path / "in.txt"
    lines.write_text("good morning\nthank you\n")
    assert main(["generate", "--model", str(tmp_path / "s2s"), "--input", str(lines),
                 "--beam", "2"]) == 0
    expected = translate_with(model, tok, ["good morning", "thank you"], beam=2)
    assert capsys.readouterr().out.splitlines() == expected


def test_pretrained_model_beats_unigram_baseline_on_heldout_masked_tokens(
        pretrained_bert: Path, tweets: list[str]) -> None:
    """Mask each token of held-out tweets in turn, one mask per input: the top prediction of the
    briefly pretrained model is right far more often than always guessing the most frequent
    token of the training tweets."""
    model = plmkit.load(pretrained_bert).eval()
    tok = Tokenizer.load(tokenizer_dir(pretrained_bert))
    frequent = Counter(i for t in tweets[:TRAIN_TWEETS] for i in tok.encode(t)).most_common(1)
    rows, gold = [], []
    for tweet in tweets[TRAIN_TWEETS:TRAIN_TWEETS + 100]:
        ids = tok.encode(tweet)[:30]
        for n in range(len(ids)):
            rows.append([tok.cls_id, *ids[:n], tok.mask_id, *ids[n + 1:], tok.sep_id])
            gold.append(ids[n])
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in rows])  # (N, S)
    with torch.no_grad():
        hidden = model(input_ids, (input_ids != tok.pad_id).long()).last_hidden_state
        positions = (input_ids == tok.mask_id).long().argmax(1)[:, None]  # (N, 1)
        predicted = model.mlm_logits(hidden, positions)[:, 0].argmax(-1)  # (N,)
    gold_ids = torch.tensor(gold)
    accuracy = (predicted == gold_ids).float().mean().item()
    baseline = (gold_ids == frequent[0][0]).float().mean().item()
    assert len(gold) > 1500
    assert accuracy > 1.5 * baseline, (accuracy, baseline)
