"""Induced-set attention (Set Transformer ISAB, Lee et al. 2019) in the BERT-style encoder and
PMA pooling for classification: padding-aware, shapes, gradients, linear FLOPs, training on
real text, the fine-tune round trip, and bad options refused in one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.bench.suite import step_flops
from plmkit.cli import main
from plmkit.jobs.compare import parse_entry
from plmkit.jobs.pretrain import PretrainArgs, pretrain
from plmkit.models import build, preset_config
from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.induced import InducedAttention, PoolingByAttention
from plmkit.nn.masks import encoder_mask, padding_mask
from plmkit.tasks.base import pool
from plmkit.tasks.classify import SequenceClassifier
from plmkit.tokenizers import train_tokenizer
from plmkit.training.modeldir import save_model

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ("bert", "roberta", "albert", "electra", "ernie")


def induced(preset: str = "bert-tiny", **more) -> torch.nn.Module:
    config = preset_config(preset, attention="induced", num_inducing=4, vocab_size=120, **more)
    return build(config).eval()


def ids(batch: int, seq: int) -> torch.Tensor:
    return torch.randint(5, 120, (batch, seq))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_bert_layout_family_builds_induced_and_round_trips(family: str,
                                                                 tmp_path: Path) -> None:
    model = induced(f"{family}-tiny")
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert attentions and all(m.cross for m in attentions)  # no full self-attention left
    assert any(isinstance(m, InducedAttention) for m in model.modules())
    x = ids(2, 9)
    save_model(model, tmp_path)
    again = plmkit.load(tmp_path).eval()
    assert (again.config.attention, again.config.num_inducing) == ("induced", 4)
    torch.testing.assert_close(again(x).last_hidden_state, model(x).last_hidden_state)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_padding_changes_no_real_output(norm: str) -> None:
    model = induced(norm=norm)
    x = ids(2, 10)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 6:] = 0
    out = model(x, mask).last_hidden_state  # (2, 10, H)
    other = x.clone()
    other[0, 6:] = 7  # other ids at the padded positions
    torch.testing.assert_close(model(other, mask).last_hidden_state[0, :6], out[0, :6])
    alone = model(x[:1, :6]).last_hidden_state  # no padding at all
    torch.testing.assert_close(alone[0], out[0, :6], atol=1e-5, rtol=1e-5)
    more = torch.cat([x, torch.zeros(2, 5, dtype=torch.long)], 1)  # 5 more padded positions
    more_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(model(more, more_mask).last_hidden_state[1, :10], out[1],
                               atol=1e-5, rtol=1e-5)


def test_unpadded_and_masked_layouts_agree() -> None:
    attn = InducedAttention(preset_config("bert-tiny", num_inducing=3)).eval()
    x = torch.randn(2, 7, 128)  # (B, S, H)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    unpadded = encoder_mask(mask)
    real = attn(unpadded.unpad(x), unpadded)  # (N, H)
    masked = attn(x, padding_mask(mask))  # (B, S, H)
    assert real.shape == (11, 128) and masked.shape == (2, 7, 128)
    torch.testing.assert_close(unpadded.pad(real)[mask.bool()], masked[mask.bool()])
    with pytest.raises(ValueError, match="no memory"):
        attn(x, None, x)


def test_pma_shapes_and_padding() -> None:
    config = preset_config("bert-tiny")
    pma = PoolingByAttention(config, seeds=3).eval()
    z = torch.randn(2, 6, 128)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out = pma(z, padding_mask(mask))
    assert out.shape == (2, 3, 128)
    changed = z.clone()
    changed[0, 4:] = 5.0  # the padded states
    torch.testing.assert_close(pma(changed, padding_mask(mask))[0], out[0])
    torch.testing.assert_close(pma(z[:1, :4])[0], out[0], atol=1e-5, rtol=1e-5)
    sentence = pool(type("Out", (), {"last_hidden_state": z})(), mask, "pma", pma)
    torch.testing.assert_close(sentence, out.mean(1))  # k seeds -> their mean (B, H)
    with pytest.raises(ValueError, match="seed"):
        PoolingByAttention(config, seeds=0)


def test_gradient_reaches_the_inducing_points_and_every_parameter() -> None:
    model = induced().train()
    x, mask = ids(3, 8), torch.ones(3, 8, dtype=torch.long)
    mask[2, 5:] = 0
    model(x, mask).last_hidden_state.sum().backward()
    seeds = model.encoder.layers[0].attn.induce.seeds
    assert seeds.shape == (4, 128) and seeds.grad is not None and seeds.grad.abs().sum() > 0
    silent = [n for n, p in model.encoder.named_parameters() if p.grad is None]
    assert not silent


def forward_flops(model: torch.nn.Module, seq: int) -> float:
    """Model FLOPs of a forward pass, CPU flash attention counted (`bench.suite.step_flops`)."""
    x = ids(1, seq)
    return step_flops(lambda: model(x))


def test_flops_grow_linearly_with_length_induced_and_quadratically_full() -> None:
    full = build(preset_config("bert-tiny", vocab_size=120)).eval()
    isab = induced()
    ratio_full = forward_flops(full, 512) / forward_flops(full, 128)
    ratio_induced = forward_flops(isab, 512) / forward_flops(isab, 128)
    assert ratio_induced <= 4.0 < 4.5 < ratio_full  # 4x the tokens; the m inducing rows fixed
    assert forward_flops(isab, 512) < forward_flops(full, 512)


def test_model_option_syntax_reaches_the_config() -> None:
    entry = parse_entry("bert-mini::attention=induced:num_inducing=32", option="--model")
    assert entry.overrides == {"attention": "induced", "num_inducing": 32}
    assert preset_config(entry.preset, **entry.overrides).num_inducing == 32


def test_tiny_induced_bert_learns_on_real_text(tweets: list[str], tmp_path: Path) -> None:
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 1200, 8)) + "\n")
    args = PretrainArgs(model="bert-tiny:mlm:attention=induced:num_inducing=8", corpus=[corpus],
                        out=tmp_path / "run", vocab_size=1000, batch_size=16, seq_len=32,
                        lr=2e-3, steps=200, warmup=20, log_every=10, save_every=200,
                        eval_every=1000, progress=False)
    records = pretrain(args)
    # from ~ln(1000) (uniform over the vocabulary) to the unigram level and below in 200 steps
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"] - 0.5, records
    model = plmkit.load(tmp_path / "run")
    assert model.config.attention == "induced" and model.config.num_inducing == 8


def test_pma_finetune_round_trip_on_an_induced_model(tweets: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from plmkit.data.builders import read_tweets

    tok = train_tokenizer("wordpiece", iter(tweets), 1000)
    backbone = tmp_path / "tiny"
    save_model(build(preset_config("bert-tiny", vocab_size=tok.vocab_size, max_positions=64,
                                   attention="induced", num_inducing=4)), backbone)
    tok.save(backbone / "tokenizer")
    labelled = random.Random(0).sample(read_tweets(), 360)  # the file is sorted by label
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    for path, rows in ((train, labelled[:300]), (dev, labelled[300:])):
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    out = tmp_path / "out"
    assert main(["finetune", "--task", "classify", "--pooling", "pma", "--model", str(backbone),
                 "--train", str(train), "--eval", str(dev), "--out", str(out), "--epochs", "1",
                 "--max-seq-len", "32", "--batch-size", "32", "--no-progress"]) == 0
    model = plmkit.load(out)
    assert isinstance(model, SequenceClassifier) and model.task["pooling"] == "pma"
    assert isinstance(model.pma, PoolingByAttention)
    assert model.backbone.config.attention == "induced"
    saved = json.loads((out / "eval_results.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--eval", str(dev)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy"] == pytest.approx(saved["accuracy"])
    assert main(["export", "--format", "hf", "--model", str(out), "--out",
                 str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot export" in err


def test_induced_backbone_is_refused_by_hf_export(tmp_path: Path) -> None:
    with pytest.raises(plmkit.UserError, match="transformers has no induced attention"):
        plmkit.save_hf(induced(), tmp_path)


@pytest.mark.parametrize(("value", "message"), [
    ("attention=foo", "attention must be one of 'full', 'induced', not 'foo'"),
    ("num_inducing=0", "num_inducing must be positive, got 0"),
])
def test_bad_attention_options_are_one_line_exit_2(value: str, message: str, tweets: list[str],
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(tweets[:200]) + "\n")
    code = main(["pretrain", "--model", f"bert-tiny::{value}", "--corpus", str(corpus),
                 "--out", str(tmp_path / "run"), "--vocab-size", "300", "--steps", "2",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert f"--model bert-tiny::{value}" in err  # named, and refused before any work
    assert not (tmp_path / "run").exists() and "tokenizer" not in err


def test_unknown_pooling_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--task", "classify", "--pooling", "pmx", "--model", "m", "--train",
              "t.csv", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "pmx" in capsys.readouterr().err
