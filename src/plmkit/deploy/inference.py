"""The fast inference path: weights cast once to bf16 where the hardware runs bf16 fast (no
autocast casts at every call), or the Linear layers quantised to int8 (`int8=True`), and
optionally `torch.compile` with frozen weights (inductor folds the weights in as constants,
prepacks them for oneDNN and fuses the elementwise work).

    model = plmkit.deploy.inference.optimize(plmkit.load("runs/bert"))
    with torch.no_grad():
        out = model(input_ids, attention_mask)
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from plmkit.errors import UserError
from plmkit.training.precision import fast_bf16


def optimize(model: nn.Module, *, bf16: bool | None = None, int8: bool = False,
             compile: bool = True) -> nn.Module:
    """An evaluation-mode copy of `model` for inference without gradients: in bf16 where
    `fast_bf16` (or as `bf16` says), or with int8 Linear layers (`int8`, see `quantize`;
    the rest stays float32), compiled with frozen weights when `compile`. The first call of
    each new input shape compiles (seconds to a minute); later calls reuse it. The copy's
    outputs are those of `model` up to bf16 or int8 rounding; do not train it."""
    if int8 and bf16:
        raise UserError("int8 and bf16 exclude each other: int8 Linear layers take float32")
    device = next(model.parameters()).device
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    if int8:
        fast = quantize(fast)
    elif fast_bf16(device) if bf16 is None else bf16:
        fast = fast.to(torch.bfloat16)
    if compile:
        fast = torch.compile(fast, options={"freezing": True})
    return fast


def quantize(model: nn.Module) -> nn.Module:
    """`model` (a CPU float32 model, changed in place) with each `nn.Linear` (not subclasses such
    as the NSP head, `nn.heads.SentenceHead`) replaced by torch's
    dynamically quantised one: int8 weights with one scale per output channel (as the ONNX
    export's int8 graph), activations quantised per call from their range, int8 x int8
    products accumulated in int32 by fbgemm (AVX512-VNNI where the CPU has it).
    Embeddings, LayerNorm and attention stay float32."""
    if next(model.parameters()).device.type != "cpu":
        raise UserError("int8 inference runs on the CPU (torch's dynamic quantisation)")
    with warnings.catch_warnings():  # torch 2.13 marks quantised tensors as deprecated
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
