"""Held-out scores of `plmkit compare` under one fixed mask set.

The held-out batches are made once, from `HELDOUT_SEED`, and saved in OUT/heldout/: every arm
and every pretraining seed is scored on the same masked positions and the same replacement
tokens, so two scores differ by the models alone. What is scored depends on the model:
- a masked-LM head (BERT, RoBERTa, ALBERT, ERNIE; ELECTRA's generator): `mlm_loss` and
  `mlm_accuracy` on one-segment instances;
- ELECTRA also `rtd_accuracy` and `rtd_auc`: the discriminator on the generator's samples,
  drawn with a generator seeded by `HELDOUT_SEED` (accuracy at the 0.5 threshold, and the ROC
  AUC of its logits);
- a sentence head (NSP or SOP): its accuracy on held-out NSP pairs (`nsp_pairs_accuracy`) and
  on held-out SOP pairs (`sop_pairs_accuracy`), both labelled 1 for "not the order of the
  text" (ALBERT, Lan et al. 2020, Table 5 scores each head on both tasks);
- no masked-LM head (XLNet, Transformer-XL): `lm_loss`, the objective's own loss on its own
  fixed batches (permutations and memory included).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from plmkit.data.options import DataOptions
from plmkit.data.shards import prepare
from plmkit.objectives import get_objective
from plmkit.objectives.mlm import Batch, bert_batches, encode
from plmkit.objectives.rtd import (
    corrupt,
    discriminator_loss,
    generator_loss,
    roc_auc,
    sample_tokens,
)
from plmkit.tokenizers import Tokenizer

HELDOUT_SEED = 20_191_026  # the one seed of every held-out mask set
SENTENCE_OBJECTIVES = frozenset({"mlm+nsp", "mlm+sop", "ernie"})  # train `sentence_logits`
Scores = dict[str, float]


class HeldOut:
    """Fixed held-out batches from `files`, built on first use and kept in `folder`."""

    def __init__(self, files: list[Path], tokenizer: Path, folder: Path, batch_size: int,
                 seq_len: int, batches: int) -> None:
        self.files, self.tokenizer, self.folder = files, tokenizer, folder
        self.options = DataOptions(batch_size=batch_size)  # static masks, BERT's 15% and 80/10/10
        self.seq_len, self.batches = seq_len, batches

    def set(self, kind: str) -> list[Batch]:
        """The batches of `kind`: `mlm`, `nsp`, `sop` or `own-OBJECTIVE`."""
        path = self.folder / f"{kind}.pt"
        if not path.is_file():
            tok = Tokenizer.load(self.tokenizer)
            corpus = prepare(self.files, tok, self.folder / "data")
            if kind.startswith("own-"):
                source = get_objective(kind.removeprefix("own-")).batches(
                    corpus, tok, self.options, self.seq_len, HELDOUT_SEED)
            else:
                source = bert_batches(corpus, tok, self.options, self.seq_len, HELDOUT_SEED,
                                      nsp=kind != "mlm", sentence_order=kind == "sop")
            tmp = path.with_suffix(".tmp")
            torch.save(list(itertools.islice(source, self.batches)), tmp)
            tmp.replace(path)
        return torch.load(path, weights_only=True)

    def evaluator(self, objective: str) -> Callable[[nn.Module], Scores]:
        """model -> its held-out scores (see the module docstring); for `Trainer.evaluator`."""

        def evaluate(model: nn.Module) -> Scores:
            with torch.no_grad():
                return self.scores(model, objective)

        return evaluate

    def scores(self, model: nn.Module, objective: str) -> Scores:
        """The held-out scores of `model`, pretrained with `objective`."""
        device = next(model.parameters()).device
        if not hasattr(model, "mlm_logits"):
            return {"lm_loss": own_loss(model, objective, self.on(f"own-{objective}", device))}
        out = masked_lm(model, self.on("mlm", device))
        if objective in SENTENCE_OBJECTIVES:
            for kind in ("nsp", "sop"):
                out[f"{kind}_pairs_accuracy"] = sentence_pairs(model, self.on(kind, device))
        return out

    def on(self, kind: str, device: torch.device) -> list[Batch]:
        """The batches of `kind` on `device`."""
        return [{k: v.to(device) for k, v in batch.items()} for batch in self.set(kind)]


def masked_lm(model: nn.Module, batches: list[Batch]) -> Scores:
    """Masked-LM loss and accuracy over all masked positions (each batch weighted by its
    masked tokens), ELECTRA's through its generator; for ELECTRA also `rtd_accuracy`, its
    discriminator's accuracy over the real tokens on replacements sampled from the same
    generator logits with a fixed seed, and `rtd_auc`, the ROC AUC of its logits there (no
    threshold: accuracy sits at the share of originals while the discriminator ranks)."""
    rtd = hasattr(model, "rtd_logits")
    sampler = torch.Generator(next(model.parameters()).device).manual_seed(HELDOUT_SEED)
    sums = {"mlm_loss": 0.0, "mlm_accuracy": 0.0, "rtd_accuracy": 0.0}
    masked = real = 0.0
    ranked: list[tuple[Tensor, Tensor]] = []  # the discriminator's logits and labels
    for batch in batches:
        logits = model.mlm_logits(generator_or_encoder(model, batch),
                                  batch["masked_lm_positions"])  # (B, P, V)
        _, metrics = generator_loss(logits, batch)
        n = float(batch["masked_lm_weights"].sum())
        sums["mlm_loss"] += float(metrics["mlm_loss"]) * n
        sums["mlm_accuracy"] += float(metrics["mlm_accuracy"]) * n
        masked += n
        if rtd:
            tokens = float(batch["input_mask"].sum())
            accuracy, scored = replaced_tokens(model, batch, logits, sampler)
            sums["rtd_accuracy"] += accuracy * tokens
            ranked.append(scored)
            real += tokens
    out = {k: sums[k] / max(masked, 1.0) for k in ("mlm_loss", "mlm_accuracy")}
    if not rtd:
        return out
    auc = roc_auc(*(torch.cat(part) for part in zip(*ranked, strict=True)))
    return {**out, "rtd_accuracy": sums["rtd_accuracy"] / max(real, 1.0), "rtd_auc": float(auc)}


def generator_or_encoder(model: nn.Module, batch: Batch) -> Tensor:
    """The hidden states (B, S, H) that the model's masked-LM head reads."""
    if hasattr(model, "generator_hidden"):
        return model.generator_hidden(batch["input_ids"], batch["input_mask"],
                                      batch.get("segment_ids"))
    return encode(model, batch).last_hidden_state


