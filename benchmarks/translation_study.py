"""Study 7 of docs/compare.md: the original Transformer (Vaswani et al. 2017) on Bible English ->
Spanish against the copy-the-source floor, over several pretraining seeds (issue 25).

    .venv/bin/python benchmarks/translation_study.py --out /work/studies/translation-en-es

Builds the verse pairs (`plmkit.data.parallel.build_bible_pairs`), trains `--model` with the
`seq2seq` objective for `--flops` model FLOPs once per seed (an interrupted run resumes, a
finished one is reused), after a 1-step control that trains the shared BPE vocabulary, then
scores the first `--limit` test pairs with beam search: BLEU and chrF (sacrebleu), mean and 95%
interval over seeds, against copying the English source. The claim holds when the interval's
lower end clears the floor on both metrics. Writes results.json and results.md into OUT.

With `--records DIR` (as `plmkit compare --records`), each finished run's scores, the shared
vocabulary and the steps are also kept in DIR (a few hundred KB, no weights): a later call from
a new OUT, on another machine, takes them and trains only the seeds DIR lacks.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from plmkit.data.parallel import build_bible_pairs
from plmkit.errors import UserError
from plmkit.jobs import compare
from plmkit.jobs.compare import records as kept
from plmkit.jobs.compare.stats import t_interval
from plmkit.jobs.pretrain import PretrainArgs, pretrain
from plmkit.jobs.seq2seq import evaluate_translation

METRICS = ("bleu", "chrf")
DONE = "study-done.json"


def train(a: argparse.Namespace, data: dict[str, Path], seed: int, steps: int) -> Path:
    """The run of `seed` (`steps` optimizer steps), trained or resumed unless finished."""
    out = a.out / "runs" / (f"seed-{seed}" if steps > 1 else "control")
    if not (out / DONE).is_file():
        pretrain(run_args(a, data, out, seed, steps, (out / "checkpoints").is_dir()))
        (out / DONE).write_text(json.dumps({"steps": steps}) + "\n")
    return out


def run_args(a: argparse.Namespace, data: dict[str, Path], out: Path, seed: int, steps: int,
             resume: bool = False) -> PretrainArgs:
    """The pretraining options of one run; the control trains the vocabulary the others use."""
    shared = a.out / "runs" / "control" / "tokenizer"
    vocab = {"tokenizer": shared} if out.name != "control" else {"vocab_size": a.vocab_size}
    return PretrainArgs(model=a.model, objective="seq2seq", corpus=[data["train"]],
                        heldout=[data["dev"]], out=out, steps=steps, seed=seed,
                        batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr, warmup=a.warmup,
                        eval_every=max(1, steps // 4), save_every=max(1, steps // 8),
                        log_every=50, progress=False, resume=resume, **vocab)


def scored(a: argparse.Namespace, data: dict[str, Path], seed: int, steps: int) -> dict[str, float]:
    """The scores of one run (`steps` 1: the control), from `--records` when kept there, else
    trained and scored (and kept)."""
    name = f"seed-{seed}" if steps > 1 else "control"
    if a.records is not None and (record := kept.read_json(a.records / f"{name}.json")):
        return record
    run = train(a, data, seed, steps)
    scores = score(run, data, a.limit)
    if a.records is not None:
        if steps == 1:  # the control trained the vocabulary the seeds share
            kept.start_records(a.records, setup_of(a), run / "tokenizer")
        kept.write_json(a.records / f"{name}.json", scores)
    return scores


def restore(a: argparse.Namespace) -> None:
    """Check `--records` against this call's options; copy the kept vocabulary and steps into
    OUT where it has none."""
    kept.check_records(a.records, setup_of(a), a.out)
    shared = a.out / "runs" / "control" / "tokenizer"
    kept.restore_tokenizer(a.records, shared)
    if (a.records / "steps.json").is_file() and not (a.out / "steps.json").is_file():
        a.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(a.records / "steps.json", a.out / "steps.json")


def setup_of(a: argparse.Namespace) -> dict[str, Any]:
    """What two calls sharing `--records` must agree on."""
    return {k: getattr(a, k) for k in ("model", "flops", "limit", "vocab_size", "batch_size",
                                       "seq_len", "lr", "warmup")}


def score(run: Path, data: dict[str, Path], limit: int) -> dict[str, float]:
    """Test BLEU / chrF of `run` (and of copying the source), cached in the run folder."""
    cached = run / f"test-{limit}.json"
    if not cached.is_file():
        cached.write_text(json.dumps(evaluate_translation(run, data["test"], limit=limit)) + "\n")
    return json.loads(cached.read_text())


def summary(seeds: list[dict[str, float]], control: dict[str, float]) -> dict[str, Any]:
    """Per-metric intervals over seeds against the copy floor, and the verdict."""
    floor = {m: seeds[0][f"copy_{m}"] for m in METRICS}
    stats = {m: t_interval([s[m] for s in seeds]) for m in METRICS}
    clears = all(stats[m]["ci95"] is not None and stats[m]["ci95"][0] > floor[m]
                 for m in METRICS)
    below = all(stats[m]["ci95"] is not None and stats[m]["ci95"][1] < floor[m]
                for m in METRICS)
    outcome = "reproduced" if clears else "contradicted" if below else "inconclusive"
    return {"metrics": stats, "copy_floor": floor,
            "control": {m: control[m] for m in METRICS} | {"control": True},
            "verdicts": [{"claim": "Transformer > copying the source (BLEU and chrF)",
                          "verdict": outcome}]}


def compare_interval(stats: dict[str, Any]) -> str:
    """"mean (low-high)", or the mean alone for one seed."""
    ci = stats["ci95"]
    return f"{stats['mean']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")


def markdown(results: dict[str, Any]) -> str:
    """The table and the verdict line."""
    s = results["summary"]
    rows = ["| | BLEU | chrF |", "|---|---:|---:|",
            "| Transformer, mean (95% interval) | "
            + " | ".join(compare_interval(s["metrics"][m]) for m in METRICS) + " |"]
    for i, seed in enumerate(results["seeds"]):
        rows.append(f"| seed {i} | {seed['bleu']:.2f} | {seed['chrf']:.2f} |")
    rows.append(f"| control (1 step) | {s['control']['bleu']:.2f} | {s['control']['chrf']:.2f} |")
    rows.append(f"| copy the source | {s['copy_floor']['bleu']:.2f} | "
                f"{s['copy_floor']['chrf']:.2f} |")
    about = ", ".join(f"{k}: {v}" for k, v in results["setup"].items())
    verdict = s["verdicts"][0]
    return (f"Setup: {about}.\n\n" + "\n".join(rows)
            + f"\n\n**{verdict['verdict']}**: {verdict['claim']}.\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="transformer-tiny")
    p.add_argument("--flops", type=float, default=3e14, help="model FLOPs per seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--limit", type=int, default=500, help="test pairs scored")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.0, help="scale of the inverse-sqrt schedule")
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--records", type=Path, help="keep (and reuse) each run's scores here")
    a = p.parse_args(argv)
    data_dir = a.out / "data"
    data = ({s: data_dir / f"{s}.tsv" for s in ("train", "dev", "test")}
            if (data_dir / "test.tsv").is_file() else build_bible_pairs(data_dir))
    if a.records is not None:
        restore(a)
    control = scored(a, data, 0, 1)  # trains the shared vocabulary too
    steps = budget_steps(a, data)
    seeds = [scored(a, data, seed, steps) for seed in range(a.seeds)]
    setup = {"model": a.model, "data": f"Bible EN->ES verse pairs, {a.limit} test pairs",
             "training": f"{steps} steps x {a.batch_size} pairs of <= {a.seq_len} tokens, "
                         f"lr scale {a.lr:g}, warmup {a.warmup}, {a.flops:.1e} FLOPs a seed",
             "seeds": a.seeds, "machine": compare.machine()}
    results = {"setup": setup, "steps": steps, "seeds": seeds,
               "summary": summary(seeds, control)}
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(results))
    print((a.out / "results.md").read_text(), end="")


def budget_steps(a: argparse.Namespace, data: dict[str, Path]) -> int:
    """Steps that `--flops` buys (one step's FLOPs measured once, kept in OUT)."""
    state = a.out / "steps.json"
    if not state.is_file():
        per_step = compare.training_step_flops(run_args(a, data, a.out / "probe", 0, 1))
        state.write_text(json.dumps({"flops_per_step": per_step,
                                     "steps": max(1, round(a.flops / per_step))}) + "\n")
    if a.records is not None and not (a.records / "steps.json").is_file():
        shutil.copy(state, a.records / "steps.json")
    return json.loads(state.read_text())["steps"]


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        raise SystemExit(f"translation_study: {e}") from None
