"""`plmkit compare`: two models and the 1-step control at equal FLOPs on real tweets, two
pretraining seeds each, scored on one fixed held-out mask set, probed and fine-tuned; the
statistics against hand computations; resuming and refusing another run's --out."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from plmkit.cli import main
from plmkit.data.builders import build_dataset
from plmkit.errors import UserError
from plmkit.jobs.compare import CompareArgs, compare, cut, parse_entry, pretrain_args
from plmkit.jobs.compare.report import claim_verdicts
from plmkit.jobs.compare.run import setup
from plmkit.jobs.compare.stats import sign_flip_p, t_interval, t_quantile
from plmkit.tokenizers import Tokenizer
from plmkit.training.precision import fast_bf16


def test_entries_split_options_from_config_fields() -> None:
    e = parse_entry("albert-tiny:mlm+sop:masking=static:sharing=none:embedding_size=32")
    assert (e.preset, e.objective) == ("albert-tiny", "mlm+sop")
    assert e.options == {"masking": "static"}
    assert e.overrides == {"sharing": "none", "embedding_size": 32}
    assert parse_entry("bert-tiny").objective is None
    assert parse_entry("electra-tiny::generator_size=0.5").overrides == {"generator_size": 0.5}
    keys = parse_entry("electra-tiny:generator_training=adversarial:generator_size=0.5")
    assert keys.objective is None  # was taken for an objective named "generator_training=..."
    assert (keys.options, keys.overrides) == ({"generator_training": "adversarial"},
                                              {"generator_size": 0.5})
    with pytest.raises(Exception, match="key=value"):
        parse_entry("bert-tiny:mlm:static")


def test_cut_keeps_whole_csv_records(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    source.write_text('text,label\n"two\nlines",a\nplain,b\nthird,c\n', encoding="utf-8")
    out = cut(source, 2, tmp_path / "cut")
    assert out.read_bytes().decode() == 'text,label\r\n"two\nlines",a\r\nplain,b\r\n'


def test_cut_keeps_whole_conll_sentences(tmp_path: Path) -> None:
    source = tmp_path / "train.conll"
    source.write_text("江 B-PER\n泽 I-PER\n\n说 O\n \n好 O\n", encoding="utf-8")
    out = cut(source, 2, tmp_path / "cut")
    assert out.read_text(encoding="utf-8") == "江 B-PER\n泽 I-PER\n\n说 O\n"


def tweet_documents(path: Path, tweets: list[str], documents: int) -> None:
    """A corpus of `documents` documents of 4 real tweets each at `path`."""
    path.write_text("\n\n".join("\n".join(tweets[i:i + 4]) for i in range(0, 4 * documents, 4))
                    + "\n")


def records_study(tmp_path: Path, tweets: list[str]) -> dict[str, Any]:
    """CompareArgs fields (all but out and seeds) of a 4-step bert-tiny study on real tweets
    that keeps records in tmp_path/records."""
    corpus = tmp_path / "c.txt"
    tweet_documents(corpus, tweets, 100)
    return {"models": ["bert-tiny:mlm"], "corpus": [corpus], "heldout": [corpus],
            "heldout_batches": 1, "budget": ("steps", 4), "tasks": [], "vocab_size": 500,
            "batch_size": 4, "seq_len": 32, "control": None, "records": tmp_path / "records"}


def small_tasks(root: Path) -> str:
    """A 3-class sentiment task of 120 / 60 / 60 real tweets (labels from the tweets file)."""
    from plmkit.data.builders import read_tweets

    rows = random.Random(0).sample(read_tweets(), 240)  # the file is sorted by sentiment
    for name, part in (("train", rows[:120]), ("dev", rows[120:180]), ("test", rows[180:])):
        with open(root / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "label"), *part])
    return ":".join(["classify", *(str(root / f"{n}.csv") for n in ("train", "dev", "test"))])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> CompareArgs:
    root = tmp_path_factory.mktemp("compare")
    for name, part in (("corpus", tweets[:1200]), ("heldout", tweets[1200:1600])):
        (root / f"{name}.txt").write_text("\n\n".join("\n".join(part[i:i + 4])
                                                     for i in range(0, len(part), 4)) + "\n")
    args = CompareArgs(models=["bert-tiny:mlm", "electra-tiny"], corpus=[root / "corpus.txt"],
                       heldout=[root / "heldout.txt"], heldout_batches=2,
                       out=root / "out", budget=("flops", 1.5e10), vocab_size=1000,
                       tasks=[small_tasks(root)], batch_size=8, seq_len=32, seeds=1,
                       pretrain_seeds=2, finetune_examples=120, finetune_epochs=1.0,
                       claims=["electra-tiny > bert-tiny:mlm"])
    compare(args)
    return args


@pytest.mark.slow  # the study fixture: about 1 minute on a quiet 2-core CPU
def test_schema_seeds_control_and_equal_flops(study: CompareArgs) -> None:
    data = json.loads((study.out / "results.json").read_text())
    assert set(data) == {"setup", "results", "verdicts"}
    rows = {r["model"]: r for r in data["results"]}
    assert list(rows) == ["bert-tiny_mlm", "electra-tiny", "control-bert-tiny_mlm"]
    bert, electra, control = rows.values()
    assert electra["objective"] == "electra" and control["objective"] == "mlm"
    assert [r["control"] for r in rows.values()] == [False, False, True]
    assert control["steps"] == 1 and control["flops"] == bert["flops_per_step"]
    for r in (bert, electra):
        # the budget buys floor(budget / flops per step) steps
        assert r["steps"] == int(1.5e10 // r["flops_per_step"]) and r["flops"] <= 1.5e10
    # ELECTRA's step runs a generator too: more FLOPs per step, so fewer steps
    assert electra["flops_per_step"] > bert["flops_per_step"] and electra["steps"] < bert["steps"]
    for r in rows.values():
        assert [s["seed"] for s in r["pretrain_seeds"]] == [0, 1]
        for s in r["pretrain_seeds"]:
            keys = {"heldout/mlm_accuracy", "heldout/mlm_loss", "probe/classify/classify",
                    "finetune/classify/classify"}
            assert keys <= set(s["scores"])
            assert ("heldout/rtd_accuracy" in s["scores"]) == (r is electra)
            assert ("heldout/rtd_auc" in s["scores"]) == (r is electra)
            assert 0.0 <= s["scores"]["probe/classify/classify"] <= 1.0
            assert len(s["finetune_seeds"]["classify/classify"]) == 1
            # the learning curve: the held-out set scored at >= 4 points, the last at the end
            points = [p["step"] for p in s["curve"]]
            assert len(points) >= (1 if r is control else 4) and points[-1] == r["steps"]
            assert s["curve"][-1]["mlm_accuracy"] == s["scores"]["heldout/mlm_accuracy"]
        # two pretraining seeds are two different runs
        assert r["pretrain_seeds"][0]["final_loss"] != r["pretrain_seeds"][1]["final_loss"]
        assert r["summary"]["heldout/mlm_loss"]["n"] == 2
    claims = {(v["claim"], v["metric"]) for v in data["verdicts"]}
    assert {("electra-tiny > bert-tiny_mlm", "finetune"),
            ("bert-tiny_mlm > control-bert-tiny_mlm", "probe"),
            ("electra-tiny > control-bert-tiny_mlm", "heldout/mlm_accuracy")} <= claims
    for v in data["verdicts"]:
        assert v["verdict"] in ("reproduced", "contradicted", "inconclusive")
        assert v["pairs"] == 2 and 0.0 < v["p_value"] <= 1.0
    table = (study.out / "results.md").read_text()
    assert "control-bert-tiny_mlm (control)" in table and "electra-tiny > bert-tiny_mlm" in table
    # the majority class beside every score: the test file's most frequent label
    with open(study.out.parent / "test.csv", newline="", encoding="utf-8") as f:
        labels = Counter(row["label"] for row in csv.DictReader(f))
    share = labels.most_common(1)[0][1] / labels.total()
    assert data["setup"]["majority_baseline"] == {"classify/classify": pytest.approx(share)}
    assert "| majority class |" in table and f"{share:.4f}" in table
    for name in ("heldout_vs_flops", "score_vs_flops", "loss_vs_flops"):
        assert (study.out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # the study fixture: about 1 minute on a quiet 2-core CPU
def test_one_fixed_mask_set_for_every_arm(study: CompareArgs, tmp_path: Path) -> None:
    """The held-out batches are made once from a fixed seed: rebuilding them elsewhere gives
    the same positions and replacements, and scoring a saved model on them reproduces the
    score its run logged."""
    import plmkit
    from plmkit.jobs.compare.heldout import HeldOut

    saved = HeldOut(study.heldout, study.out / "tokenizer", study.out / "heldout", 8, 32, 2)
    again = HeldOut(study.heldout, study.out / "tokenizer", tmp_path, 8, 32, 2)
    for a, b in zip(saved.set("mlm"), again.set("mlm"), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = study.out / "runs" / "electra-tiny" / "seed-1"
    scores = saved.scores(plmkit.load(run).eval(), "electra")
    logged = json.loads((study.out / "results.json").read_text())["results"][1]
    final = logged["pretrain_seeds"][1]["scores"]
    assert scores["mlm_loss"] == pytest.approx(final["heldout/mlm_loss"], rel=1e-5)
    assert scores["rtd_accuracy"] == pytest.approx(final["heldout/rtd_accuracy"], rel=1e-5)
    assert scores["rtd_auc"] == pytest.approx(final["heldout/rtd_auc"], rel=1e-5)
    assert 0.0 <= scores["rtd_auc"] <= 1.0


@pytest.mark.slow  # the study fixture: about 1 minute on a quiet 2-core CPU
def test_a_second_call_reuses_everything(study: CompareArgs) -> None:
    outputs = [*study.out.rglob("test_results.json"), *study.out.rglob("probe/*.json"),
               *study.out.rglob("checkpoints/*/*")]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    assert len(list(study.out.rglob("test_results.json"))) == 6  # 3 arms x 2 seeds x 1 task
    compare(study)
    assert {p: p.stat().st_mtime_ns for p in outputs} == before


def test_an_interrupted_seed_resumes(tmp_path: Path, tweets: list[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A run checkpoints at every held-out evaluation (each eighth of the run); one stopped
    between two checkpoints continues from the newest on the next call and ends where an
    uninterrupted run ends."""
    from plmkit.training import Trainer

    corpus = tmp_path / "c.txt"
    tweet_documents(corpus, tweets, 100)
    base = {"models": ["bert-tiny:mlm"], "corpus": [corpus], "heldout": [corpus],
            "heldout_batches": 1, "budget": ("steps", 16), "tasks": [], "vocab_size": 500,
            "batch_size": 4, "seq_len": 32, "pretrain_seeds": 1, "control": None}
    straight = compare(CompareArgs(out=tmp_path / "a", **base))
    base["tokenizer"] = tmp_path / "a" / "tokenizer"  # WordPiece training is not deterministic
    step = Trainer._train_step

    def stop_at_5(self: Trainer, meter: object) -> bool:
        if self.step == 5:
            raise KeyboardInterrupt
        return step(self, meter)

    monkeypatch.setattr(Trainer, "_train_step", stop_at_5)
    with pytest.raises(KeyboardInterrupt):
        compare(CompareArgs(out=tmp_path / "b", **base))
    monkeypatch.setattr(Trainer, "_train_step", step)
    run = tmp_path / "b" / "runs" / "bert-tiny_mlm" / "seed-0"
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-000002",
                                                                          "step-000004"]
    resumed = compare(CompareArgs(out=tmp_path / "b", **base))
    a, b = (r["results"][0]["pretrain_seeds"][0] for r in (straight, resumed))
    assert [p["step"] for p in b["curve"]] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert b["scores"]["heldout/mlm_loss"] == pytest.approx(a["scores"]["heldout/mlm_loss"])


