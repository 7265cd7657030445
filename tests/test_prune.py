"""Physical head pruning: exact parameter savings, unchanged outputs when the pruned heads
contribute nothing, pruned checkpoints that reload in plmkit and export to transformers."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plmkit
from conftest import randomize
from plmkit.cli import main
from plmkit.deploy.prune import (
    count_parameters,
    least_important,
    parse_heads,
    prunable,
    prune_heads,
)
from plmkit.errors import UserError
from plmkit.models import build, preset_config
from plmkit.tasks import build_task_model
from pretrained_tiny import pretrained_bert_dir

HEADS = {0: [1, 3], 1: [0]}  # 3 of the 2 x 4 heads



pytestmark = pytest.mark.usefixtures("one_thread")

def model_with_4_heads() -> torch.nn.Module:
    torch.manual_seed(0)
    config = preset_config("bert-tiny", num_heads=4, dropout=0.0, attention_dropout=0.0)
    return randomize(build(config), std=0.1).eval()


def silence(model: torch.nn.Module, heads: dict[int, list[int]]) -> None:
    """Zero the output-projection columns of `heads`: they then add nothing to the output."""
    d = model.config.hidden_size // model.config.num_heads
    with torch.no_grad():
        for layer, which in heads.items():
            for h in which:
                model.encoder.layers[layer].attn.out.weight[:, h * d:(h + 1) * d] = 0


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 1000, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask, torch.zeros_like(ids)


def test_parameter_count_drops_by_exactly_the_heads_share() -> None:
    model = model_with_4_heads()
    h = model.config.hidden_size
    d = h // model.config.num_heads
    before = count_parameters(model)
    assert prune_heads(model, HEADS) == 3
    # each head: its d rows of W_q, W_k, W_v with biases, and its d columns of W_o
    assert before - count_parameters(model) == 3 * (3 * (h * d + d) + h * d)
    assert model.encoder.layers[0].attn.qkv.weight.shape == (3 * 2 * d, h)
    assert model.encoder.layers[1].attn.out.weight.shape == (h, 3 * d)


def test_outputs_unchanged_when_pruned_heads_output_zero(tmp_path: Path) -> None:
    model = model_with_4_heads()
    silence(model, HEADS)
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = model(ids, mask, types).last_hidden_state
        prune_heads(model, HEADS)
        pruned = model(ids, mask, types).last_hidden_state
    assert torch.allclose(pruned, expected, atol=1e-5)
    assert not torch.allclose(pruned, build(model.config)(ids, mask, types).last_hidden_state)
    plmkit.save_model(model, tmp_path / "pruned")
    reloaded = plmkit.load(tmp_path / "pruned").eval()
    assert count_parameters(reloaded) == count_parameters(model)
    assert reloaded.encoder.layers[0].attn.kept() == [0, 2]
    with torch.no_grad():
        assert torch.allclose(reloaded(ids, mask, types).last_hidden_state, expected, atol=1e-5)


def test_pruning_an_already_pruned_layer_uses_original_indices() -> None:
    model = model_with_4_heads()
    prune_heads(model, {0: [1]})
    prune_heads(model, {0: [3]})
    assert model.encoder.layers[0].attn.kept() == [0, 2]
    with pytest.raises(UserError, match="heads \\[1\\] are not in this layer"):
        prune_heads(model, {0: [1]})
    with pytest.raises(UserError, match="every head"):
        prune_heads(model, {0: [0, 2]})
    with pytest.raises(UserError, match="layer 5 does not exist"):
        prune_heads(model, {5: [0]})


def test_pruned_bert_exports_to_transformers_with_identical_outputs(tmp_path: Path) -> None:
    from transformers import BertForPreTraining, BertModel

    model = model_with_4_heads()
    prune_heads(model, HEADS)
    plmkit.save_hf(model, tmp_path / "hf")
    ids, mask, types = inputs()
    theirs = BertModel.from_pretrained(tmp_path / "hf").eval()
    keep = mask.bool()  # plmkit leaves padded positions at zero
    with torch.no_grad():
        ours = model(ids, mask, types)
        out = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
        assert torch.allclose(out.last_hidden_state[keep], ours.last_hidden_state[keep],
                              atol=1e-5)
        assert torch.allclose(out.pooler_output, ours.pooler_output, atol=1e-5)
        full = BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
        logits = full(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits
        assert torch.allclose(logits[keep], model.mlm_logits(ours.last_hidden_state)[keep],
                              atol=1e-4)
    back = plmkit.load(tmp_path / "hf").eval()  # loads at full size, the pruned heads zero
    with torch.no_grad():
        assert torch.allclose(back(ids, mask, types).last_hidden_state,
                              ours.last_hidden_state, atol=1e-5)


def test_least_important_keeps_a_head_in_every_layer() -> None:
    scores = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.05, 0.06, 0.07, 0.08],
                           [0.5, float("nan"), 0.6, 0.7]])
    assert least_important(scores, 0.5) == {1: [0, 1, 2], 0: [0, 1], 2: [0]}
    assert least_important(scores, 0.1) == {1: [0]}
    with pytest.raises(UserError):
        least_important(scores, 1.0)


def test_parse_heads() -> None:
    assert parse_heads("0:1, 0:3,2:0") == {0: [1, 3], 2: [0]}
    for bad in ("0-1", "a:1", "", "1:"):
        with pytest.raises(UserError):
            parse_heads(bad)


def test_prune_cli_by_heads_and_errors(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from plmkit.tokenizers import train_tokenizer

    model = model_with_4_heads()
    plmkit.save_model(model, tmp_path / "m")
    tok = train_tokenizer("wordpiece", ["a tiny corpus for a tiny tokenizer"] * 5, 100)
    tok.save(tmp_path / "m" / "tokenizer")
    run = subprocess.run([sys.executable, "-m", "plmkit.cli", "prune", "--model",
                          str(tmp_path / "m"), "--heads", "0:1,1:0,1:2", "--out",
                          str(tmp_path / "p")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "removed 3 heads" in run.stdout
    pruned = plmkit.load(tmp_path / "p")
    assert pruned.encoder.layers[1].attn.kept() == [1, 3]
    assert (tmp_path / "p" / "tokenizer").is_dir()
    for args, needle in ((["--heads", "7:0"], "layer 7"),
                         (["--heads", "0:0,0:1,0:2,0:3"], "every head"),
                         (["--fraction", "0.5"], "--data"), ([], "either")):
        assert main(["prune", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "q"),
                     *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "q").exists()  # a refusal leaves no half-made output
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "model.safetensors").write_text("my own")
    assert main(["prune", "--model", str(tmp_path / "m"), "--heads", "0:1", "--out",
                 str(tmp_path / "q")]) == 2
    assert "not empty, holds files of its own" in capsys.readouterr().err
    assert (tmp_path / "q" / "model.safetensors").read_text() == "my own"


@pytest.fixture(scope="module")
def pretrained_bert(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    return pretrained_bert_dir(tmp_path_factory, tweets)


def test_prune_a_fraction_of_a_classifier_by_importance(pretrained_bert: Path, tmp_path: Path,
                                                        tweets: list[str],
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """`--fraction` scores the heads with the classifier's loss on `--data` and removes the
    least important half (one of each layer's two here); the result evaluates as before."""
    model = build_task_model(plmkit.load(pretrained_bert), {"name": "classify",
                                                             "labels": ["neg", "pos"]})
    plmkit.save_model(model, tmp_path / "clf")
    shutil.copytree(pretrained_bert / "tokenizer", tmp_path / "clf" / "tokenizer")
    data = tmp_path / "data.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t, "pos" if "thank" in t.lower() else "neg"] for t in tweets[:64])
    assert main(["prune", "--model", str(tmp_path / "clf"), "--fraction", "0.5", "--data",
                 str(data), "--out", str(tmp_path / "pruned")]) == 0
    assert "removed 2 heads" in capsys.readouterr().out
    pruned = plmkit.load(tmp_path / "pruned")
    assert [m.num_heads for m in prunable(pruned)] == [1, 1]
    assert main(["evaluate", "--model", str(tmp_path / "pruned"), "--eval", str(data)]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