def replaced_tokens(model: nn.Module, batch: Batch, logits: Tensor, sampler: torch.Generator
                    ) -> tuple[float, tuple[Tensor, Tensor]]:
    """ELECTRA's discriminator accuracy over the real tokens of `batch`, its masked positions
    filled with samples from the generator's `logits` (B, P, V); and its logits (N,) and
    labels (N,) at those N real tokens."""
    fake, replaced = corrupt(batch, sample_tokens(logits, sampler))  # (B, S) each
    hidden = model(fake, batch["input_mask"], batch.get("segment_ids")).last_hidden_state
    real = batch["input_mask"].bool()
    rtd = model.rtd_logits(hidden)  # (B, S)
    _, metrics = discriminator_loss(rtd, replaced, real)
    return float(metrics["disc_accuracy"]), (rtd[real].float(), replaced[real])


def sentence_pairs(model: nn.Module, batches: list[Batch]) -> float:
    """Accuracy of the model's two-way sentence head (trained on NSP or SOP) on labelled
    pairs."""
    correct = count = 0
    for batch in batches:
        logits = model.sentence_logits(encode(model, batch).pooler_output)  # (B, 2)
        correct += int((logits.argmax(-1) == batch["next_sentence_labels"]).sum())
        count += len(logits)
    return correct / max(count, 1)


def own_loss(model: nn.Module, objective: str, batches: list[Batch]) -> float:
    """The mean loss of a fresh `objective` (empty memory) over `batches`, in order."""
    fresh = get_objective(objective)
    losses = [float(fresh(model, batch)[0]) for batch in batches]
    return sum(losses) / len(losses)
