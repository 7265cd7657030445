"""What `plmkit compare` writes: results.json (`setup`, `results`: one record per arm,
`verdicts`), results.md (the same tables and the verdict lines) and the plots
(`heldout_vs_flops.png`: learning curves on the fixed held-out set; `score_vs_flops.png`:
probe and fine-tuning scores; `loss_vs_flops.png`: the training loss)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from plmkit.jobs.compare.stats import t_interval, verdict

# verdict groups: a claim is tested on each group that both arms have, higher is better
# (a `*_loss` key counts negated); `finetune` and `probe` pair over pretraining seeds x tasks
GROUPS = ("finetune/", "probe/", "heldout/mlm_accuracy", "heldout/rtd_accuracy",
          "heldout/rtd_auc", "heldout/nsp_pairs_accuracy", "heldout/sop_pairs_accuracy",
          "heldout/lm_loss")
PRECISION = {True: "bf16", False: "float32"}  # a seed's pretraining (None: not recorded)


def write_report(arms: list[dict[str, Any]], claims: list[tuple[str, str]],
                 setup: dict[str, Any], out: Path) -> dict[str, Any]:
    """Summaries, verdicts and every output file; returns results.json's content."""
    for arm in arms:
        keys = sorted({k for s in arm["pretrain_seeds"] for k in s["scores"]})
        arm["summary"] = {k: t_interval([s["scores"][k] for s in arm["pretrain_seeds"]
                                         if k in s["scores"]]) for k in keys}
    by_name = {a["model"]: a for a in arms}
    control = [a["model"] for a in arms if a["control"]]
    pairs = [(a["model"], c) for c in control for a in arms if not a["control"]]
    verdicts = [v for a, b in dict.fromkeys([*claims, *pairs])
                for v in claim_verdicts(by_name[a], by_name[b])]
    setup = {**setup, "torch": torch.__version__, "machine": machine()}
    results = {"setup": setup, "results": arms, "verdicts": verdicts}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    plot(arms, out)
    return results


def claim_verdicts(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts of "`a` scores higher than `b`", one per group both arms have; a score
    that some seed lacks (a study resumed on code that scores more) is left out."""
    out = []
    seeds = min(len(a["pretrain_seeds"]), len(b["pretrain_seeds"]))
    common = set.intersection(*(set(s["scores"]) for arm in (a, b)
                                for s in arm["pretrain_seeds"][:seeds]))
    for group in GROUPS:
        keys = sorted(k for k in common if k.startswith(group))
        if not keys:
            continue
        sign = -1.0 if group.endswith("_loss") else 1.0
        diffs = [sign * (a["pretrain_seeds"][s]["scores"][k] - b["pretrain_seeds"][s]["scores"][k])
                 for s in range(seeds) for k in keys]
        out.append({"claim": f"{a['model']} > {b['model']}", "arms": [a["model"], b["model"]],
                    "metric": group.rstrip("/"), "keys": keys, **verdict(diffs, len(keys))})
        if "seeds_to_settle" in out[-1] and out[-1]["seeds_to_settle"] is not None:
            out[-1]["flops_to_settle"] = out[-1]["seeds_to_settle"] * (a["flops"] + b["flops"])
    return out


def machine() -> str:
    """The CPU model (architecture where /proc/cpuinfo is missing) and torch's threads."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines
                if line.startswith("model name")), platform.machine())
    return f"{cpu}, {torch.get_num_threads()} threads"


def interval(stats: dict[str, Any] | None) -> str:
    """`0.612 [0.581, 0.643]` (a single seed: the value alone)."""
    if stats is None:
        return ""
    if stats["ci95"] is None:
        return f"{stats['mean']:.4f}"
    return f"{stats['mean']:.4f} [{stats['ci95'][0]:.4f}, {stats['ci95'][1]:.4f}]"


def verdict_line(v: dict[str, Any], seeds: str = "pretraining seeds") -> str:
    """One line: the claim, the metric, the difference with its interval, the outcome, and
    how many `seeds` per arm would settle an inconclusive one (with their FLOPs if known)."""
    ci = "no interval (one pair)" if v["ci95"] is None else \
        f"95% CI [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
    line = (f"{v['claim']} on {v['metric']}: {v['difference']:+.4f}, {ci}, {v['pairs']} pairs, "
            f"sign-flip p = {v['p_value']:.3f}: **{v['verdict']}**")
    if v.get("seeds_to_settle"):
        cost = (f" ({v['flops_to_settle']:.2g} FLOPs for both arms)"
                if "flops_to_settle" in v else "")
        line += f"; about {v['seeds_to_settle']} {seeds} per arm{cost} would settle it"
    return line


