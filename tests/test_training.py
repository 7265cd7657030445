"""The objective-agnostic trainer on a toy next-token task: optimizer, schedules, resume."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.attention import MultiHeadAttention
from plmkit.training import (
    Lamb,
    Phase,
    TrainConfig,
    Trainer,
    build_optimizer,
    constant_warmup,
    inverse_sqrt,
    linear_warmup_decay,
    list_checkpoints,
    plot_metrics,
)
from plmkit.training.checkpoint import TRAINER_STATE
from plmkit.training.modeldir import save_model
from plmkit.training.plot import default_keys
from plmkit.training.trainer import disable_dropout

VOCAB = 16


@dataclasses.dataclass
class ToyConfig:
    family: str = "toy"
    vocab_size: int = VOCAB
    hidden: int = 32
    dropout: float = 0.1


class ToyModel(nn.Module):
    """Embedding + LayerNorm + dropout + linear, output projection tied to the embedding."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.norm = nn.LayerNorm(config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.proj = nn.Linear(config.hidden, config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self.head.weight = self.embed.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        hidden = self.drop(self.norm(self.embed(input_ids)))  # (batch, seq, hidden)
        return self.head(torch.relu(self.proj(hidden)))  # (batch, seq, vocab)


class ToySource:
    """Sequences t, 3t+1, ... mod VOCAB from random starts drawn by its own seeded generator."""

    def __init__(self, seed: int, batch_size: int = 8, seq_len: int = 12) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size, self.seq_len = batch_size, seq_len

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            tokens = [torch.randint(VOCAB, (self.batch_size,), generator=self.generator)]
            for _ in range(self.seq_len - 1):
                tokens.append((3 * tokens[-1] + 1) % VOCAB)
            ids = torch.stack(tokens, dim=1)  # (batch, seq)
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def next_token(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    ids = batch["input_ids"]
    logits = model(ids)[:, :-1]  # (batch, seq - 1, vocab)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    return loss, {"accuracy": (logits.argmax(-1) == ids[:, 1:]).float().mean()}


def crash_after(calls: int):
    """`next_token`, raising on training call number `calls + 1`."""
    count = 0

    def objective(model: nn.Module, batch: dict[str, Tensor]):
        nonlocal count
        count += model.training
        if count > calls:
            raise RuntimeError("crash")
        return next_token(model, batch)

    return objective


def eval_batches() -> list[dict[str, Tensor]]:
    source = iter(ToySource(seed=99))
    return [next(source) for _ in range(2)]


def make_model(seed: int = 0, dropout: float = 0.1) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(ToyConfig(dropout=dropout))


def config(out_dir: Path, **overrides: Any) -> TrainConfig:
    defaults: dict[str, Any] = dict(steps=10, lr=1e-2, log_every=5, eval_every=0, save_every=0,
                                    device="cpu", progress=False)
    return TrainConfig(out_dir=out_dir, **{**defaults, **overrides})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_decreases(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), next_token, ToySource(0), config(tmp_path, steps=60))
    records = trainer.train()
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert records[-1]["accuracy"] > records[0]["accuracy"]


def test_no_decay_groups_and_tied_parameters_once() -> None:
    model = make_model()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    groups = {g["weight_decay"]: set(g["param_names"]) for g in optimizer.param_groups}
    assert groups == {0.1: {"embed.weight", "proj.weight"},
                      0.0: {"norm.weight", "norm.bias", "proj.bias", "head.bias"}}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))


def test_schedules_at_key_steps() -> None:
    bert = linear_warmup_decay(warmup=10, total=100)  # argument: updates already taken
    assert bert(4) == 0.5 and bert(9) == 1.0 and bert(54) == 0.5 and bert(99) == 0.0
    assert max(bert(s) for s in range(100)) == bert(9)
    transformer = inverse_sqrt(d_model=512, warmup=4000)
    assert transformer(0) == pytest.approx(512**-0.5 * 4000**-1.5)
    assert transformer(3999) == pytest.approx(512**-0.5 * 4000**-0.5)
    assert transformer(15999) == pytest.approx(512**-0.5 * 16000**-0.5)
    assert max(transformer(s) for s in range(8000)) == transformer(3999)
    constant = constant_warmup(4)
    assert [constant(s) for s in (0, 3, 100)] == [0.25, 1.0, 1.0]


def test_grad_accumulation_equals_full_batch(tmp_path: Path) -> None:
    model = make_model(dropout=0.0)
    batch = next(iter(ToySource(0, batch_size=8)))
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    trainer = Trainer(model, next_token, [batch], config(tmp_path, grad_accum=2))
    trainer.forward_backward(halves)
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    trainer.forward_backward([batch])
    for grad, p in zip(accumulated, model.parameters(), strict=True):
        torch.testing.assert_close(grad, p.grad, atol=1e-6, rtol=0)


