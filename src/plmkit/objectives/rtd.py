"""Replaced-token detection (ELECTRA, Clark et al. 2020, section 2): the generator, a small
masked LM, fills the masked positions with tokens sampled from its output distribution; the
discriminator labels every real token of the result as original or replaced. A sampled token
that equals the original counts as original. No gradient flows through the sampling, so the
generator learns from its MLM loss alone: loss = L_MLM + 50 * L_Disc (lambda = 50, section 2).

Inputs are made as the reference's `build_pretraining_dataset.py` makes them: a document's
sentences fill a sequence, split 90% of the time into two consecutive segments A and B
(segment ids 0 and 1, no label), else one segment (`data/bert.py` `consecutive_segments`). 15%
of the tokens are chosen as BERT's (dynamically by default: `data/masking.py` `FAMILY_MASKING`)
and become [MASK] 85% of the time and stay themselves 15%, never a random token (the
reference's `pretrain_helpers.py` `mask`; `data/masking.py` `mask_chosen`, drawn by
`ElectraStream`). The batches carry the reference fields `masked_lm_positions` / `_ids` /
`_weights`. Two-stage training (section 3.2) runs `stage="generator"` (MLM alone), then
`Electra.init_discriminator_from_generator()`, then `stage="discriminator"` (the generator
frozen: run without gradient, no MLM loss).

Adversarial training (section 3.2, appendix F): with `generator_training="adversarial"` the
generator has no MLM loss; it learns to maximise the discriminator's loss on the tokens it
sampled, by REINFORCE. The reward of the sample x̂_t at masked position t is the
discriminator's loss there, R = -log D(x̂_t) if x̂_t equals the original, -log(1 - D(x̂_t))
otherwise (D: the probability of "original"); the paper assumes it depends on that token alone,
so each position is its own one-step action. The gradient is (R - b) * grad log p_G(x̂_t), one
sample per position, with a learned baseline b = -log sigmoid(w^T h_G) on the generator's
output h_G, trained by cross-entropy to match the reward (target probability exp(-R), whose
-log is R). Choices the paper leaves open: the reward and the baseline's input are detached (the
baseline's loss trains w alone), and the policy-gradient term takes L_MLM's place with weight
1, so the loss is PG + 50 * L_Disc + the baseline's loss. The paper's adversarial generator
reached 58% MLM accuracy against 65% for maximum likelihood, with a low-entropy output, and did
worse downstream (section 3.2, Figure 3 right, appendix F).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.data.batches import Batches
from plmkit.data.bert import BertInstanceConfig, BertPretrainingStream, BertVocab, Instance, Pair
from plmkit.data.masking import mask_chosen, scatter_predictions
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.objectives.mlm import Batch, masked_cross_entropy
from plmkit.objectives.protocols import ElectraModel

DISC_WEIGHT = 50.0  # lambda, section 2 / Table 6
TWO_SEGMENT_PROB = 0.9  # build_pretraining_dataset.py `_create_example`: one segment 10%
_REPLACE = 4  # keeps the replacement draws apart from the stream's other random draws
Stage = Literal["joint", "generator", "discriminator"]
GeneratorTraining = Literal["mle", "adversarial"]
GENERATOR_TRAININGS: tuple[str, ...] = get_args(GeneratorTraining)


def sample_tokens(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of detached `logits` (..., V), drawn from their softmax by inverting
    its cumulative sum with one uniform per row -> (...,). Same distribution as Gumbel-max,
    without V random numbers and two logarithms per row (7x faster at 152 x 30522)."""
    cdf = logits.detach().float().softmax(-1).cumsum(-1)  # (..., V)
    u = torch.rand(*cdf.shape[:-1], 1, device=cdf.device, generator=generator)  # (..., 1)
    picks = torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1)  # (...,)
    return picks.clamp(max=cdf.shape[-1] - 1)


class ElectraStream(BertPretrainingStream):
    """BERT's instance stream with ELECTRA's replacements (`mask_chosen`), drawn when batches
    are collated from a generator seeded by the instances' positions: with static masking a
    seed drawn with the copy's mask, so each copy keeps its replacements; with dynamic masking
    the seed of the fresh mask. A resumed run draws the same."""

    def build(self, pair: Pair, mask_rng: np.random.Generator | None) -> Instance:
        instance = super().build(pair, mask_rng)
        if mask_rng is not None:
            instance["mask_seed"] = mask_rng.integers(2**63, size=1, dtype=np.uint64)
        return instance

    def collate(self, instances: list[Instance]) -> Batch:
        seeds = np.concatenate([x["mask_seed"] for x in instances]).tolist()
        seed = np.random.SeedSequence([*seeds, _REPLACE]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed))
        return mask_chosen(super().collate(instances), self.vocab.mask_id, generator)