def test_records_outlive_out(tmp_path: Path, tweets: list[str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    """--records keeps each finished seed, the setup, the tokenizer and the arm's steps: with
    the first OUT gone (another machine), a second call takes seed 0 from the records, trains
    only seed 1 on the same vocabulary, and reports seed 0's scores as they were."""
    import shutil

    base = records_study(tmp_path, tweets)
    corpus, records = base["corpus"][0], base["records"]
    first = compare(CompareArgs(out=tmp_path / "a", pretrain_seeds=1, **base))
    arm = records / "bert-tiny_mlm"
    assert sorted(p.name for p in arm.iterdir()) == ["arm.json", "seed-0.json"]
    assert json.loads((arm / "arm.json").read_text())["steps"] == 4
    vocabulary = (records / "tokenizer" / "tokenizer.json").read_bytes()
    shutil.rmtree(tmp_path / "a")
    second = compare(CompareArgs(out=tmp_path / "b", pretrain_seeds=2, **base))
    runs = tmp_path / "b" / "runs" / "bert-tiny_mlm"
    assert not (runs / "seed-0").exists() and (runs / "seed-1" / "compare.json").is_file()
    assert (tmp_path / "b" / "tokenizer" / "tokenizer.json").read_bytes() == vocabulary
    seeds = second["results"][0]["pretrain_seeds"]
    assert seeds[0] == first["results"][0]["pretrain_seeds"][0]
    assert [s["seed"] for s in seeds] == [0, 1] and seeds[1]["params"] == seeds[0]["params"]
    assert seeds[1]["bf16"] == fast_bf16(torch.device("cpu"))
    assert f"| bert-tiny_mlm | 1 | {'bf16' if seeds[1]['bf16'] else 'float32'} |" in (
        tmp_path / "b" / "results.md").read_text()
    assert (arm / "seed-1.json").is_file()
    task = small_tasks(tmp_path)  # a task the kept seed was not fine-tuned on: seed 0 again
    third = compare(CompareArgs(out=tmp_path / "b", pretrain_seeds=1, seeds=1,
                                **{**base, "tasks": [task]}))
    assert (runs / "seed-0" / "compare.json").is_file()
    assert "finetune/classify/classify" in third["results"][0]["pretrain_seeds"][0]["scores"]
    assert json.loads((arm / "seed-0.json").read_text())["finetune_seeds"].keys() == {
        "classify/classify"}
    kept = sorted(p.relative_to(records) for p in records.rglob("*"))
    cli = ["compare", "--models", "bert-tiny:mlm", "--corpus", str(corpus), "--tasks", "",
           "--vocab-size", "500", "--pretrain-seeds", "1", "--control", "none"]
    for extra, message in (
            (["--budget", "steps", "5", "--out", str(tmp_path / "c"), "--records",
              str(records), "--heldout", str(corpus), "--heldout-batches", "1",
              "--batch-size", "4", "--seq-len", "32"],
             f"--records {records}: the records of a study with budget ['steps', 4], not "
             "['steps', 5.0]; give another --records"),
            (["--budget", "steps", "4", "--out", str(tmp_path / "b"), "--records",
              str(tmp_path / "b" / "kept")],
             f"--records {tmp_path / 'b' / 'kept'}: inside --out {tmp_path / 'b'}, which it "
             "must outlive; give a folder elsewhere"),
            (["--budget", "steps", "4", "--out", str(tmp_path / "c"), "--records",
              str(tmp_path)],
             f"--records {tmp_path}: not empty and not the records of a compare study; give "
             "another --records")):
        assert main([*cli, *extra]) == 2
        assert capsys.readouterr().err == f"plmkit: error: {message}\n"
    assert sorted(p.relative_to(records) for p in records.rglob("*")) == kept
    assert not (tmp_path / "c").exists()


def test_out_must_be_this_compare_run(tmp_path: Path, tweets: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.txt"
    tweet_documents(corpus, tweets, 50)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    base = ["compare", "--models", "bert-tiny:mlm", "--corpus", str(corpus), "--out", str(out),
            "--tasks", "", "--vocab-size", "500", "--pretrain-seeds", "1"]
    assert main([*base, "--budget", "steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "not empty and not a compare run" in err and err.count("\n") == 1
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "compare-setup.json").write_text(json.dumps(
        {**setup(CompareArgs(models=[], corpus=[corpus], out=out, budget=("steps", 3),
                             tasks=[], vocab_size=500))}))
    with pytest.raises(UserError, match=r"budget \['steps', 3\], not \['steps', 2\]"):
        compare(CompareArgs(models=["bert-tiny:mlm"], corpus=[corpus], out=out,
                            budget=("steps", 2), tasks=[], vocab_size=500))
    results = compare(CompareArgs(models=["bert-tiny:mlm"], corpus=[corpus], out=out,
                                  budget=("steps", 2), tasks=[], vocab_size=500,
                                  pretrain_seeds=1, control=None, overwrite=True))
    assert [r["model"] for r in results["results"]] == ["bert-tiny_mlm"]


def test_t_interval_against_a_hand_computation() -> None:
    # Student's t 97.5% quantiles from the standard tables
    for df, q in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=2e-4)
    # 0.50, 0.60, 0.70: mean 0.6, sd 0.1, half-width 4.3027 * 0.1 / sqrt(3) = 0.24842
    stats = t_interval([0.5, 0.6, 0.7])
    assert stats["mean"] == pytest.approx(0.6) and stats["sd"] == pytest.approx(0.1)
    assert stats["ci95"] == pytest.approx([0.6 - 0.24842, 0.6 + 0.24842], abs=1e-5)
    assert t_interval([0.5])["ci95"] is None


def test_paired_test_and_verdicts() -> None:
    # the exact sign-flip test: of the 8 sign patterns of (0.1, 0.2, 0.3) only (+,+,+) and
    # (-,-,-) reach |mean| 0.2, so p = 2/8; for (0.1, -0.2, 0.3) six patterns reach 0.0667
    assert sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)
    assert sign_flip_p([0.1, -0.2, 0.3]) == pytest.approx(0.75)

    def arm(name: str, seeds: list[dict[str, float]]) -> dict[str, Any]:
        record = {"model": name, "flops": 1e12, "pretrain_seeds": [{"scores": s} for s in seeds]}
        record["summary"] = {k: {} for k in seeds[0]}
        return record

    a = arm("a", [{"finetune/x": 0.62, "finetune/y": 0.81, "heldout/lm_loss": 3.0},
                  {"finetune/x": 0.64, "finetune/y": 0.80, "heldout/lm_loss": 3.1},
                  {"finetune/x": 0.63, "finetune/y": 0.83, "heldout/lm_loss": 2.9}])
    b = arm("b", [{"finetune/x": 0.60, "finetune/y": 0.78, "heldout/lm_loss": 3.5},
                  {"finetune/x": 0.61, "finetune/y": 0.79, "heldout/lm_loss": 2.8},
                  {"finetune/x": 0.60, "finetune/y": 0.80, "heldout/lm_loss": 3.2}])
    fine, loss = claim_verdicts(a, b)
    # pairs (seed, task): 0.02 0.03 0.03 0.01 0.03 0.03 -> mean 0.025, sd 0.008367
    # half-width t(0.975, 5) = 2.5706 x 0.008367 / sqrt(6) = 0.008781
    assert (fine["metric"], fine["pairs"]) == ("finetune", 6)
    assert fine["difference"] == pytest.approx(0.025)
    assert fine["ci95"] == pytest.approx([0.025 - 0.008781, 0.025 + 0.008781], abs=1e-5)
    assert fine["verdict"] == "reproduced" and fine["p_value"] == pytest.approx(2 / 64)
    # a loss counts negated: 0.5, -0.3, 0.3 -> the interval covers 0
    assert loss["metric"] == "heldout/lm_loss" and loss["difference"] == pytest.approx(1 / 6)
    assert loss["verdict"] == "inconclusive" and loss["seeds_to_settle"] > 3
    assert loss["flops_to_settle"] == loss["seeds_to_settle"] * 2e12
    assert claim_verdicts(b, a)[0]["verdict"] == "contradicted"
    del a["pretrain_seeds"][1]["scores"]["finetune/y"]  # a seed scored by older code
    assert claim_verdicts(a, b)[0]["keys"] == ["finetune/x"]


def test_probe_fits_a_separable_task() -> None:
    from plmkit.jobs.compare.downstream import fit_probe

    gen = torch.Generator().manual_seed(0)
    x = {k: torch.randn(n, 5, generator=gen, dtype=torch.float64)
         for k, n in (("train", 60), ("dev", 30), ("test", 30))}
    y = {k: (v[:, 0] + 0.5 * v[:, 1] > 0).long() for k, v in x.items()}
    fit = fit_probe(x, y)
    assert fit["accuracy"] >= 0.9 and fit["dev_accuracy"] >= 0.9
    assert fit["l2"] in (1e-4, 1e-3, 1e-2, 1e-1)


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    base = ["compare", "--models", "bert-tiny", "--corpus", str(corpus), "--out",
            str(tmp_path / "o")]
    assert main([*base, "--budget", "parsecs", "3"]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main([*base, "--budget", "steps", "ten"]) == 2
    assert main([*base, "--budget", "steps", "3", "--tasks", "nope"]) == 2
    assert "--tasks" in capsys.readouterr().err
    steps = [*base, "--budget", "steps", "3", "--tasks", ""]
    assert main([*steps, "--claim", "bert-tiny > electra-tiny"]) == 2
    assert "--claim 'bert-tiny > electra-tiny'" in capsys.readouterr().err
    assert main([*steps, "--pretrain-seeds", "0"]) == 2
    assert "--pretrain-seeds must be at least 1" in capsys.readouterr().err
    assert main([*steps, "--heldout", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    for option, value, problem in (("--finetune-epochs", "0", "a positive number, got 0"),
                                   ("--finetune-lr", "nan", "a positive number, got nan"),
                                   ("--finetune-examples", "-3", "0 (all) or more, got -3"),
                                   ("--batch-size", "0", "at least 1, got 0")):
        assert main([*steps, option, value]) == 2  # refused before any pretraining
        assert f"{option} must be {problem}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_refused_call_leaves_out_as_it_was(tmp_path: Path, tweets: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An empty corpus, or a bad arm anywhere in --models, is refused before any arm trains:
    a new OUT is gone again, and with --overwrite the old run is kept whole."""
    corpus, empty = tmp_path / "c.txt", tmp_path / "empty.txt"
    tweet_documents(corpus, tweets, 50)
    empty.write_text("")
    out = tmp_path / "out"
    base = ["--out", str(out), "--tasks", "", "--vocab-size", "500", "--pretrain-seeds", "1",
            "--budget", "steps", "2", "--control", "none"]
    assert main(["compare", "--models", "bert-tiny:mlm", "--corpus", str(empty), *base]) == 2
    assert "empty.txt: empty corpus" in capsys.readouterr().err and not out.exists()
    bad = "bert-tiny:mlm,bert-tiny:mlm:num_layers=abc"
    assert main(["compare", "--models", bad, "--corpus", str(corpus), *base]) == 2
    err = capsys.readouterr().err
    assert err == ("plmkit: error: --models bert-tiny_mlm_num_layers=abc: num_layers must be an "
                   "integer, not 'abc'\n")
    assert not out.exists()  # the first arm never trained
    assert main(["compare", "--models", "bert-tiny:mlm", "--corpus", str(corpus), *base]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for models, data in ((bad, corpus), ("bert-tiny:mlm", empty)):
        assert main(["compare", "--models", models, "--corpus", str(data), *base,
                     "--overwrite"]) == 2
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    capsys.readouterr()
    assert main(["compare", "--models", bad, "--corpus", str(corpus), *base]) == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # no half-made arm


def test_bf16_fine_tuning_is_part_of_the_setup(tmp_path: Path, tweets: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--finetune-bf16: fine-tuning, its dev and test evaluations and the probe features run
    under bf16 autocast; compare-setup.json names it only when on, so an OUT made without it
    (every study begun before it) keeps its setup, and the two cannot mix in one OUT."""
    from plmkit.tasks import batching, classify

    corpus = tmp_path / "c.txt"
    tweet_documents(corpus, tweets, 100)
    base = {"models": ["bert-tiny:mlm"], "corpus": [corpus], "budget": ("steps", 2),
            "tasks": [small_tasks(tmp_path)], "vocab_size": 500, "batch_size": 4,
            "seq_len": 32, "pretrain_seeds": 1, "seeds": 1, "control": None,
            "finetune_examples": 40, "finetune_epochs": 1.0}
    assert "finetune_bf16" not in setup(CompareArgs(out=tmp_path, **base))
    seen = []  # (where, autocast on) at every forward of the probe and the evaluations

    def spy(where: str, rows_by_length: Any) -> Any:
        def spied(*args: Any) -> Any:
            seen.append((where, torch.is_autocast_enabled("cpu")))
            return rows_by_length(*args)
        return spied

    monkeypatch.setattr(batching, "rows_by_length", spy("probe", batching.rows_by_length))
    monkeypatch.setattr(classify, "rows_by_length", spy("evaluate", classify.rows_by_length))
    out = tmp_path / "bf16"
    compare(CompareArgs(out=out, finetune_bf16=True, **base))
    assert json.loads((out / "compare-setup.json").read_text())["finetune_bf16"] is True
    run = out / "runs" / "bert-tiny_mlm" / "seed-0" / "finetune"
    saved = json.loads(next(run.glob("*/seed-0/finetune.json")).read_text())
    assert saved["bf16"] is True
    # the probe's three splits, the dev evaluation of the epoch, the test evaluation
    assert seen == [("probe", True)] * 3 + [("evaluate", True)] * 2
    with pytest.raises(UserError, match="finetune_bf16 True, not None"):
        compare(CompareArgs(out=out, **base))


def test_knowledge_vs_character_masking_on_chinese(tmp_path: Path) -> None:
    """Study 6 at a tiny budget: one character vocabulary, ERNIE's staged knowledge masking
    against character masking on the same preset, fine-tuned on People's Daily NER."""
    pd = build_dataset("peoples-daily", tmp_path / "pd")[0]
    corpus = tmp_path / "pd.txt"
    docs = pd.read_text(encoding="utf-8").split("\n\n")[:30]
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    ner = [cut(f, 40, tmp_path / "ner" / f.stem) for f in build_dataset("ner-zh", tmp_path)]
    args = CompareArgs(models=["ernie-tiny:ernie", "ernie-tiny:mlm+nsp"], corpus=[corpus],
                       out=tmp_path / "out", budget=("steps", 6), tokenizer_kind="char",
                       tasks=[":".join(["tag", *map(str, ner)])], vocab_size=3000,
                       batch_size=4, seq_len=32, seeds=1, finetune_examples=40,
                       finetune_epochs=1.0, pretrain_seeds=1, control=None,
                       heldout=[corpus], heldout_batches=1)
    rows = {r["model"]: r for r in compare(args)["results"]}
    assert Tokenizer.load(args.out / "tokenizer").kind == "char"
    ernie, chars = rows["ernie-tiny_ernie"], rows["ernie-tiny_mlm+nsp"]
    assert (ernie["objective"], chars["objective"]) == ("ernie", "mlm+nsp")
    # the masking level changes what is predicted, not the work of a step
    assert ernie["flops_per_step"] == chars["flops_per_step"] and ernie["steps"] == 6
    for r in (ernie, chars):
        scores = r["pretrain_seeds"][0]["scores"]
        assert 0.0 <= scores["finetune/tag/tag"] <= 1.0 and "probe/tag/tag" not in scores
        # both train an NSP head: scored on held-out NSP and SOP pairs
        assert {"heldout/nsp_pairs_accuracy", "heldout/sop_pairs_accuracy"} <= set(scores)


def test_precision_follows_the_hardware_unless_an_entry_says(tmp_path: Path) -> None:
    args = CompareArgs(models=[], corpus=[tmp_path / "c.txt"], out=tmp_path, budget=("steps", 1))
    auto = pretrain_args(parse_entry("bert-tiny:mlm"), args, tmp_path, 1, tmp_path / "a")
    fp32 = pretrain_args(parse_entry("bert-tiny:mlm:bf16=false"), args, tmp_path, 1, tmp_path)
    assert auto.bf16 is None and fp32.bf16 is False
    own = pretrain_args(parse_entry("bert-tiny:mlm:lr=2e-4:warmup=3"), args, tmp_path, 50,
                        tmp_path)
    assert (auto.lr, auto.warmup, own.lr, own.warmup) == (args.lr, 1, 2e-4, 3)  # an arm's own


def test_a_claim_is_held_touched_and_taken_over(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A held claim names its holder to others, is touched while held and gone after; a live
    process of this boot keeps it untouched (paused), one of another machine or boot (pid 1
    alive here says nothing) keeps it only while touched."""
    import os
    import socket

    from plmkit.jobs.compare import records as kept

    monkeypatch.setattr(kept, "HEARTBEAT", 0.02)
    path = tmp_path / "arm" / ".seed-0.claim"
    with kept.claim(tmp_path, "arm", 0) as holder:
        assert holder is None and json.loads(path.read_text())["pid"] == os.getpid()
        monkeypatch.setattr(kept, "HEARTBEAT", 60.0)
        time.sleep(0.1)  # the heartbeat's last touch before it sleeps for a minute
        os.utime(path, (0, 0))
        with kept.claim(tmp_path, "arm", 0) as other:  # untouched for 56 years, but alive
            assert other == f"{socket.gethostname()} pid {os.getpid()}"
        monkeypatch.setattr(kept, "HEARTBEAT", 0.02)
    with kept.claim(tmp_path, "arm", 0) as holder:
        os.utime(path, (0, 0))
        time.sleep(0.2)
        assert time.time() - path.stat().st_mtime < 5  # the heartbeat
    assert not path.exists()
    path.write_text(json.dumps({"host": "elsewhere", "boot": "another", "pid": 1, "since": 0}))
    with kept.claim(tmp_path, "arm", 0) as holder:
        assert holder == "elsewhere pid 1"
    os.utime(path, (0, 0))
    with kept.claim(tmp_path, "arm", 0) as holder:
        assert holder is None and json.loads(path.read_text())["host"] == socket.gethostname()


def test_processes_share_a_study_through_its_records(tmp_path: Path, tweets: list[str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A seed another live process holds is passed by: the call trains the next seed, then
    waits (or, with --no-wait, stops without a report); when the holder dies, it takes the
    seed over. No claim is left behind."""
    import socket
    import subprocess
    import threading

    from plmkit.jobs.compare import run

    base = records_study(tmp_path, tweets)
    corpus, records = base["corpus"][0], base["records"]
    compare(CompareArgs(out=tmp_path / "a", pretrain_seeds=1, **base))
    arm = records / "bert-tiny_mlm"
    other = subprocess.Popen(["sleep", "600"])
    (arm / ".seed-1.claim").write_text(json.dumps({"host": socket.gethostname(),
                                                   "boot": run.kept.this_boot(),
                                                   "pid": other.pid, "since": 0}))

    assert main(["compare", "--models", "bert-tiny:mlm", "--corpus", str(corpus), "--tasks", "",
                 "--vocab-size", "500", "--pretrain-seeds", "2", "--control", "none",
                 "--budget", "steps", "4", "--heldout", str(corpus), "--heldout-batches", "1",
                 "--batch-size", "4", "--seq-len", "32", "--records", str(records),
                 "--out", str(tmp_path / "c"), "--no-wait"]) == 0
    assert "no report yet" in capsys.readouterr().out
    assert not (tmp_path / "c" / "results.json").exists()
    assert not (tmp_path / "c" / "runs" / "bert-tiny_mlm" / "seed-1").exists()

    def end_the_holder_after_seed_2() -> None:
        while not (arm / "seed-2.json").is_file():
            time.sleep(0.05)
        other.kill()
        other.wait()

    monkeypatch.setattr(run, "POLL_SECONDS", 0.05)
    ender = threading.Thread(target=end_the_holder_after_seed_2)
    ender.start()
    result = compare(CompareArgs(out=tmp_path / "b", pretrain_seeds=3, **base))
    ender.join()
    assert f"bert-tiny_mlm seed 1 is held by {socket.gethostname()} pid {other.pid}" in (
        capsys.readouterr().err)
    runs = tmp_path / "b" / "runs" / "bert-tiny_mlm"
    assert not (runs / "seed-0").exists()
    assert (runs / "seed-2" / "compare.json").stat().st_mtime < (
        runs / "seed-1" / "compare.json").stat().st_mtime
    assert [s["seed"] for s in result["results"][0]["pretrain_seeds"]] == [0, 1, 2]
    assert not list(records.rglob("*.claim"))


def test_calls_started_together_share_vocabulary_and_seeds(tmp_path: Path,
                                                           tweets: list[str]) -> None:
    """Two calls started at once on empty records: one trains the vocabulary, both use it;
    each seed is pretrained once, in one of the two run folders; both report both seeds."""
    import subprocess
    import sys

    corpus = tmp_path / "c.txt"
    tweet_documents(corpus, tweets, 100)
    records = tmp_path / "records"
    cli = [sys.executable, "-m", "plmkit.cli", "compare", "--models", "bert-tiny:mlm",
           "--corpus", str(corpus), "--tasks", "", "--vocab-size", "500", "--pretrain-seeds",
           "2", "--control", "none", "--budget", "steps", "4", "--heldout", str(corpus),
           "--heldout-batches", "1", "--batch-size", "4", "--seq-len", "32", "--records",
           str(records)]
    calls = [subprocess.Popen([*cli, "--out", str(tmp_path / out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for out in "ab"]
    assert [c.wait(timeout=300) for c in calls] == [0, 0], [c.stderr.read() for c in calls]
    vocabulary = (records / "tokenizer" / "tokenizer.json").read_bytes()
    assert all((tmp_path / out / "tokenizer" / "tokenizer.json").read_bytes() == vocabulary
               for out in "ab")
    trained = sorted(p.parent.name for p in tmp_path.glob("[ab]/runs/bert-tiny_mlm/seed-*/"
                                                           "compare.json"))
    assert trained == ["seed-0", "seed-1"]
    for out in "ab":
        result = json.loads((tmp_path / out / "results.json").read_text())
        assert [s["seed"] for s in result["results"][0]["pretrain_seeds"]] == [0, 1]
