"""AdamW with BERT's weight-decay exclusions, and learning-rate schedules for `LambdaLR`.

A schedule is a factor of the base learning rate as a function of LambdaLR's step count
`step` (0 while the first update is taken); the schedules below count updates from 1,
`n = step + 1`, as the papers do, so the first update never has a learning rate of zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Schedule = Callable[[int], float]

NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a group without decay.

    No decay, as in BERT's `exclude_from_weight_decay` ("LayerNorm", "bias"): parameters of
    normalization layers, any 1-d parameter, and any parameter whose name ends in "bias"
    (XLNet's `r_w_bias` too). Tied parameters appear once. Each group keeps `param_names`.
    """
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(False)
    }
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, p in model.named_parameters():  # named_parameters() skips tied duplicates
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or id(p) in norm_params or name.rsplit(".", 1)[-1].endswith("bias")
        (no_decay if skip else decay).append((name, p))
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, weight_decay)`; the fused kernel on CPU and CUDA.

    With `weight_decay=0` this is Adam (the Transformer's Adam(0.9, 0.98, 1e-9)).
    """
    groups = param_groups(model, weight_decay)
    device_types = {p.device.type for g in groups for _, p in g["params"]}
    fused = len(device_types) == 1 and device_types <= {"cpu", "cuda"}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def linear_warmup_decay(warmup: int, total: int) -> Schedule:
    """BERT: rise linearly to 1 at update `warmup`, then fall linearly to 0 at update `total`.

    BERT pretraining uses warmup 10k of 1M steps.
    """

    def factor(step: int) -> float:
        n = step + 1
        if n <= warmup:
            return n / warmup
        return max(0.0, (total - n) / max(1, total - warmup))

    return factor


def inverse_sqrt(d_model: int, warmup: int) -> Schedule:
    """Transformer: lr = d_model^-0.5 * min(n^-0.5, n * warmup^-1.5) for update n.

    Vaswani et al., "Attention Is All You Need" (2017), section 5.3, with warmup 4000. The
    value is the learning rate itself: use a base lr of 1.0 (or a scale factor).
    """

    def factor(step: int) -> float:
        n = step + 1
        return d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)

    return factor


def constant_warmup(warmup: int) -> Schedule:
    """Rise linearly to 1 at update `warmup`, then stay at 1."""

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

    return factor
