"""The figure docs/compare.md opens with: every claim of every finished study, its difference
(A - B, positive = A better) with the 95% interval over pretraining seeds, one panel per kind of
score, coloured by verdict.

    .venv/bin/python benchmarks/claims_plot.py docs/studies --out docs/studies/claims.png

Reads each `results.json` under the folders given: `plmkit compare`'s and the distillation
studies' (their `verdicts`) and the domain-adaptation study's (`tasks.*.difference`). Claims
against the 1-step control are drawn too: a result counts only if it beats its control.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

# the kinds of score drawn, each a panel: accuracies and scores where higher is better
PANELS = {"finetune": "fine-tuning score", "probe": "linear probe score",
          "heldout/mlm_accuracy": "held-out MLM accuracy",
          "dev accuracy": "distilled student's dev accuracy (intervals over its seeds)"}
COLOURS = {"reproduced": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}


@dataclass(frozen=True)
class Row:
    study: str
    claim: str
    metric: str
    difference: float
    low: float
    high: float
    verdict: str


def rows(results: Path, root: Path) -> Iterator[Row]:
    """The claims of one results.json, as rows of the panels they belong to."""
    data: dict[str, Any] = json.loads(results.read_text())
    study = str(results.parent.relative_to(root.parent))
    for v in data.get("verdicts", []):
        if v["metric"] in PANELS:
            yield Row(study, short(v["claim"]), v["metric"], v["difference"], *v["ci95"],
                      v["verdict"])
    for task, scores in data.get("tasks", {}).items():  # before / after (domain adaptation)
        if isinstance(d := scores.get("difference"), dict) and "ci95" in d:
            yield Row(study, f"after > before ({task})", "finetune", d["difference"], *d["ci95"],
                      d["verdict"])


def short(claim: str) -> str:
    """An arm name of the claim with its preset's common options dropped, for a tick label."""
    return (claim.replace("_mlm_num_layers=12_embedding_size=128", " (12 layers)")
            .replace("_electra_generator_training=adversarial", " (adversarial)")
            .replace(" beats fine-tuned on the labels", " > fine-tuned").replace("_", " "))


def plot(all_rows: list[Row], out: Path) -> None:
    """One panel per kind of score, one line per claim: the difference and its interval."""
    panels = [m for m in PANELS if any(r.metric == m for r in all_rows)]
    heights = [sum(r.metric == m for r in all_rows) for m in panels]
    fig = Figure(figsize=(10, 1.2 + 0.32 * sum(heights) + 0.6 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, metric in zip(axes, panels, strict=True):
        mine = [r for r in all_rows if r.metric == metric]
        for y, r in enumerate(mine):
            ax.errorbar(r.difference, y, xerr=[[r.difference - r.low], [r.high - r.difference]],
                        fmt="o", color=COLOURS.get(r.verdict, "black"), capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(mine)), [f"{r.study}: {r.claim}" for r in mine], fontsize=7)
        ax.set_ylim(len(mine) - 0.5, -0.5)
        ax.set_title(f"{PANELS[metric]}: A - B with its 95% interval", fontsize=9)
    handles = [axes[0].plot([], [], "o", color=c, label=v)[0] for v, c in COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/studies/claims.png"))
    a = p.parse_args()
    roots = dict.fromkeys(f for f in a.folders if f.is_dir())  # a folder given twice: once
    found = [r for root in roots for f in sorted(root.rglob("results.json")) for r in rows(f, root)]
    if not found:
        raise SystemExit(f"no claims in {', '.join(map(str, a.folders))}")
    plot(found, a.out)
    print(f"{len(found)} claims -> {a.out}")


if __name__ == "__main__":
    main()
