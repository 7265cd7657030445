"""Is an ELECTRA discriminator with falling recall dead, or are its fakes getting harder?

Scores each checkpoint's discriminator on one set of masked sequences of its run's corpus (the
same for every checkpoint) with three kinds of fakes at the same masked positions: the
checkpoint's own generator's samples (what training feeds it), tokens drawn uniformly from the
vocabulary (found by their rarity), and tokens drawn by the corpus's unigram frequencies (found
only by their context). For each: the replaced fraction, precision and recall at the 0.5
threshold, the ROC AUC of the logits (no threshold), and the binary cross entropy against the
prior's entropy; and the generator's entropy beside the corpus's unigram entropy.

    python benchmarks/electra_fakes.py RUN/checkpoints/step-* RUN --run RUN \
        --json fakes.json --plot fakes.png
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from plmkit import load
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.objectives.rtd import (
    ReplacedTokenDetection,
    corrupt,
    discriminator_loss,
    generator_entropy,
    sample_tokens,
)
from plmkit.tokenizers.base import Tokenizer


@functools.cache  # one reading per call of the script, however many checkpoints it scores
def unigram(corpus: Path, vocab: int) -> Tensor:
    """The corpus's token frequencies (V,) from its shards."""
    meta = json.loads((corpus / "meta.json").read_text())
    counts = np.zeros(vocab, dtype=np.int64)
    for shard in meta["shards"]:
        tokens = np.fromfile(corpus / shard["file"], dtype=meta["dtype"])
        counts += np.bincount(tokens, minlength=vocab)[:vocab]
    return torch.from_numpy(counts / counts.sum()).float()


def score(logits: Tensor, replaced: Tensor, real: Tensor) -> dict[str, float]:
    """`discriminator_loss`'s replaced fraction, precision, recall, AUC and BCE over the real
    tokens, and the prior's entropy."""
    bce, metrics = discriminator_loss(logits, replaced, real)
    rate = metrics["replaced_fraction"].item()
    return {"replaced": rate, "precision": metrics["disc_precision"].item(),
            "recall": metrics["disc_recall"].item(), "auc": metrics["disc_auc"].item(),
            "bce": bce.item(), "prior_entropy": -(rate * math.log(rate)
                                                  + (1 - rate) * math.log(1 - rate))}


def step_of(checkpoint: Path, run: Path) -> int:
    """The training step of `checkpoint`: a `step-NNNNNN` folder's, else the run's last."""
    if checkpoint.name.startswith("step-"):
        return int(checkpoint.name.removeprefix("step-"))
    return json.loads((run / "run.json").read_text())["args"]["steps"]


def fakes(checkpoint: Path, run: Path, batches: int) -> dict:
    """The report of one checkpoint of `run` on `batches` batches of 32 x 128."""
    torch.manual_seed(0)
    model = load(checkpoint).eval()
    tok = Tokenizer.load(run / "tokenizer")
    probs = unigram(run / "data", tok.vocab_size)
    special = torch.tensor(sorted(set(tok.special_ids)))
    uniform = torch.ones(tok.vocab_size).index_fill(0, special, 0.0)
    source = iter(ReplacedTokenDetection().batches(
        ShardedCorpus.open(run / "data"), tok,
        DataOptions(batch_size=32, masking="dynamic", mask_prob=0.15), 128, 12345))
    kinds: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}
    entropies = []
    with torch.no_grad():
        for _ in range(batches):
            batch = next(source)
            inputs = (batch["input_ids"], batch["input_mask"], batch.get("segment_ids"))
            logits = model.mlm_logits(model.generator_hidden(*inputs),
                                      batch["masked_lm_positions"])  # (B, P, V)
            entropies.append(generator_entropy(logits, batch["masked_lm_weights"]).item())
            shape = batch["masked_lm_positions"].shape
            draws = {"generator": sample_tokens(logits),
                     "uniform": torch.multinomial(uniform, shape.numel(), True).view(shape),
                     "unigram": torch.multinomial(probs, shape.numel(), True).view(shape)}
            for kind, sampled in draws.items():
                fake, replaced = corrupt(batch, sampled)  # (B, S)
                rtd = model.rtd_logits(model(fake, batch["input_mask"],
                                             batch.get("segment_ids")).last_hidden_state)
                kinds.setdefault(kind, []).append((rtd, replaced, batch["input_mask"].bool()))
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    report = {"checkpoint": str(checkpoint), "step": step_of(checkpoint, run),
              "unigram_entropy": entropy, "generator_entropy": float(np.mean(entropies))}
    for kind, parts in kinds.items():
        report[kind] = score(*(torch.cat([p[i].flatten() for p in parts]) for i in range(3)))
    return report


def plot(reports: list[dict], out: Path, title: str) -> None:
    """Each kind of fake's AUC against the training step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    steps = [r["step"] for r in reports]
    for kind, label in (("unigram", "unigram-drawn fakes (context)"),
                        ("uniform", "uniform fakes (rarity)"),
                        ("generator", "its generator's fakes (training)")):
        ax.plot(steps, [r[kind]["auc"] for r in reports], marker="o", label=label)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="training step", ylabel="discriminator ROC AUC", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> list[dict]:
    """Print (and with --json / --plot write) one report per checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+",
                        help="checkpoint folders (RUN/checkpoints/step-N) or the run itself")
    parser.add_argument("--run", type=Path, required=True, help="the run (tokenizer, data)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--plot", type=Path, help="draw the AUCs against the step here")
    parser.add_argument("--title", help="the plot's title (default: the run's folder name)")
    args = parser.parse_args(argv)
    reports = sorted((fakes(c, args.run, args.batches) for c in args.checkpoints),
                     key=lambda r: r["step"])
    text = json.dumps(reports, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.plot:
        plot(reports, args.plot, args.title or args.run.name)
    return reports


if __name__ == "__main__":
    main()
