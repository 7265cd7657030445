"""The statistics of `plmkit compare`: a t-interval over pretraining seeds, a paired sign-flip
test, and the verdict of a claim "arm A scores higher than arm B".

Pairs are (pretraining seed, task): arm A's seed i against arm B's seed i on the same task,
treated as independent. Numbers are the standard ones (Student's t distribution; the exact
sign-flip permutation test, Fisher 1935), written here in numpy instead of taking a dependency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
EXACT_FLIPS = 16  # up to 2^16 sign patterns enumerated; more pairs are sampled
SAMPLED_FLIPS = 50_000


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `df` degrees of freedom: bisection on its
    CDF, whose central part is the density integrated by Simpson's rule."""
    lo, hi = 0.0, 1e3
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, df) < p - 0.5 else (lo, mid)
    return (lo + hi) / 2


def _t_central(t: float, df: int, intervals: int = 4000) -> float:
    """P(0 < T < t) for Student's t with `df` degrees of freedom."""
    x = np.linspace(0.0, t, intervals + 1)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    weights = np.ones(intervals + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return float(t / intervals / 3 * (weights * density).sum())


def t_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation, n and the 95% t-interval of the mean ([mean, mean]
    shrinks to None for a single value: no spread is known)."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "sd": None, "n": n, "ci95": None}
    sd = float(np.std(values, ddof=1))
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci95": [mean - half, mean + half]}


def sign_flip_p(diffs: Sequence[float], seed: int = 0) -> float:
    """Two-sided p-value of "the paired differences are symmetric around 0": the share of
    sign patterns whose |mean| reaches the observed one (all 2^n patterns up to
    `EXACT_FLIPS` pairs, else `SAMPLED_FLIPS` random ones, the observed pattern counted)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) <= EXACT_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))  # (2^n, n)
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(len(d)), rng.choice((1.0, -1.0), (SAMPLED_FLIPS, len(d)))])
    means = np.abs(signs @ d) / len(d)  # (patterns,)
    return float((means >= abs(d.mean()) - 1e-12).mean())


def seeds_to_settle(diffs: Sequence[float], pairs_per_seed: int) -> int | None:
    """Pretraining seeds per arm after which a difference of this mean and spread would leave
    the 95% interval clear of 0 (None: no difference or no spread seen)."""
    mean = abs(float(np.mean(diffs)))
    if len(diffs) < 2 or mean == 0.0:
        return None
    sd = float(np.std(diffs, ddof=1))

    def settles(n: int) -> bool:
        return t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n) < mean

    hi = 2
    while not settles(hi):  # doubling, then bisection: the interval narrows as n grows
        hi *= 2
        if hi > 10**7:
            return None
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if settles(mid) else (mid, hi)
    return math.ceil(hi / pairs_per_seed)


def verdict(diffs: Sequence[float], pairs_per_seed: int) -> dict[str, Any]:
    """Difference (A - B, positive = A better), its interval and test, and the outcome:
    reproduced (interval above 0), contradicted (below 0), inconclusive (covers 0)."""
    stats = t_interval(diffs)
    ci = stats["ci95"]
    outcome = ("inconclusive" if ci is None or ci[0] <= 0.0 <= ci[1]
               else "reproduced" if ci[0] > 0.0 else "contradicted")
    result = {"difference": stats["mean"], "ci95": ci, "sd": stats["sd"], "pairs": len(diffs),
              "p_value": sign_flip_p(diffs), "verdict": outcome}
    if outcome == "inconclusive":
        result["seeds_to_settle"] = seeds_to_settle(diffs, pairs_per_seed)
    return result
