"""Is an ELECTRA discriminator with falling recall dead, or are its fakes getting harder?

Scores a checkpoint's discriminator on one set of masked held-out sequences with three kinds
of fakes at the same masked positions: the checkpoint's own generator's samples (what training
feeds it), tokens drawn uniformly from the vocabulary, and tokens drawn from the corpus's
unigram distribution. For each: the replaced fraction, precision and recall at the 0.5
threshold, the ROC AUC of the logits (threshold-free), and the binary cross entropy against the
prior's entropy. A generator whose samples follow the unigram distribution leaves a
discriminator without context features nothing but the prior; one that still tells uniform
fakes apart is alive. Also prints the corpus's unigram entropy beside the generator's.

    python benchmarks/electra_fakes.py RUN/checkpoints/step-000918 --run RUN
"""

from __future__ import annotations

import argparse
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
    generator_entropy,
    roc_auc,
    sample_tokens,
)
from plmkit.tokenizers.base import Tokenizer


def unigram(corpus: Path, vocab: int) -> Tensor:
    """The corpus's token frequencies (V,) from its shards."""
    meta = json.loads((corpus / "meta.json").read_text())
    counts = np.zeros(vocab, dtype=np.int64)
    for shard in meta["shards"]:
        tokens = np.fromfile(corpus / shard["file"], dtype=meta["dtype"])
        counts += np.bincount(tokens, minlength=vocab)[:vocab]
    return torch.from_numpy(counts / counts.sum()).float()


def score(logits: Tensor, replaced: Tensor, real: Tensor) -> dict[str, float]:
    """Replaced fraction, precision, recall, AUC, BCE and the prior's entropy over real tokens."""
    z, y = logits[real].float(), replaced[real]
    guess = z > 0
    rate = y.float().mean().item()
    prior = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y.float()).item()
    hits = (guess & y).sum().item()
    return {"replaced": rate, "precision": hits / max(guess.sum().item(), 1),
            "recall": hits / max(y.sum().item(), 1), "auc": roc_auc(z, y).item(), "bce": bce,
            "prior_entropy": prior}


def main(argv: list[str] | None = None) -> dict:
    """Print and return the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="the run (tokenizer, data)")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load(args.checkpoint).eval()
    tok = Tokenizer.load(args.run / "tokenizer")
    corpus = ShardedCorpus.open(args.run / "data")
    probs = unigram(args.run / "data", tok.vocab_size)
    special = torch.tensor(sorted(set(tok.special_ids)))
    uniform = torch.ones(tok.vocab_size).index_fill(0, special, 0.0)
    batches = iter(ReplacedTokenDetection().batches(
        corpus, tok, DataOptions(batch_size=32, masking="dynamic", mask_prob=0.15), 128, 12345))
    kinds: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}
    entropies = []
    with torch.no_grad():
        for _ in range(args.batches):
            batch = next(batches)
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
    report = {"checkpoint": str(args.checkpoint), "unigram_entropy": entropy,
              "generator_entropy": float(np.mean(entropies))}
    for kind, parts in kinds.items():
        report[kind] = score(*(torch.cat([p[i].flatten() for p in parts]) for i in range(3)))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