def corrupt(batch: Batch, sampled: Tensor) -> tuple[Tensor, Tensor]:
    """The discriminator's input (B, S): the original tokens with the generator's samples at
    the masked positions; and the labels (B, S) bool: True where a token differs from the
    original (a sample equal to the original is not a replacement)."""
    positions, valid = batch["masked_lm_positions"], batch["masked_lm_weights"] > 0  # (B, P)
    original = scatter_predictions(batch["input_ids"], positions, batch["masked_lm_ids"], valid)
    fake = scatter_predictions(original, positions, sampled, valid)  # (B, S)
    return fake, fake != original


def generator_loss(logits: Tensor, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross entropy over the masked positions (B, P, V) and the generator's accuracy."""
    return masked_cross_entropy(logits, batch["masked_lm_ids"], batch["masked_lm_weights"],
                                "mlm")


def token_losses(logits: Tensor, replaced: Tensor) -> Tensor:
    """The discriminator's binary cross entropy at each token (B, S) of logits (B, S) against
    `replaced` (B, S)."""
    return F.binary_cross_entropy_with_logits(logits.float(), replaced.float(), reduction="none")


def roc_auc(scores: Tensor, positive: Tensor, valid: Tensor | None = None) -> Tensor:
    """The ROC AUC of `scores` for the bool labels `positive` (same shape) over the `valid`
    entries (default all): the chance that a positive outscores a negative (ties broken by
    order), from the positives' ranks, with no host sync; NaN without both kinds. Unlike
    precision and recall it needs no threshold, so it still measures a discriminator whose
    logits all fall on one side of 0."""
    if valid is None:
        valid = torch.ones_like(positive)
    last = scores.float().masked_fill(~valid, float("inf")).flatten()  # invalid rank last
    ranks = last.argsort().argsort().double() + 1  # (N,)
    positive = (positive & valid).flatten()
    n_pos = positive.sum().double()
    n_neg = valid.sum().double() - n_pos
    return ((ranks * positive).sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def discriminator_loss(logits: Tensor, replaced: Tensor, real: Tensor
                       ) -> tuple[Tensor, dict[str, Tensor]]:
    """Binary cross entropy of logits (B, S) against `replaced` (B, S) over the `real`
    (non-padding) tokens; accuracy, precision, recall and ROC AUC on replaced tokens."""
    real = real.float()
    target = replaced.float()
    bce = token_losses(logits, replaced)  # (B, S)
    count = real.sum().clamp(min=1.0)
    loss = (bce * real).sum() / count
    with torch.no_grad():
        guess = (logits > 0).float() * real  # (B, S) predicted "replaced"
        hits = (guess * target).sum()
        metrics = {
            "disc_loss": loss.detach(),
            "disc_accuracy": (((logits > 0) == replaced).float() * real).sum() / count,
            "disc_precision": hits / guess.sum().clamp(min=1.0),
            "disc_recall": hits / (target * real).sum().clamp(min=1.0),
            "replaced_fraction": (target * real).sum() / count,
            "disc_auc": roc_auc(logits.detach(), replaced, real.bool()).float(),
        }
    return loss, metrics


def adversarial_loss(logits: Tensor, sampled: Tensor, reward: Tensor, baseline: Tensor,
                     weights: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The adversarial generator's loss (appendix F): a REINFORCE surrogate whose gradient is
    -(R - b) grad log p_G(x̂) (descending it ascends the discriminator's loss), plus the learned
    baseline's cross-entropy against the reward. logits (B, P, V) of the generator, `sampled`
    (B, P) its samples, `reward` (B, P) the discriminator's loss on each, `baseline` (B, P) the
    logits u of b = -log sigmoid(u), `weights` (B, P) 0 on padded predictions."""
    w = weights.float()
    count = w.sum().clamp(min=1.0)
    log_p = logits.float().log_softmax(-1)  # (B, P, V)
    chosen = log_p.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)  # (B, P) log p_G(x̂)
    reward = reward.detach().float()
    b = F.softplus(-baseline.float())  # (B, P) -log sigmoid(u)
    policy = -((reward - b.detach()) * chosen * w).sum() / count
    fit = F.binary_cross_entropy_with_logits(baseline.float(), torch.exp(-reward),
                                             reduction="none")  # (B, P)
    fit = (fit * w).sum() / count
    with torch.no_grad():
        metrics = {"pg_reward": (reward * w).sum() / count, "pg_baseline": (b * w).sum() / count,
                   "baseline_loss": fit.detach()}
    return policy + fit, metrics


def generator_entropy(logits: Tensor, weights: Tensor) -> Tensor:
    """The mean entropy (nats) of the generator's distributions (B, P, V) over the masked
    positions (weights (B, P)): near 0 when its mass is on one token."""
    with torch.no_grad():
        log_p = logits.float().log_softmax(-1)  # (B, P, V)
        entropy = -(log_p.exp() * log_p).sum(-1)  # (B, P)
        w = weights.float()
        return (entropy * w).sum() / w.sum().clamp(min=1.0)


class ReplacedTokenDetection:
    """The `electra` objective: generator MLM + `disc_weight` * discriminator loss; with
    `generator_training="adversarial"` the policy-gradient loss in place of the MLM loss (see
    the module docstring)."""

    name = "electra"

    def __init__(self, stage: Stage = "joint", disc_weight: float = DISC_WEIGHT,
                 generator_training: GeneratorTraining = "mle"):
        if stage not in ("joint", "generator", "discriminator"):
            raise ValueError(f"stage must be joint, generator or discriminator, not {stage!r}")
        if generator_training not in GENERATOR_TRAININGS:
            raise ValueError(f"generator_training must be mle or adversarial, not "
                             f"{generator_training!r}")
        if generator_training == "adversarial" and stage != "joint":
            raise ValueError("adversarial generator training needs stage='joint'")
        self.stage = stage
        self.disc_weight = disc_weight
        self.generator_training = generator_training

    @property
    def model_needs(self) -> dict[str, bool]:
        """The adversarial generator's baseline head."""
        return {"generator_baseline": True} if self.generator_training == "adversarial" else {}

    def batches(self, corpus: ShardedCorpus, vocab: BertVocab, options: DataOptions,
                seq_len: int, seed: int) -> Batches:
        """Sequences filling `seq_len`, mostly two consecutive segments; ELECTRA's masks."""
        config = BertInstanceConfig.from_options(options, seq_len, nsp=False,
                                                 two_segment_prob=TWO_SEGMENT_PROB)
        return Batches(ElectraStream(corpus, vocab, config, seed=seed), options.batch_size)

    def __call__(self, model: ElectraModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = (batch["input_ids"], batch["input_mask"], batch.get("segment_ids"))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage != "discriminator"):
            hidden = model.generator_hidden(*inputs)  # (B, S, H_g)
            logits = model.mlm_logits(hidden, batch["masked_lm_positions"])  # (B, P, V)
            mlm, metrics = generator_loss(logits, batch)
        metrics["gen_entropy"] = generator_entropy(logits, batch["masked_lm_weights"])
        if self.stage == "generator":
            return mlm, metrics
        sampled = sample_tokens(logits)  # (B, P), no gradient
        fake, replaced = corrupt(batch, sampled)  # (B, S) each
        out = model(fake, batch["input_mask"], batch.get("segment_ids")).last_hidden_state
        rtd = model.rtd_logits(out)  # (B, S)
        disc, disc_metrics = discriminator_loss(rtd, replaced, batch["input_mask"].bool())
        loss = self.disc_weight * disc
        if self.generator_training == "adversarial":
            positions = batch["masked_lm_positions"]
            reward = token_losses(rtd.detach(), replaced).gather(1, positions)  # (B, P)
            baseline = model.baseline_logits(hidden.detach(), positions)  # (B, P)
            adversarial, adv_metrics = adversarial_loss(
                logits, sampled, reward, baseline, batch["masked_lm_weights"])
            return loss + adversarial, {**metrics, **disc_metrics, **adv_metrics}
        if self.stage == "joint":
            loss = loss + mlm
        return loss, {**metrics, **disc_metrics}
