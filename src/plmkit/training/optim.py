"""AdamW or LAMB with BERT's weight-decay exclusions, and learning-rate schedules for `LambdaLR`.

A schedule is a factor of the base learning rate as a function of LambdaLR's step count
`step` (0 while the first update is taken); the schedules below count updates from 1,
`n = step + 1`, as the papers do, so the first update never has a learning rate of zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from plmkit.errors import UserError

Schedule = Callable[[int], float]

NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def param_groups(model: nn.Module, weight_decay: float,
                 lr_of: Mapping[str, float] | None = None) -> list[dict]:
    """Split trainable parameters into a decayed group and a group without decay.

    No decay, as in BERT's `exclude_from_weight_decay` ("LayerNorm", "bias"): parameters of
    normalization layers, any 1-d parameter, and any parameter whose name ends in "bias"
    (XLNet's `r_w_bias` too). Tied parameters appear once. Each group keeps `param_names`.
    `lr_of`: learning rates of some parameters by name (e.g. a fine-tuning task's fresh head):
    they form groups of their own, after the others, each with its "lr".
    """
    lr_of = lr_of or {}
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(False)
    }
    groups: dict[tuple[float | None, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, p in model.named_parameters():  # named_parameters() skips tied duplicates
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or id(p) in norm_params or name.rsplit(".", 1)[-1].endswith("bias")
        groups.setdefault((lr_of.get(name), skip), []).append((name, p))
    order = [(None, False), (None, True), *sorted({(lr, s) for lr, s in groups if lr is not None})]
    return [{"params": groups[key], "weight_decay": 0.0 if key[1] else weight_decay,
             **({} if key[0] is None else {"lr": key[0]})} for key in order if key in groups]


OPTIMIZERS = ("adamw", "lamb")


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2).

    Per parameter tensor w with gradient g at update t:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  m^ = m / (1 - b1^t);  v^ = v / (1 - b2^t);
    u = m^ / (sqrt(v^) + eps) + weight_decay * w   (decoupled decay, added to the update);
    w -= lr * r * u with the layer-wise trust ratio r = ||w|| / ||u||, or 1 when either norm
    is 0 (a zero-initialised bias starts with plain Adam-like steps). ALBERT trains with it
    at batch 4096.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LAMB settings lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                g = p.grad.to(m.dtype)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                update = (m / (1 - b1**t)).div_(denom)
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                    torch.ones_like(w_norm))
                p.add_(update.mul_(trust), alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    name: str = "adamw",
    lr_of: Mapping[str, float] | None = None,
) -> torch.optim.Optimizer:
    """`name` ("adamw" or "lamb") over `param_groups(model, weight_decay, lr_of)`.

    AdamW uses the fused kernel on CPU and CUDA; with `weight_decay=0` it is Adam (the
    Transformer's Adam(0.9, 0.98, 1e-9)). LAMB: see `Lamb`.
    """
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    groups = param_groups(model, weight_decay, lr_of)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps)
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
