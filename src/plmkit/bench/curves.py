"""`plmkit bench --seq-lens`: the suite's records at several sequence lengths, as scaling curves
(tokens/s and peak step memory against sequence length, one line per model and side) in a
PNG and in BENCHMARKS.md's generated curves section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plmkit.bench.suite import Record

MARKERS = ("<!-- plmkit bench curves: begin -->", "<!-- plmkit bench curves: end -->")
SIDES = (("plmkit", "plmkit_tok_s", "plmkit_peak_mb", "-"),
         ("transformers", "hf_tok_s", "hf_peak_mb", "--"))


def plot(records: list[Record], path: Path) -> None:
    """Two panels against sequence length (log 2 axis): tokens/s and peak MB of a step, a
    colour per (model, mode, dtype); a third of tokens/s against the model, a colour per
    length (`_by_model`). Solid plmkit, dashed transformers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory, models) = plt.subplots(1, 3, figsize=(18, 4.5))
    keys = list(dict.fromkeys((r.family, r.size, r.mode, r.dtype) for r in records))
    for i, key in enumerate(keys):
        rows = sorted((r for r in records if (r.family, r.size, r.mode, r.dtype) == key),
                      key=lambda r: r.seq)
        seqs = [r.seq for r in rows]
        label = f"{key[0]}-{key[1]}" + ("" if len(keys) == len({k[:2] for k in keys})
                                        else f" {key[2]} {key[3]}")
        for side, tok_s, mb, style in SIDES:
            speed.plot(seqs, [getattr(r, tok_s) for r in rows], style, color=f"C{i}",
                       marker="o", label=f"{label} {side}")
            peaks = [getattr(r, mb) for r in rows]
            if None not in peaks:
                memory.plot(seqs, peaks, style, color=f"C{i}", marker="o")
    batch = ", ".join(sorted({str(r.batch) for r in records}))
    seqs = sorted({r.seq for r in records})
    for ax, title in ((speed, "tokens/s (higher is better)"),
                      (memory, "peak MB of one step above weights and optimizer state")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqs, [str(s) for s in seqs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel(f"sequence length (batch {batch})")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    speed.legend(fontsize=7, ncol=2)
    _by_model(models, records)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_model(ax: Any, records: list[Record]) -> None:
    """Tokens/s against the model (in the records' order, e.g. tiny to large), a colour per
    sequence length; the first (mode, dtype) measured."""
    first = (records[0].mode, records[0].dtype)
    rows = [r for r in records if (r.mode, r.dtype) == first]
    names = list(dict.fromkeys(f"{r.family}-{r.size}" for r in rows))
    for i, seq in enumerate(sorted({r.seq for r in rows})):
        at = {f"{r.family}-{r.size}": r for r in rows if r.seq == seq}
        xs = [x for x, name in enumerate(names) if name in at]
        for side, tok_s, _, style in SIDES:
            ax.plot(xs, [getattr(at[names[x]], tok_s) for x in xs], style, color=f"C{i}",
                    marker="o", label=f"{seq} {side}")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yscale("log")
    ax.set_title(f"tokens/s by model ({first[0]}, {first[1]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, title="sequence length")
