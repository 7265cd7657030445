"""Multi-head attention over `F.scaled_dot_product_attention`, self and cross; an explicit
softmax path that keeps the attention weights (for inspection), per-head gates and physical
head pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.dropout import KernelDropout, dropout
from plmkit.nn.masks import Unpadded


@dataclass
class KVCache:
    """A decoder layer's keys and values from earlier steps of incremental decoding, each
    (B, h, T, d): `memory`, its cross-attention's over the encoder output (projected on the
    first step), and `keys` / `values`, its self-attention's over the target positions so far
    (one appended each step)."""

    memory: tuple[Tensor, Tensor] | None = None
    keys: Tensor | None = None
    values: Tensor | None = None


class MultiHeadAttention(nn.Module, KernelDropout):
    """Scaled dot-product attention with `num_heads` heads ("Attention Is All You Need", 3.2.2).

    Self-attention projects queries, keys and values with one fused (H, 3H) matrix; cross-
    attention (`cross=True`) keeps a query projection and a fused (H, 2H) key/value projection.

    Off by default, for inspection: while `recorder` is a list, each forward computes the
    softmax explicitly (SDPA returns no weights) and appends the weights (B, h, S, T) to it;
    `head_gate` (h,) multiplies each head's output (the gate of Michel et al. 2019).
    `prune` removes heads physically; the buffer `kept_heads` (the original indices of the
    heads left) then travels in the state dict, so a pruned checkpoint loads pruned.

    With a `KVCache` (incremental decoding) x is the newest target position alone: self-
    attention appends its key and value to the cache and attends over all so far; cross-
    attention projects `memory` on the first step only.
    """

    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.0, cross: bool = False):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.dropout = dropout
        self.cross = cross
        if cross:
            self.q = nn.Linear(hidden, hidden)
            self.kv = nn.Linear(hidden, 2 * hidden)
        else:
            self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.recorder: list[Tensor] | None = None
        self.head_gate: Tensor | None = None

    def forward(self, x: Tensor, mask: Tensor | Unpadded | None = None,
                memory: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None) -> Tensor:
        """x: (B, S, H); mask: bool, True = attend, broadcastable to (B, heads, S, T);
        memory: (B, T, H) for cross-attention. Returns (B, S, H). Self-attention also takes
        the real tokens alone: x (N, H) with `Unpadded` as the mask -> (N, H)."""
        if self.cross:
            q, k, v = self._cross_qkv(x, memory, cache)  # (B, h, S|T, d)
        else:
            q, k, v = self._self_qkv(x, mask, cache)
        p = self.dropout if self.training else 0.0
        bool_mask = mask.mask if isinstance(mask, Unpadded) else mask
        y = attend(q, k, v, bool_mask, dropout_p=p, is_causal=is_causal,
                   recorder=self.recorder)  # (B, h, S, d)
        if self.head_gate is not None:
            y = y * self.head_gate[:, None, None].to(y.dtype)
        y = self._merge(y)  # (B, S, H)
        if isinstance(mask, Unpadded):
            y = mask.unpad(y)  # (N, H)
        return self.out(y)  # (B, S, H) or (N, H)

    def _self_qkv(self, x: Tensor, mask: Tensor | Unpadded | None,
                  cache: KVCache | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (B, h, S, d) and keys, values (B, h, T, d): the cached ones and x's."""
        qkv = self.qkv(x)  # (B, S, 3H), or (N, 3H) unpadded
        if isinstance(mask, Unpadded):
            qkv = mask.pad(qkv)  # (B, S, 3H)
        q, k, v = (self._split(t) for t in qkv.chunk(3, dim=-1))  # (B, h, S, d) each
        if cache is None:
            return q, k, v
        if x.shape[1] != 1:
            raise ValueError(f"cached decoding takes one position at a time, got {x.shape[1]}")
        if cache.keys is not None and cache.values is not None:
            k = torch.cat([cache.keys, k], dim=2)  # (B, h, t+1, d)
            v = torch.cat([cache.values, v], dim=2)
        cache.keys, cache.values = k, v
        return q, k, v

    def _cross_qkv(self, x: Tensor, memory: Tensor | None,
                   cache: KVCache | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (B, h, S, d) of x and keys, values (B, h, T, d) of the memory."""
        q = self._split(self.q(x))
        if cache is not None and cache.memory is not None:
            return q, *cache.memory
        if memory is None:
            raise ValueError("cross-attention needs the memory")
        k, v = (self._split(t) for t in self.kv(memory).chunk(2, dim=-1))
        if cache is not None:
            cache.memory = (k, v)
        return q, k, v

    def kept(self) -> list[int]:
        """The original indices of the heads this module still has."""
        kept = getattr(self, "kept_heads", None)
        return list(range(self.num_heads)) if kept is None else kept.tolist()

    @torch.no_grad()
    def prune(self, heads: Iterable[int]) -> None:
        """Remove the heads with original indices `heads`: their rows of the query, key and
        value projections and their columns of the output projection."""
        kept = self.kept()
        drop = set(heads)
        if drop - set(kept):
            raise ValueError(f"heads {sorted(drop - set(kept))} are not in this layer "
                             f"(it has {kept})")
        stay = [i for i, h in enumerate(kept) if h not in drop]
        if not stay:
            raise ValueError("cannot prune every head of a layer")
        d, inner = self.head_dim, self.num_heads * self.head_dim
        index = torch.tensor([i * d + j for i in stay for j in range(d)],
                             device=self.out.weight.device)  # (h' d,)
        if self.cross:
            self.q = _select(self.q, index, 0)
            self.kv = _select(self.kv, torch.cat([index, index + inner]), 0)
        else:
            self.qkv = _select(self.qkv, torch.cat([index, index + inner, index + 2 * inner]), 0)
        self.out = _select(self.out, index, 1)
        self.num_heads = len(stay)
        self.register_buffer("kept_heads", torch.tensor([kept[i] for i in stay]))

    def unpruned_state(self) -> dict[str, Tensor]:
        """The projections' parameters at the original head count, a pruned head's rows and
        columns zero: the same outputs (zero values, zero output columns) in the unpruned
        layout."""
        total = self.out.out_features // self.head_dim
        index = torch.tensor([h * self.head_dim + j for h in self.kept()
                              for j in range(self.head_dim)])  # (h' d,)
        names = {"q": 1, "kv": 2} if self.cross else {"qkv": 3}
        state = {}
        for name, parts in names.items():
            linear = getattr(self, name)
            rows = torch.cat([index + i * total * self.head_dim for i in range(parts)])
            for p in ("weight", "bias"):
                value = getattr(linear, p).detach()
                full = value.new_zeros(parts * total * self.head_dim, *value.shape[1:])
                state[f"{name}.{p}"] = full.index_copy(0, rows.to(value.device), value)
        weight = self.out.weight.detach()  # (H, h' d)
        state["out.weight"] = weight.new_zeros(weight.shape[0], total * self.head_dim
                                               ).index_copy(1, index.to(weight.device), weight)
        return state

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        kept = state_dict.get(prefix + "kept_heads")
        if kept is not None and kept.tolist() != self.kept():  # a pruned checkpoint
            self.prune(set(self.kept()) - set(kept.tolist()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _split(self, t: Tensor) -> Tensor:
        b, s, h = t.shape
        return t.view(b, s, self.num_heads, h // self.num_heads).transpose(1, 2)

    @staticmethod
    def _merge(t: Tensor) -> Tensor:
        b, n, s, d = t.shape
        return t.transpose(1, 2).reshape(b, s, n * d)



def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *,
           dropout_p: float = 0.0, scale: float | None = None, is_causal: bool = False,
           recorder: list[Tensor] | None = None) -> Tensor:
    """Attention (B, h, S, d) by SDPA, or written out where that is faster or needed: for a
    `recorder` (which gets the weights), and on a CPU when training: with dropout (SDPA would
    take its math path; the written-out path uses plmkit's cheaper dropout, `nn/dropout.py`)
    and in bf16, where the CPU flash kernel's backward is slow (its forward + backward takes
    1.4-2.6x the written-out one's; in float32 the two are within 2% in a step)."""
    if recorder is None and not writes_out(q, k, dropout_p):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                              scale=scale, is_causal=is_causal)
    y, weights = attention_with_weights(q, k, v, mask, dropout_p=dropout_p, scale=scale,
                                        is_causal=is_causal)
    if recorder is not None:  # with their graph when grad is on (distillation's attention loss)
        recorder.append(weights)
    return y


def writes_out(q: Tensor, k: Tensor, dropout_p: float) -> bool:
    """Whether `attend` writes attention out rather than calling SDPA (see there)."""
    if q.device.type != "cpu":
        return False
    if dropout_p > 0.0:
        return True
    return torch.is_grad_enabled() and q.requires_grad and q.dtype != torch.float32


def attention_with_weights(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *,
                           dropout_p: float = 0.0, scale: float | None = None,
                           is_causal: bool = False) -> tuple[Tensor, Tensor]:
    """`F.scaled_dot_product_attention` written out, also returning its softmax weights.

    q: (B, h, S, d), k, v: (B, h, T, d); mask: bool (True = attend) or additive float,
    broadcastable to (B, h, S, T). Returns the output (B, h, S, d) and weights (B, h, S, T).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, h, S, T)
    if is_causal:
        s, t = scores.shape[-2:]
        future = torch.ones(s, t, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    if mask is not None:
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                  else scores + mask)
    weights = scores.softmax(-1)
    return dropout(weights, dropout_p) @ v, weights


def unpruned_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """`model.state_dict()` with every pruned attention back at its original head count (the
    pruned heads zero, `MultiHeadAttention.unpruned_state`) and without `kept_heads`: for
    formats that have no pruned heads, such as transformers >= 5."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, MultiHeadAttention) and hasattr(module, "kept_heads"):
            state.pop(f"{name}.kept_heads")
            state.update({f"{name}.{k}": v for k, v in module.unpruned_state().items()})
    return state


def _select(linear: nn.Linear, index: Tensor, dim: int) -> nn.Linear:
    """A copy of `linear` keeping the outputs (dim 0) or inputs (dim 1) at `index`."""
    weight = linear.weight.index_select(dim, index)  # (out', in) or (out, in')
    bias = linear.bias if dim == 1 or linear.bias is None else linear.bias[index]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    return new
