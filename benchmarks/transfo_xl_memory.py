"""Study 5 of docs/compare.md: Transformer-XL evaluation with memory against the vanilla
sliding window (Dai et al. 2019, section 3.2 and Table 9), perplexity and speed.

    .venv/bin/python benchmarks/transfo_xl_memory.py --out docs/studies/transfo-xl-memory

Pretrains a `transfo-xl-tiny` (segments of `--seq-len` tokens, `--mem-len` memory states) for
`--flops` model FLOPs on the train chapters of the World English Bible (Debian
`sword-text-web`), then evaluates the start of its test chapters at each attention length C of
`--contexts` (default: 128 and the paper's Table 9 lengths 800, 1,800, 3,800), both ways, on
the same C + 1 + `--windows` tokens: with memory, segment by segment, each attending to
C - segment cached states; and sliding a window of C tokens one token at a time, recomputing
the whole window for each prediction (one pass for the first C predictions, then `--windows`
windows: the sliding cost grows as windows x C, so a fixed number of windows keeps 3,800
affordable on a CPU). Each method runs once under a FLOP counter (the warm-up, untimed), then
`--reps` times interleaved (memory, sliding, memory, ...); tokens/s are medians over the reps,
over all predictions and in the steady state, once each prediction sees the whole attention
length (memory full, or a full window). The speed-up is the steady state's: Table 9 times long
texts, where the cheaper start does not count.
Writes results.json, results.md and memory_vs_sliding.png into OUT. The runs and every
finished evaluation are kept in `--work`, so a second call resumes where the first stopped.
The unigram perplexity of the same tokens (train-chapter frequencies, add-one) is the floor a
model that ignores its context reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import plmkit
from plmkit.data.bible import chapter_splits, read_bible
from plmkit.jobs import compare
from plmkit.jobs.pretrain import PretrainArgs, pretrain
from plmkit.objectives.clm import LMEvaluation, evaluate_sliding, evaluate_with_memory
from plmkit.tokenizers import Tokenizer

METHODS = ("memory", "sliding")


def bible_corpus(out_dir: Path) -> tuple[Path, list[str]]:
    """train.txt (the train chapters of the WEB Bible, one verse a line, a blank line between
    chapters) and the verses of the test chapters, in the Bible's order."""
    verses = read_bible("web")
    splits = chapter_splits(verses, seed=0)
    chapters: dict[tuple[str, int], list[str]] = {}
    for v in verses:
        if (v.book, v.chapter) in splits["train"]:
            chapters.setdefault((v.book, v.chapter), []).append(v.text)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = out_dir / "train.txt"
    text = "\n\n".join("\n".join(c) for c in chapters.values()) + "\n"
    if not train.is_file() or train.read_text(encoding="utf-8") != text:  # kept for --resume
        train.write_text(text, encoding="utf-8")
    return train, [v.text for v in verses if (v.book, v.chapter) in splits["test"]]


