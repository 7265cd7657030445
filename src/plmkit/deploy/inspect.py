"""Looking inside a model: attention maps per layer and head (`plmkit attention`) and the
gradient-based importance of each head (Michel et al. 2019, "Are Sixteen Heads Really Better
than One?", section 4.1): I_h = |dL / d xi_h| for a gate xi_h = 1 on each head's output.

Both work through the attention modules' inspection switches (`recorder`, `head_gate` of
`nn.attention.MultiHeadAttention` and `nn.rel_attention.RelativeAttention`), so every encoder
family is covered, XLNet's relative attention included, without per-model code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.rel_attention import RelativeAttention
from plmkit.tokenizers import Tokenizer

ATTENTION = (MultiHeadAttention, RelativeAttention)
Batch = dict[str, Tensor]


def backbone_of(model: nn.Module) -> nn.Module:
    """The encoder of a fine-tuned model (its `.backbone`), else the model itself."""
    return getattr(model, "backbone", model)


@torch.no_grad()
def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules that a forward pass of `model` runs, in the order they first run
    (one per layer; ALBERT's shared layers give one module; ELECTRA's generator none)."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda m, _: order.append(m) if m not in order else None)
             for m in model.modules() if isinstance(m, ATTENTION)]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 2, dtype=torch.long, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if not order:
        raise UserError(f"{type(model).__name__} has no attention layers to inspect")
    return order


@contextmanager
def recording(model: nn.Module) -> Iterator[list[Tensor]]:
    """Inside the block, every attention of `model` takes its explicit softmax path and the
    list yielded receives the weights (B, h, S, T) of each call, in call order."""
    store: list[Tensor] = []
    modules = [m for m in model.modules() if isinstance(m, ATTENTION)]
    for m in modules:
        m.recorder = store
    try:
        yield store
    finally:
        for m in modules:
            m.recorder = None


@torch.no_grad()
def attention_weights(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                      token_type_ids: Tensor | None = None) -> list[Tensor]:
    """The attention weights of each layer, (B, h, S, T) each, for one eval-mode forward."""
    was_training = model.training
    model.eval()
    try:
        with recording(model) as store:
            model(input_ids, attention_mask, token_type_ids)
    finally:
        model.train(was_training)
    return store


@dataclass
class AttentionMaps:
    """The tokens of a text and its attention weights (layers, heads, S, S); a pruned layer's
    missing heads are NaN, at the end of its head axis."""

    tokens: list[str]
    weights: np.ndarray


def attention_maps(model: nn.Module, tokenizer: Tokenizer, text: str, pair: str | None = None,
                   max_seq_len: int = 512) -> AttentionMaps:
    """Attention maps of every layer and head of `model` (or its backbone) on `text`."""
    if not text.strip():
        raise UserError("--text is empty")
    backbone = backbone_of(model)
    inputs = tokenizer(text, pair, max_length=max_seq_len)
    device = next(backbone.parameters()).device
    ids = inputs["input_ids"].to(device)  # (1, S)
    layers = attention_weights(backbone, ids, None, inputs["token_type_ids"].to(device))
    heads = max(w.shape[1] for w in layers)
    s = ids.shape[1]
    weights = np.full((len(layers), heads, s, s), np.nan, dtype=np.float32)
    for i, w in enumerate(layers):
        weights[i, :w.shape[1]] = w[0, :, :, -s:].float().cpu().numpy()  # no memory columns
    return AttentionMaps([tokenizer.id_to_token(int(t)) for t in ids[0]], weights)


def write_attention(maps: AttentionMaps, out: Path) -> list[Path]:
    """`plot_attention`'s PNGs and `out/attention.npz` (weights, tokens); the PNGs."""
    written = plot_attention(maps, out)
    np.savez(out / "attention.npz", weights=maps.weights, tokens=np.array(maps.tokens))
    return written


def plot_attention(maps: AttentionMaps, out: Path) -> list[Path]:
    """Write `out/layer{L}_head{H}.png` heatmaps (queries down, keys across) and
    `out/overview.png` (every head in a grid: layers down, heads across)."""
    out.mkdir(parents=True, exist_ok=True)
    layers, heads, s, _ = maps.weights.shape
    written = []
    side = max(4.0, 0.3 * s + 1.5)
    for layer in range(layers):
        for head in range(heads):
            w = maps.weights[layer, head]
            if np.isnan(w).all():
                continue
            fig = Figure(figsize=(side + 1, side))
            ax = fig.add_subplot()
            image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(s), maps.tokens, rotation=90, fontsize=8)
            ax.set_yticks(range(s), maps.tokens, fontsize=8)
            ax.set_xlabel("key")
            ax.set_ylabel("query")
            ax.set_title(f"layer {layer} head {head}")
            fig.colorbar(image, ax=ax)
            fig.tight_layout()
            path = out / f"layer{layer}_head{head}.png"
            fig.savefig(path, dpi=100)
            written.append(path)
    fig = Figure(figsize=(1.6 * heads + 1, 1.6 * layers + 1))
    grid = fig.subplots(layers, heads, squeeze=False)
    for (layer, head), ax in np.ndenumerate(grid):
        ax.imshow(maps.weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        if head == 0:
            ax.set_ylabel(f"L{layer}")
        if layer == 0:
            ax.set_title(f"H{head}", fontsize=9)
    fig.suptitle(" ".join(maps.tokens)[:120], fontsize=9)
    path = out / "overview.png"
    fig.savefig(path, dpi=80)
    return [*written, path]


def head_importance(model: nn.Module, loss: Callable[[nn.Module, Batch], Tensor],
                    batches: Iterable[Batch], normalize: bool = True) -> Tensor:
    """(layers, heads) importance of each head: sum over batches of |dL/d gate| with a gate
    of 1 on each head's output (Michel et al. 2019, eq. 2), dropout off. `normalize` divides
    each layer's scores by their L2 norm, as the paper does before pruning across layers.
    Heads pruned away are NaN (columns index the original heads)."""
    modules = attention_modules(backbone_of(model))
    device = next(model.parameters()).device
    gates = [torch.ones(m.num_heads, device=device, requires_grad=True) for m in modules]
    total = [torch.zeros(m.num_heads, device=device) for m in modules]
    was_training = model.training
    model.eval()
    try:
        for m, gate in zip(modules, gates, strict=True):
            m.head_gate = gate
        for batch in batches:
            value = loss(model, {k: v.to(device) for k, v in batch.items()})
            for t, g in zip(total, torch.autograd.grad(value, gates), strict=True):
                t += g.abs()
    finally:
        model.train(was_training)
        for m in modules:
            m.head_gate = None
    width = max(_original_heads(m) for m in modules)
    scores = torch.full((len(modules), width), math.nan)
    for i, (m, t) in enumerate(zip(modules, total, strict=True)):
        if normalize:
            t = t / t.norm().clamp(min=1e-20)
        scores[i, _kept(m)] = t.cpu()
    return scores


def _kept(module: nn.Module) -> list[int]:
    kept: Any = getattr(module, "kept", None)
    return kept() if kept is not None else list(range(module.num_heads))


def _original_heads(module: nn.Module) -> int:
    if isinstance(module, MultiHeadAttention):
        return module.out.out_features // module.head_dim
    return module.num_heads
