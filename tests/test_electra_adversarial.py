"""ELECTRA's adversarial generator (Clark et al. 2020, section 3.2, appendix F): its gradient is
REINFORCE's alone, the baseline is learned apart, the option reaches run.json, resume and
compare, and a short run on real tweets trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.cli import main
from plmkit.jobs.options import PretrainArgs, parse_entry
from plmkit.jobs.pretrain import trainer_for
from plmkit.models.electra import Electra, ElectraConfig
from plmkit.objectives.rtd import (
    ReplacedTokenDetection,
    corrupt,
    sample_tokens,
    token_losses,
)
from test_rtd import TINY, batch

pytestmark = pytest.mark.usefixtures("one_thread")

NO_DROPOUT = {**TINY, "dropout": 0.0, "attention_dropout": 0.0, "generator_baseline": True}


def grads(model: Electra, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad()
    loss.backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def reinforce_by_hand(model: Electra, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Appendix F's surrogate, written out: -(R - b) log p_G(x̂) over the masked positions,
    R the discriminator's loss on x̂ and b = -log sigmoid(w^T h_G) held constant."""
    hidden = model.generator_hidden(b["input_ids"], b["input_mask"], b["segment_ids"])
    logits = model.mlm_logits(hidden, b["masked_lm_positions"])  # (B, P, V)
    sampled = sample_tokens(logits)  # the objective's draw: same seed, same order
    fake, replaced = corrupt(b, sampled)
    with torch.no_grad():
        rtd = model.rtd_logits(model(fake, b["input_mask"], b["segment_ids"]).last_hidden_state)
        reward = token_losses(rtd, replaced).gather(1, b["masked_lm_positions"])
        base = -F.logsigmoid(model.baseline_logits(hidden, b["masked_lm_positions"]))
    log_p = logits.log_softmax(-1).gather(-1, sampled.unsqueeze(-1)).squeeze(-1)  # (B, P)
    w = b["masked_lm_weights"]
    return -((reward - base) * log_p * w).sum() / w.sum()


def test_the_generator_learns_from_reinforce_alone() -> None:
    model = Electra(ElectraConfig(**NO_DROPOUT))
    b = batch()
    torch.manual_seed(1)
    adversarial = grads(model, ReplacedTokenDetection(generator_training="adversarial")(
        model, b)[0])
    torch.manual_seed(1)
    by_hand = grads(model, reinforce_by_hand(model, b))
    own = [n for n in adversarial if n.startswith(("generator.", "mlm."))]  # not shared tables
    for name in own:  # no MLM gradient, none from the discriminator or the baseline's loss
        assert torch.allclose(adversarial[name], by_hand[name], atol=1e-6), name
    assert all(adversarial[n].abs().sum() > 0 for n in own if n.endswith("weight"))
    torch.manual_seed(1)
    mle = grads(model, ReplacedTokenDetection()(model, b)[0])
    assert not torch.allclose(mle["mlm.dense.weight"], adversarial["mlm.dense.weight"])
    assert mle["baseline.weight"] is None  # the MLE objective leaves the baseline alone


def test_the_reward_is_detached_from_the_discriminator() -> None:
    model = Electra(ElectraConfig(**NO_DROPOUT))
    torch.manual_seed(1)
    objective = ReplacedTokenDetection(disc_weight=0.0, generator_training="adversarial")
    g = grads(model, objective(model, batch())[0])
    discriminator = [n for n in g if n.startswith(("discriminator.layers.", "rtd."))]
    assert discriminator and all(g[n] is None or not g[n].any() for n in discriminator)
    assert g["mlm.dense.weight"].abs().sum() > 0


def test_the_baseline_is_learned_by_cross_entropy_to_the_reward() -> None:
    model = Electra(ElectraConfig(**NO_DROPOUT))
    b, objective = batch(), ReplacedTokenDetection(generator_training="adversarial")
    w = model.baseline.weight
    optimizer = torch.optim.SGD([w], lr=1.0)
    gaps = []
    for _ in range(30):  # the baseline alone steps; generator and discriminator stay put
        torch.manual_seed(1)
        loss, metrics = objective(model, b)
        gaps.append(abs(float(metrics["pg_reward"] - metrics["pg_baseline"])))
        optimizer.zero_grad()
        model.zero_grad()
        loss.backward()
        assert w.grad is not None and w.grad.abs().sum() > 0
        optimizer.step()
    assert gaps[-1] < gaps[0] / 2  # b = -log sigmoid(w^T h_G) moves to the reward
    with pytest.raises(ValueError, match="stage='joint'"):
        ReplacedTokenDetection(stage="generator", generator_training="adversarial")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    path = tmp_path_factory.mktemp("adversarial") / "tweets.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 2000, 8)) + "\n")
    return path


def cli(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--model", "electra-tiny", "--corpus", str(corpus), "--out", str(out),
            "--vocab-size", "800", "--batch-size", "8", "--seq-len", "32", "--steps", "2",
            "--no-progress", *extra]


def test_the_mode_is_recorded_and_resume_refuses_another(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(cli(corpus, out, "--generator-training", "adversarial")) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["args"]["generator_training"] == "adversarial"
    assert record["config"]["generator_baseline"] is True
    assert plmkit.load(out).baseline is not None
    plmkit.save_hf(plmkit.load(out), tmp_path / "hf")  # the baseline has no HF name: left out
    capsys.readouterr()
    code = main(cli(corpus, out, "--generator-training", "mle", "--resume", "--steps", "4"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--generator-training mle differs from the run's adversarial" in err


@pytest.mark.parametrize(("extra", "message"), [
    (("--generator-training", "adversarial", "--model", "bert-tiny"),
     "only for the electra objective, not mlm+nsp"),
    (("--model", "electra-tiny:electra:generator_training=GAN"),
     "generator_training=GAN: expected one of mle, adversarial"),
])
def test_a_bad_mode_is_one_line_exit_2(corpus: Path, tmp_path: Path, extra: tuple[str, ...],
                                       message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(cli(corpus, tmp_path / "run", *extra))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_compare_arms_name_the_mode() -> None:
    entry = parse_entry("electra-tiny:electra:generator_training=adversarial")
    assert entry.options == {"generator_training": "adversarial"}
    assert entry.name == "electra-tiny_electra_generator_training=adversarial"


def test_an_adversarial_run_trains_on_real_tweets(corpus: Path, tmp_path: Path) -> None:
    args = PretrainArgs(
        model="electra-tiny:electra:generator_training=adversarial", corpus=[corpus],
        out=tmp_path / "run", vocab_size=2000, batch_size=16, seq_len=64, lr=2e-3, steps=25,
        warmup=3, log_every=5, save_every=25, eval_every=0, progress=False)
    from plmkit.jobs.pretrain import resolve

    records = trainer_for(resolve(args)).train()
    first, last = records[0], records[-1]
    for record in records:
        assert all(math.isfinite(v) for k, v in record.items() if isinstance(v, float)), record
    p = last["replaced_fraction"]  # the base rate's loss: what a constant guess scores
    assert last["disc_loss"] < -(p * math.log(p) + (1 - p) * math.log(1 - p)) + 0.01
    assert last["disc_loss"] < first["disc_loss"] - 0.1
    assert last["baseline_loss"] < first["baseline_loss"]