def train_model(vocab: PretrainArgs, flops: float) -> PretrainArgs:
    """The model's run for `flops` model FLOPs (trained, resumed or reused), after a 1-step run
    of `vocab` that trains the tokenizer and gives a step to count FLOPs on (kept beside it)."""
    work = vocab.out.parent
    if not (vocab.out / "model.safetensors").is_file():
        pretrain(PretrainArgs(**{**vars(vocab), "overwrite": True}))
    state = work / "steps.json"
    if not state.is_file():
        per_step = compare.training_step_flops(PretrainArgs(
            **{**vars(vocab), "out": work / "probe", "tokenizer": vocab.out / "tokenizer"}))
        state.write_text(json.dumps({"flops_per_step": per_step,
                                     "steps": round(flops / per_step)}) + "\n")
        shutil.rmtree(work / "probe")
    steps = json.loads(state.read_text())["steps"]
    out = work / "model"
    run = PretrainArgs(**{**vars(vocab), "out": out, "steps": steps, "warmup": steps // 10,
                          "save_every": max(1, steps // 20), "tokenizer": vocab.out / "tokenizer",
                          "resume": (out / "checkpoints").is_dir()})
    if not (out / "done.json").is_file():
        pretrain(run)
        (out / "done.json").write_text(json.dumps({"steps": steps}) + "\n")
    return run


def evaluate(method: str, model: nn.Module, text: torch.Tensor, segment: int,
             context: int) -> LMEvaluation:
    """One evaluation of `text` (N,) with memory (`context - segment` cached states) or with a
    sliding window of `context` tokens (fewer windows a batch as they grow, to bound memory)."""
    if method == "memory":
        model.config.mem_len = context - segment
        return evaluate_with_memory(model, text, seq_len=segment)
    return evaluate_sliding(model, text, context=context, batch_size=max(1, 2**15 // context))


def unigram_perplexity(train: list[int], heldout: torch.Tensor, vocab: int) -> float:
    """Perplexity of `heldout` under the add-one unigram distribution of `train`."""
    counts = torch.bincount(torch.tensor(train), minlength=vocab).double() + 1  # (V,)
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[heldout[1:]].mean().item())


def kept(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON in `path`, or `make()`'s result written there first (a rerun resumes)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(make()) + "\n")
    return json.loads(path.read_text())


def counted(method: str, model: nn.Module, text: torch.Tensor, segment: int,
            context: int) -> dict[str, Any]:
    """One evaluation under the FLOP counter (slower: untimed): its perplexity, tokens,
    positions and model FLOPs."""
    with FlopCounterMode(display=False) as counter:
        r = evaluate(method, model, text, segment, context)
    return {"perplexity": r.perplexity, "tokens": r.tokens, "positions": r.positions,
            "flops": float(counter.get_total_flops())}


def measure(model: nn.Module, text: torch.Tensor, segment: int, context: int, reps: int,
            kept_in: Path) -> list[dict[str, Any]]:
    """Both methods at attention length `context` on `text`: counted once, warmed up, then
    timed `reps` times interleaved; one row each. Every evaluation is kept in `kept_in`."""
    counts = {m: kept(kept_in / f"{m}-count.json",
                      lambda m=m: counted(m, model, text, segment, context)) for m in METHODS}
    for m in METHODS:  # warm-up (the counts may come from an earlier call): 8 windows
        evaluate(m, model, text[: context + 9], segment, context)
    speeds: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for rep in range(reps):
        for m in METHODS:
            timed = kept(kept_in / f"{m}-{rep}.json", lambda m=m: timing(
                evaluate(m, model, text, segment, context)))
            speeds[m].append(timed)
    rows = [{"context": context, "method": m,
             "segment": segment if m == "memory" else None,
             "mem_len": context - segment if m == "memory" else None, **counts[m],
             "steady_tokens": speeds[m][0]["steady_tokens"],
             **{k: statistics.median(t[k] for t in speeds[m])
                for k in ("tokens_per_s", "steady_tokens_per_s")},
             "reps": speeds[m]} for m in METHODS]
    rows[0]["speedup"] = rows[0]["steady_tokens_per_s"] / rows[1]["steady_tokens_per_s"]
    return rows


def timing(r: LMEvaluation) -> dict[str, Any]:
    """The clock of one evaluation: over all its predictions, and in the steady state."""
    return {"tokens_per_s": r.tokens_per_s, "steady_tokens": r.steady_tokens,
            "steady_tokens_per_s": r.steady_tokens_per_s}


def machine() -> str:
    """The CPU, threads, and the load average when the measurement started."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{compare.machine()}, load average {load} at start"


def markdown(rows: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    """The results table with what was run."""
    about = ", ".join(f"{k}: {v}" for k, v in setup.items())
    head = ["attention length", "evaluation", "segment + memory", "tokens scored", "perplexity",
            "unigram perplexity", "tokens/s, all", "tokens/s, steady state",
            "positions computed", "GFLOPs", "speedup (steady state)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        shape = f"{r['segment']} + {r['mem_len']}" if r["method"] == "memory" else "window"
        speedup = f"{r['speedup']:.1f}x" if "speedup" in r else ""
        cells = [str(r["context"]), r["method"], shape, f"{r['tokens']:,}",
                 f"{r['perplexity']:.2f}", f"{r['unigram_perplexity']:.2f}",
                 f"{r['tokens_per_s']:,.0f}", f"{r['steady_tokens_per_s']:,.1f}",
                 f"{r['positions']:,}", f"{r['flops'] / 1e9:.1f}",
                 speedup]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"Setup: {about}.\n\ntokens/s: median of {setup['reps']} interleaved runs, over "
            "all the predictions and in the steady state (once each prediction sees the whole "
            "attention length: the memory full, or a full window; the speed-up is of these); "
            "perplexity, positions and FLOPs are the same in every run.\n\n"
            + "\n".join(lines) + "\n")


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Steady-state tokens/s against the attention length, one line per method; and memory's
    perplexity over sliding's on the same tokens (1: no loss)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    speed_ax, ppl_ax = fig.subplots(1, 2)
    by = {m: [r for r in rows if r["method"] == m] for m in METHODS}
    contexts = [r["context"] for r in by["memory"]]
    for method, mine in by.items():
        speed_ax.plot(contexts, [r["steady_tokens_per_s"] for r in mine], marker="o",
                      label=method)
    ppl_ax.plot(contexts, [m["perplexity"] / s["perplexity"]
                           for m, s in zip(by["memory"], by["sliding"], strict=True)],
                marker="o", color="tab:blue")
    ppl_ax.axhline(1.0, color="black", lw=0.8)
    speed_ax.set(xlabel="attention length (tokens)", ylabel="evaluation tokens/s (steady state)",
                 yscale="log", title="speed")
    speed_ax.legend()
    ppl_ax.set(xlabel="attention length (tokens)", ylabel="perplexity, memory / sliding",
               title="perplexity, same tokens (< 1: memory better)")
    fig.savefig(out / "memory_vs_sliding.png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/studies/transfo-xl-memory"))
    p.add_argument("--work", type=Path, default=Path("runs/transfo-xl-memory"),
                   help="the corpus and the training runs (kept: a second call resumes)")
    p.add_argument("--flops", type=float, default=1e14, help="pretraining model FLOPs")
    p.add_argument("--seq-len", type=int, default=64, help="training and memory segment length")
    p.add_argument("--mem-len", type=int, default=64, help="memory states while training")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--contexts", default="128,800,1800,3800",
                   help="attention lengths (segment + memory, or the sliding window)")
    p.add_argument("--windows", type=int, default=512,
                   help="sliding windows after the first at each attention length C (both "
                        "methods score the first C + 1 + windows held-out tokens)")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    contexts = [int(c) for c in a.contexts.split(",")]
    started = machine()
    train, heldout = bible_corpus(a.work / "corpus")
    vocab = PretrainArgs(model="transfo-xl-tiny", corpus=[train], out=a.work / "vocab",
                         vocab_size=8000, batch_size=16, seq_len=a.seq_len, lr=a.lr, steps=1,
                         log_every=50, eval_every=10**9, progress=False,
                         overrides={"mem_len": a.mem_len})
    run = train_model(vocab, a.flops)
    model = plmkit.load(run.out)
    tok = Tokenizer.load(run.out / "tokenizer")
    ids = [i for line in heldout for i in tok.encode(line)]
    train_ids = [i for line in train.read_text().splitlines() for i in tok.encode(line)]
    flops_per_step = json.loads((a.work / "steps.json").read_text())["flops_per_step"]
    rows = []
    for c in contexts:
        text = torch.tensor(ids[: c + 1 + a.windows])
        kept_in = a.work / "evaluations" / f"{c}-{len(text)}-{a.reps}"
        rows += [{**r, "unigram_perplexity": unigram_perplexity(train_ids, text, tok.vocab_size)}
                 for r in measure(model, text, a.seq_len, c, a.reps, kept_in)]
    setup = {"corpus": "World English Bible (sword-text-web), train chapters (80%, seed 0)",
             "heldout": f"at attention length C, the first C + 1 + {a.windows} tokens of the "
                        f"test chapters (10%), both methods",
             "model": f"transfo-xl-tiny, {sum(q.numel() for q in model.parameters()):,} "
                      f"parameters, BPE {tok.vocab_size} tokens",
             "pretraining": f"{run.steps} steps x 16 x {a.seq_len} tokens (corpus: "
                            f"{len(train_ids):,} tokens), lr {a.lr:g}, seed 0, memory "
                            f"{a.mem_len}, {run.steps * flops_per_step:.2e} FLOPs",
             "reps": a.reps, "torch": torch.__version__, "machine": started}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps({"setup": setup, "results": rows},
                                                   indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(rows, setup))
    plot(rows, a.out)
    print((a.out / "results.md").read_text(), end="")


if __name__ == "__main__":
    main()