def test_metrics_jsonl_has_train_and_eval_keys(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), next_token, ToySource(0),
                      config(tmp_path, steps=6, log_every=2, eval_every=3),
                      eval_data=eval_batches())
    records = trainer.train()
    assert read_jsonl(tmp_path / "metrics.jsonl") == records
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for record in records:
        assert {"step", "loss", "lr", "tokens_per_s", "elapsed_s", "accuracy"} <= record.keys()
        assert ("eval_loss" in record) == (record["step"] in (3, 6))
    assert records[1]["eval_accuracy"] >= 0 and records[0]["tokens_per_s"] > 0


def test_checkpoints_keep_last_and_latest_model(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), next_token, ToySource(0),
                      config(tmp_path, steps=10, save_every=2, keep_last=3))
    trainer.train()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [6, 8, 10]
    last = tmp_path / "checkpoints" / "step-000010"
    assert {p.name for p in last.iterdir()} == {"plmkit.json", "model.safetensors", TRAINER_STATE,
                                              "manifest.json"}
    state = torch.load(last / TRAINER_STATE, weights_only=True)
    assert state["step"] == 10 and {"optimizer", "scheduler", "rng", "data"} <= state.keys()
    assert (tmp_path / "plmkit.json").is_file() and (tmp_path / "model.safetensors").is_file()
    trainer.save()  # the same step again replaces it cleanly
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000006", "step-000008", "step-000010"]


def test_failed_checkpoint_write_leaves_nothing(tmp_path: Path) -> None:
    def failing_save(model: nn.Module, directory: Path) -> None:
        save_model(model, directory)
        raise OSError("disk full")

    trainer = Trainer(make_model(), next_token, ToySource(0), config(tmp_path, steps=2),
                      save_model=failing_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    assert list((tmp_path / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("options", [{}, {"optimizer": "lamb", "dropout_off_step": 7}],
                         ids=["adamw", "lamb-dropout-off"])
@pytest.mark.parametrize("phased", [False, True])
def test_resume_is_bit_identical(tmp_path: Path, phased: bool, options: dict[str, Any]) -> None:
    def run(out_dir: Path, objective, resume: bool = False, model_seed: int = 0) -> ToyModel:
        model = make_model(model_seed)
        data: Any = ToySource(1)
        if phased:  # the checkpoint at step 6 lies inside the second phase
            data = [Phase(4, ToySource(1, seq_len=8)), Phase(6, ToySource(2, seq_len=16))]
        cfg = config(out_dir, steps=10, grad_accum=2, log_every=2, eval_every=3, save_every=2,
                     **options)
        Trainer(model, objective, data, cfg, eval_data=eval_batches()).train(resume=resume)
        return model

    straight = run(tmp_path / "a", next_token)
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path / "b", crash_after(15))  # dies in step 8; newest checkpoint: step 6
    resumed = run(tmp_path / "b", next_token, resume=True, model_seed=1)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    logs = [read_jsonl(tmp_path / run / "metrics.jsonl") for run in ("a", "b")]
    curves = [[(r["step"], r["loss"], r.get("eval_loss")) for r in log] for log in logs]
    assert curves[0] == curves[1]


def test_resume_without_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), next_token, ToySource(0), config(tmp_path))
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        trainer.train(resume=True)


def test_fresh_run_refuses_a_directory_with_checkpoints(tmp_path: Path) -> None:
    Trainer(make_model(), next_token, ToySource(0), config(tmp_path, steps=2)).train()
    with pytest.raises(UserError, match="resume it"):
        Trainer(make_model(), next_token, ToySource(0), config(tmp_path, steps=2)).train()


def test_resume_with_plain_iterable_warns(tmp_path: Path) -> None:
    batches = eval_batches()
    Trainer(make_model(), next_token, batches, config(tmp_path, steps=2)).train()
    with pytest.warns(UserWarning, match="restarts"):
        records = Trainer(make_model(), next_token, batches, config(tmp_path, steps=4)).train(True)
    assert records[-1]["step"] == 4


def test_non_finite_loss_skips_the_step(tmp_path: Path) -> None:
    calls = 0

    def sometimes_nan(model: nn.Module, batch: dict[str, Tensor]):
        nonlocal calls
        calls += 1
        loss, metrics = next_token(model, batch)
        return (loss * float("nan") if calls == 2 else loss), metrics

    model = make_model()
    records = Trainer(model, sometimes_nan, ToySource(0), config(tmp_path, steps=3, log_every=3)
                      ).train()
    assert records[-1]["skipped_steps"] == 1 and records[-1]["loss"] == records[-1]["loss"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_runs(tmp_path: Path) -> None:
    records = Trainer(make_model(), next_token, ToySource(0), config(tmp_path, steps=2, bf16=True)
                      ).train()
    assert records[-1]["step"] == 2


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    torch._dynamo.reset()
    runs = []
    for compile in (False, True):
        trainer = Trainer(make_model(dropout=0.0), next_token, ToySource(0),
                          config(tmp_path / str(compile), steps=6, log_every=1, compile=compile))
        runs.append([r["loss"] for r in trainer.train()])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert runs[1] == pytest.approx(runs[0], rel=1e-4)


def test_plot_writes_png(tmp_path: Path) -> None:
    Trainer(make_model(), next_token, ToySource(0),
            config(tmp_path, steps=6, log_every=2, eval_every=3), eval_data=eval_batches()).train()
    out = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots" / "metrics.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_shows_loss_accuracies_and_aucs_by_default() -> None:
    names = {"loss", "mlm_accuracy", "disc_auc", "disc_recall", "grad_norm", "lr"}
    assert default_keys(names) == ["loss", "disc_auc", "mlm_accuracy"]


def test_plot_missing_or_empty_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such metrics file"):
        plot_metrics(tmp_path / "missing.jsonl", tmp_path / "out.png")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="no metrics logged"):
        plot_metrics(tmp_path / "empty.jsonl", tmp_path / "out.png")


