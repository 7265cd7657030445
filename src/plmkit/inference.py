"""The fast inference path: weights cast once to bf16 where the hardware runs bf16 fast (no
autocast casts at every call), and optionally `torch.compile` with frozen weights (inductor
folds the weights in as constants, prepacks them for oneDNN and fuses the elementwise work).

    model = plmkit.inference.optimize(plmkit.load("runs/bert"))
    with torch.no_grad():
        out = model(input_ids, attention_mask)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from plmkit.precision import fast_bf16


def optimize(model: nn.Module, *, bf16: bool | None = None, compile: bool = True) -> nn.Module:
    """An evaluation-mode copy of `model` for inference without gradients: in bf16 where
    `fast_bf16` (or as `bf16` says), compiled with frozen weights when `compile`. The first
    call of each new input shape compiles (seconds to a minute); later calls reuse it. The
    copy's outputs are those of `model` up to bf16 rounding; do not train it."""
    device = next(model.parameters()).device
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    if fast_bf16(device) if bf16 is None else bf16:
        fast = fast.to(torch.bfloat16)
    if compile:
        fast = torch.compile(fast, options={"freezing": True})
    return fast
