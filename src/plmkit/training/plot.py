"""Plot a run's `metrics.jsonl`: one panel per metric, train and held-out (`eval_*`) curves."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plmkit.errors import UserError, where


def check_image_name(path: Path, option: str) -> None:
    """A UserError unless `path` ends in a format matplotlib writes (.png, .svg, .pdf, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise UserError(f"{option} {path}: not an image file name; end it in .png, .svg, .pdf "
                        f"or another of {', '.join(sorted(formats))}")


def default_keys(names: set[str]) -> list[str]:
    """The metrics a plot shows unless told: "loss" and every accuracy and AUC (ELECTRA's
    `disc_auc`) among the logged `names`."""
    return ["loss", *sorted(k for k in names if k.endswith(("accuracy", "auc")))]


def plot_metrics(
    metrics_jsonl: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    keys: Sequence[str] | None = None,
) -> Path:
    """Draw `keys` (default: `default_keys`) against step.

    Each panel shows the train value of a key and its `eval_` value when logged.
    """
    records = _read(Path(metrics_jsonl))
    names = {k.removeprefix("eval_") for r in records for k in r if k != "step"}
    if keys is None:
        keys = default_keys(names)
    missing = [k for k in keys if k not in names]
    if missing:
        raise UserError(f"{metrics_jsonl}: no metric named {', '.join(missing)}")
    from matplotlib.figure import Figure  # imported here: matplotlib adds ~0.3 s to start-up

    fig = Figure(figsize=(5 * len(keys), 3.5), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        for name, label in ((key, "train"), (f"eval_{key}", "eval")):
            logged = [r for r in records if r.get(name) is not None]
            if logged:
                steps = [r["step"] for r in logged]
                ax.plot(steps, [r[name] for r in logged], label=label, marker=".")
        ax.set(xlabel="step", title=key)
        ax.legend()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"{path}: no such metrics file")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{where(path, number)}: not JSON ({e.msg})") from None
    if not records:
        raise UserError(f"{path}: no metrics logged yet")
    return records
