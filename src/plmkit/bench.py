"""`plmkit bench`: plmkit against `transformers` on the same machine, in one process,
interleaved (A B A B ...), reporting medians and the ratio (DESIGN.md, "How performance is
measured")."""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from plmkit.interop import save_hf
from plmkit.models import build, preset_config
from plmkit.objectives.nsp import MaskedLMWithNSP

MASK_FRACTION = 0.15  # BERT: 15% of the tokens are predicted


@dataclass
class Record:
    """One measured configuration."""

    family: str
    size: str
    mode: str  # "train" (forward + backward + AdamW step) or "infer" (forward)
    dtype: str
    batch: int
    seq: int
    reps: int
    plmkit_tok_s: float
    hf_tok_s: float
    ratio: float


def pretraining_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, Tensor]:
    """A synthetic batch in the reference BERT fields, 15% of positions masked."""
    g = torch.Generator().manual_seed(seed)
    preds = max(1, round(seq * MASK_FRACTION))
    positions = torch.stack([torch.randperm(seq - 1, generator=g)[:preds] + 1
                             for _ in range(batch)]).sort(-1).values  # (B, P)
    return {
        "input_ids": torch.randint(5, vocab, (batch, seq), generator=g),
        "input_mask": torch.ones(batch, seq, dtype=torch.long),
        "segment_ids": (torch.arange(seq) >= seq // 2).long().expand(batch, -1).contiguous(),
        "masked_lm_positions": positions,
        "masked_lm_ids": torch.randint(5, vocab, (batch, preds), generator=g),
        "masked_lm_weights": torch.ones(batch, preds),
        "next_sentence_labels": torch.randint(0, 2, (batch,), generator=g),
    }


def hf_labels(batch: dict[str, Tensor]) -> Tensor:
    """The same masked-LM targets as transformers wants them: (B, S), -100 elsewhere."""
    labels = torch.full_like(batch["input_ids"], -100)
    return labels.scatter_(1, batch["masked_lm_positions"], batch["masked_lm_ids"])


def twins(preset: str) -> tuple[nn.Module, nn.Module]:
    """A plmkit model and the transformers model holding the very same weights."""
    import transformers

    ours = build(preset_config(preset))
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(ours, tmp)
        theirs = transformers.BertForPreTraining.from_pretrained(tmp, attn_implementation="sdpa")
    return ours, theirs


def train_steps(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor]):
    """One optimizer step for each side, with identical AdamW settings."""
    objective = MaskedLMWithNSP()
    opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-4, weight_decay=0.01)
    opt_b = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=0.01)
    hf_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["input_mask"],
                 "token_type_ids": batch["segment_ids"], "labels": hf_labels(batch),
                 "next_sentence_label": batch["next_sentence_labels"]}

    def a() -> None:
        objective(ours, batch)[0].backward()
        opt_a.step()
        opt_a.zero_grad(set_to_none=True)

    def b() -> None:
        theirs(**hf_inputs).loss.backward()
        opt_b.step()
        opt_b.zero_grad(set_to_none=True)

    return a, b


def infer_steps(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor]):
    """One forward pass for each side, hidden states only, no gradients."""
    args = (batch["input_ids"], batch["input_mask"], batch["segment_ids"])
    base = theirs.bert

    @torch.no_grad()
    def a() -> None:
        ours(*args)

    @torch.no_grad()
    def b() -> None:
        base(*args)

    return a, b


def interleaved(a: Callable[[], None], b: Callable[[], None], reps: int) -> tuple[float, float]:
    """Median seconds of a and of b over `reps` alternating runs, after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def run(presets: list[str], modes: list[str], batch: int, seq: int, reps: int) -> list[Record]:
    """Measure every preset in every mode."""
    records = []
    for preset in presets:
        ours, theirs = twins(preset)
        data = pretraining_batch(ours.config.vocab_size, batch, seq)
        for mode in modes:
            ours.train(mode == "train")
            theirs.train(mode == "train")
            steps = train_steps if mode == "train" else infer_steps
            ta, tb = interleaved(*steps(ours, theirs, data), reps)
            tokens = batch * seq
            family, size = preset.split("-", 1)
            records.append(Record(family, size, mode, "float32", batch, seq, reps,
                                  tokens / ta, tokens / tb, tb / ta))
    return records


def machine() -> dict[str, str | int]:
    """What the figures were measured on."""
    return {"machine": platform.machine(), "processor": platform.processor() or "unknown",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def table(records: list[Record]) -> str:
    """A fixed-width table of the records."""
    head = f"{'model':<14}{'mode':<7}{'batch x seq':>12}{'plmkit tok/s':>15}{'hf tok/s':>12}{'ratio':>8}"
    rows = [f"{r.family + '-' + r.size:<14}{r.mode:<7}{f'{r.batch}x{r.seq}':>12}"
            f"{r.plmkit_tok_s:>15.0f}{r.hf_tok_s:>12.0f}{r.ratio:>7.2f}x" for r in records]
    return "\n".join([head, *rows])


def write_json(records: list[Record], path: Path) -> None:
    """The records as a JSON list, each with the machine details."""
    info = machine()
    path.write_text(json.dumps([{**asdict(r), **info} for r in records], indent=2) + "\n")