def test_plot_command_keeps_the_users_files(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`plmkit plot`: an --out that is not an image name, or an existing file without
    --overwrite, is refused in one line and left as it was; the run's own curves.png is
    redrawn in place."""
    from plmkit.cli import main

    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 5.0 / s, "mlm_accuracy": 0.1 * s}) + "\n"
        for s in range(1, 4)))
    mine = tmp_path / "mine.png"
    mine.write_text("keep")
    for out, problem in ((tmp_path / "curves.txt", "not an image file name"),
                         (mine, "exists; choose another file or add --overwrite")):
        assert main(["plot", "--metrics", str(tmp_path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err
    assert mine.read_text() == "keep" and not (tmp_path / "curves.txt").exists()
    assert main(["plot", "--metrics", str(tmp_path), "--out", str(mine), "--overwrite"]) == 0
    assert mine.read_bytes()[:4] == b"\x89PNG"
    for _ in range(2):
        assert main(["plot", "--metrics", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.jsonl",
                                                          "mine.png"]  # no temporary left


def test_lamb_steps_match_a_hand_computation() -> None:
    """Two LAMB updates of a 2-parameter-tensor model against the formulas in scalars."""
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.zero_()  # ||w|| = 0: trust ratio 1
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.5, betas=(0.9, 0.99), eps=1e-6,
                                name="lamb")
    assert isinstance(optimizer, Lamb)
    grads = {"weight": [[0.3, -0.4], [0.1, 0.2]], "bias": [[0.5], [-0.25]]}
    decay = {"weight": 0.5, "bias": 0.0}  # the bias sits in the no-decay group
    expected = {"weight": [1.0, 2.0], "bias": [0.0]}
    moments = {name: ([0.0] * len(w), [0.0] * len(w)) for name, w in expected.items()}
    for t in (1, 2):
        for name, p in model.named_parameters():
            p.grad = torch.tensor(grads[name][t - 1]).reshape(p.shape)
            w, (m, v) = expected[name], moments[name]
            update = []
            for i, g in enumerate(grads[name][t - 1]):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.99 * v[i] + 0.01 * g * g
                m_hat, v_hat = m[i] / (1 - 0.9**t), v[i] / (1 - 0.99**t)
                update.append(m_hat / (v_hat**0.5 + 1e-6) + decay[name] * w[i])
            w_norm = sum(x * x for x in w) ** 0.5
            u_norm = sum(x * x for x in update) ** 0.5
            trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            expected[name] = [x - 0.1 * trust * u for x, u in zip(w, update, strict=True)]
        optimizer.step()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(expected[name]),
                                       atol=1e-6, rtol=1e-6)


def test_lamb_trains_and_round_trips_its_state(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), next_token, ToySource(0),
                      config(tmp_path, steps=60, optimizer="lamb"))
    records = trainer.train()
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    state = trainer.optimizer.state_dict()
    other = build_optimizer(make_model(1), lr=1e-2, name="lamb")
    other.load_state_dict(state)
    assert other.state_dict()["param_groups"] == state["param_groups"]
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(other.state_dict()["state"][key][name], tensor), name
    with pytest.raises(UserError, match="optimizer"):
        config(tmp_path, optimizer="sgd")


def test_dropout_off_step(tmp_path: Path) -> None:
    def dropouts(model: nn.Module) -> list[float]:
        return [m.p if isinstance(m, nn.Dropout) else m.dropout for m in model.modules()
                if isinstance(m, nn.Dropout | MultiHeadAttention)]

    model = make_model()
    model.attn = MultiHeadAttention(32, 2, dropout=0.1)  # a float `dropout` attribute
    Trainer(model, next_token, ToySource(0), config(tmp_path / "a", steps=3,
                                                    dropout_off_step=3)).train()
    assert dropouts(model) == [0.1, 0.1]  # steps 0..2 ran before the switch
    Trainer(model, next_token, ToySource(0), config(tmp_path / "b", steps=4,
                                                    dropout_off_step=3)).train()
    assert dropouts(model) == [0.0, 0.0]
    model.train()
    ids = next(iter(ToySource(0)))["input_ids"]
    assert torch.equal(model(ids), model(ids))  # deterministic in training mode
    disable_dropout(model)  # idempotent
    assert dropouts(model) == [0.0, 0.0]
    with pytest.raises(UserError, match="dropout_off_step"):
        config(tmp_path, dropout_off_step=-1)