def markdown(results: dict[str, Any]) -> str:
    """results.md: what was run, the per-arm table, the per-seed table, the verdicts."""
    arms, setup = results["results"], results["setup"]
    keys = sorted({k for a in arms for k in a["summary"]})
    head = ["model", "objective", "params", "steps", "PFLOPs", *keys]
    rows = [[a["model"] + (" (control)" if a["control"] else ""), a["objective"],
             f"{a['params'] / 1e6:.2f}M", str(a["steps"]), f"{a['flops'] / 1e15:.4f}",
             *[interval(a["summary"].get(k)) for k in keys]] for a in arms]
    baselines = setup.get("majority_baseline", {})
    if baselines:
        rows.append(["majority class", "", "", "", "",
                     *[f"{baselines[k.split('/', 1)[1]]:.4f}" if k.split("/", 1)[1] in baselines
                       else "" for k in keys]])
    seed_rows = [[a["model"], str(s["seed"]), PRECISION.get(s.get("bf16"), ""),
                  f"{s['final_loss']:.4f}",
                  *[f"{s['scores'][k]:.4f}" if k in s["scores"] else "" for k in keys]]
                 for a in arms for s in a["pretrain_seeds"]]
    lines = [
        "Setup: " + ", ".join(f"{k}: {v}" for k, v in setup.items()) + ".",
        "",
        "Each score: the mean over pretraining seeds and its 95% t-interval; `finetune/*` "
        "is each pretraining seed's mean over its fine-tuning seeds, `probe/*` a logistic "
        "regression on frozen mean-pooled features, `heldout/*` the fixed held-out mask set "
        "at the end of pretraining.",
        "",
        *table(head, rows),
        "",
        "Per pretraining seed:",
        "",
        *table(["model", "seed", "precision", "final training loss", *keys], seed_rows),
        "",
        "Verdicts (difference A - B, paired over pretraining seeds x tasks; a loss counts "
        "negated, so positive means A is better):",
        "",
        *[f"- {verdict_line(v)}" for v in results["verdicts"]],
    ]
    return "\n".join(lines) + "\n"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(r) + " |" for r in rows]]


def plot(arms: list[dict[str, Any]], out: Path) -> None:
    """The three figures of the module docstring."""
    curve_keys = sorted({k for a in arms for s in a["pretrain_seeds"] for p in s["curve"]
                         for k in p if k not in ("step", "flops")})
    held = [k for k in curve_keys if k != "loss"]
    learning_curves(arms, held or ["loss"], out / "heldout_vs_flops.png")
    learning_curves(arms, ["loss"], out / "loss_vs_flops.png")
    scores = sorted({k for a in arms for k in a["summary"] if not k.startswith("heldout/")})
    fig = Figure(figsize=(4.5 * max(1, len(scores)), 3.8), layout="constrained")
    for ax, key in zip(fig.subplots(1, max(1, len(scores)), squeeze=False)[0], scores,
                       strict=False):
        for a in arms:
            if (s := a["summary"].get(key)) is not None:
                err = 0.0 if s["ci95"] is None else s["mean"] - s["ci95"][0]
                ax.errorbar(a["flops"], s["mean"], yerr=err, fmt="o", capsize=3,
                            label=a["model"])
        ax.set(xscale="log", xlabel="pretraining FLOPs", title=key)
        ax.legend(fontsize="x-small")
    fig.savefig(out / "score_vs_flops.png", dpi=100)


def learning_curves(arms: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """One panel per key: its mean over pretraining seeds against FLOPs, the seeds' range
    shaded."""
    fig = Figure(figsize=(4.5 * len(keys), 3.8), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        for a in arms:
            seeds = [[p.get(key) for p in s["curve"]] for s in a["pretrain_seeds"]]
            if not seeds or any(v is None for c in seeds for v in c) or \
                    len({len(c) for c in seeds}) != 1:
                continue
            x = [p["flops"] for p in a["pretrain_seeds"][0]["curve"]]
            y = np.array(seeds, dtype=float)  # (seeds, points)
            ax.plot(x, y.mean(0), marker=".", label=a["model"])
            ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
        ax.set(xscale="log", xlabel="pretraining FLOPs", title=key)
        ax.legend(fontsize="x-small")
    fig.savefig(path, dpi=100)
