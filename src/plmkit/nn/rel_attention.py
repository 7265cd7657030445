"""Relative multi-head attention with segment-level recurrence (Transformer-XL, Dai et al. 2019)
and XLNet's two-stream attention with relative segment encodings (Yang et al. 2019).

Everything is batch-first. A layer's keys and values run over T = M + S positions: the memory
of M cached hidden states of the previous segment (no gradient), then the S current ones. Masks
are bool (B, S, T), True = may attend. The score of query i (absolute position M + i), key j
(Dai et al. 2019, section 3.3; Yang et al. 2019, section 2.5):

    (q_i + u) . k_j  +  (q_i + v) . W_r R_{M+i-j}  [+ (q_i + b) . s_ij  XLNet segments]

with content keys k = W_k x and position keys W_r R from separate projections, R the sinusoid
of the relative distance, u, v (r_w_bias, r_r_bias) learned global biases, and s_ij one of two
learned vectors: "same segment" or "different segment" (memory counts as segment 0).
The two streams (XLNet section 2.3) share every weight: the content stream h attends as usual,
the query stream g of each target attends to the content keys but never to its own content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.attention import attend
from plmkit.nn.block import FeedForward
from plmkit.nn.config import StackConfig
from plmkit.nn.dropout import Dropout, KernelDropout
from plmkit.nn.positions import sinusoids

AttnType = Literal["bi", "uni"]
NEG = -1e30  # a masked score (XLNet's reference value): a fully masked row stays finite
PROJECTIONS = ("q", "k", "v", "o", "r")


@dataclass
class RelativeConfig(StackConfig):
    """Shape, regularisation and memory of a Transformer-XL / XLNet stack; each model file
    subclasses it with its `family` and paper defaults (here XLNet-base, Yang et al. 2019).

    `attn_type` "bi" attends everywhere (XLNet), "uni" only to the past (a causal LM, as
    Transformer-XL). `segments` adds XLNet's relative segment encodings. `mem_len` hidden
    states per layer are cached for the next segment (None: all); of each segment only the
    first `reuse_len` positions are cached (None: all; XLNet pretraining caches the first half).
    `clamp_len` > 0 caps relative distances.
    """

    family: str = "relative"
    vocab_size: int = 32000
    initializer_range: float = 0.02
    attn_type: AttnType = "bi"
    segments: bool = True
    mem_len: int | None = None
    reuse_len: int | None = None
    clamp_len: int = -1



@dataclass
class RelativeOutput:
    """The content stream (B, S, H), the query stream of the targets (B, P, H) when asked for,
    and the new memory (one (B, M', H) tensor per layer) when `use_mems`."""

    last_hidden_state: Tensor
    query_hidden_state: Tensor | None = None
    mems: list[Tensor] | None = None


class RelKeys(NamedTuple):
    """Per-head content keys and values (B, T, n, d) and position keys (R, n, d)."""

    k: Tensor
    v: Tensor
    r: Tensor


class Queries(NamedTuple):
    """What one stream's attention needs besides its states: mask (B, S', T) bool or None, the
    row of the position table for each (query, key) (B|1, S', T), segment difference (B, S', T)
    1 / 0 (float) or None."""

    mask: Tensor | None
    index: Tensor
    segments: Tensor | None


def relative_encoding(qlen: int, klen: int, d: int, attn_type: AttnType = "bi",
                      clamp_len: int = -1, device: torch.device | None = None) -> Tensor:
    """Sinusoids of the distances klen, klen-1, ..., down to 1-qlen ("bi") or 0 ("uni"):
    (R, d) with R = klen + qlen or klen + 1; row p is distance klen - p (XLNet's layout)."""
    end = -qlen if attn_type == "bi" else -1
    distances = torch.arange(klen, end, -1, device=device, dtype=torch.float32)  # (R,)
    if clamp_len > 0:
        distances = distances.clamp(-clamp_len, clamp_len)
    return sinusoids(distances, d)  # (R, d)


def relative_index(positions: Tensor, qlen: int, klen: int, rows: int) -> Tensor:
    """positions: (B|1, S') query positions in the current segment -> (B|1, S', T) the row of
    the encoding table for each key: distance (M + i) - j is row qlen - i + j; rows past the
    table (future keys of a causal model, masked anyway) are clamped."""
    keys = torch.arange(klen, device=positions.device)
    return (qlen - positions[..., None] + keys).clamp(max=rows - 1)  # (B|1, S', T)


def attention_masks(batch: int, qlen: int, mlen: int, attention_mask: Tensor | None,
                    perm_mask: Tensor | None, attn_type: AttnType, device: torch.device
                    ) -> tuple[Tensor | None, Tensor | None]:
    """(content, query) masks (B, S, T) bool, or None when all may attend everywhere.

    Key j is hidden from query i when it is padding (`attention_mask` 0), when `perm_mask[b, i,
    j]` is 1 (XLNet's convention: i may not see j), or is in the future ("uni"); the memory is
    always visible. The content stream always sees itself, the query stream only as the
    permutation allows.
    """
    blocked = None  # (B|1, S, S)
    if attn_type == "uni":
        blocked = torch.ones(qlen, qlen, dtype=torch.bool, device=device).triu(1)[None]
    if attention_mask is not None:
        pad = (attention_mask == 0)[:, None, :]  # (B, 1, S)
        blocked = pad if blocked is None else blocked | pad
    if perm_mask is not None:
        blocked = perm_mask.bool() if blocked is None else blocked | perm_mask.bool()
    if blocked is None:
        return None, None
    query = ~blocked.expand(batch, qlen, qlen)  # (B, S, S)
    content = query | torch.eye(qlen, dtype=torch.bool, device=device)
    if mlen:
        memory = torch.ones(batch, qlen, mlen, dtype=torch.bool, device=device)
        query, content = (torch.cat([memory, m], dim=2) for m in (query, content))  # (B, S, T)
    return content, query


def segment_difference(token_type_ids: Tensor, mlen: int, dtype: torch.dtype) -> Tensor:
    """(B, S) segment ids -> (B, S, T) 1 where key j is in another segment than query i, else
    0, in `dtype`; the memory counts as segment 0 (XLNet's reference)."""
    keys = F.pad(token_type_ids, (mlen, 0))  # (B, T)
    return (token_type_ids[:, :, None] != keys[:, None, :]).to(dtype)


def update_memory(prev: Tensor | None, current: Tensor, mem_len: int | None,
                  reuse_len: int | None) -> Tensor:
    """The next segment's memory of one layer: the previous memory (B, M, H) then the first
    `reuse_len` of the layer's current inputs (B, S, H), the last `mem_len` kept, no gradient
    (Dai et al. 2019, section 3.2)."""
    current = current[:, :reuse_len] if reuse_len else current
    new = current if prev is None else torch.cat([prev, current], dim=1)
    return (new[:, -mem_len:] if mem_len else new).detach()


class RelativeAttention(nn.Module, KernelDropout):
    """Multi-head attention with relative positions (and segments), post-LN residual.

    Projections are (H, n, d) matrices without biases, named as in XLNet's reference; the
    scores go through `F.scaled_dot_product_attention` with the position and segment terms as
    its additive mask. `recorder` and `head_gate` inspect it as they do `MultiHeadAttention`.
    """

    def __init__(self, hidden: int, num_heads: int, *, dropout: float = 0.1,
                 eps: float = 1e-12, segments: bool = False):
        super().__init__()
        n, d = num_heads, hidden // num_heads
        for name in PROJECTIONS:
            self.register_parameter(name, nn.Parameter(torch.empty(hidden, n, d)))
        self.r_w_bias = nn.Parameter(torch.empty(n, d))  # u
        self.r_r_bias = nn.Parameter(torch.empty(n, d))  # v
        if segments:
            self.r_s_bias = nn.Parameter(torch.empty(n, d))
            self.seg_embed = nn.Parameter(torch.empty(2, n, d))  # same / different segment
        self.segments = segments
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = Dropout(dropout)
        self.dropout = dropout
        self.num_heads = num_heads
        self.recorder: list[Tensor] | None = None
        self.head_gate: Tensor | None = None

    def keys(self, context: Tensor, pos: Tensor) -> RelKeys:
        """context: (B, T, H) memory and current states, pos: (R, H) encodings."""
        return RelKeys(_project(context, self.k), _project(context, self.v),
                       _project(pos, self.r))

    def forward(self, x: Tensor, keys: RelKeys, queries: Queries) -> Tensor:
        """x: (B, S', H) one stream's states -> LayerNorm(x + dropout(attention)) (B, S', H)."""
        b, s = x.shape[:2]
        n, d = self.q.shape[1:]
        scale = d**-0.5
        q = _project(x, self.q * scale)  # (B, S', n, d), scaled once for all three terms
        bd = torch.einsum("bsnd,rnd->bnsr", q + self.r_r_bias * scale, keys.r)  # (B,n,S',R)
        index = queries.index[:, None].expand(b, n, s, -1)  # (B, n, S', T)
        bias = bd.gather(3, index)  # (B, n, S', T)
        if self.segments and queries.segments is not None:
            e = torch.einsum("bsnd,knd->bnsk", q + self.r_s_bias * scale, self.seg_embed)
            # softmax ignores a constant per query: "same" adds 0, "different" adds e1 - e0
            bias = torch.addcmul(bias, queries.segments[:, None], e[..., 1:] - e[..., :1])
        if queries.mask is not None:
            bias = bias.masked_fill(~queries.mask[:, None], NEG)
        p = self.dropout if self.training else 0.0
        args = ((q + self.r_w_bias * scale).transpose(1, 2), keys.k.transpose(1, 2),
                keys.v.transpose(1, 2), bias.to(q.dtype))
        y = attend(*args, dropout_p=p, scale=1.0, recorder=self.recorder)  # (B, n, S', d)
        if self.head_gate is not None:
            y = y * self.head_gate[:, None, None].to(y.dtype)
        y = y.transpose(1, 2).flatten(2) @ self.o.flatten(1).T  # (B, S', H)
        return self.norm(x + self.drop(y))


def _project(x: Tensor, weight: Tensor) -> Tensor:
    """x: (..., H), weight: (H, n, d) -> (..., n, d)."""
    return (x @ weight.flatten(1)).unflatten(-1, weight.shape[1:])


class RelativeBlock(nn.Module):
    """Relative attention then feed-forward (dropout inside and after, post-LN), applied to the
    content stream and, when given, to the query stream with the same weights."""

    def __init__(self, cfg: RelativeConfig):
        super().__init__()
        h = cfg.hidden_size
        self.attn = RelativeAttention(h, cfg.num_heads, dropout=cfg.dropout,
                                      eps=cfg.layer_norm_eps, segments=cfg.segments)
        self.ffn = FeedForward(h, cfg.intermediate_size, cfg.activation)
        self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, h: Tensor, g: Tensor | None, pos: Tensor, content: Queries,
                query: Queries | None, memory: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """h: (B, S, H), g: (B, P, H) or None, pos: (R, H), memory: (B, M, H) or None."""
        context = h if memory is None else torch.cat([memory, h], dim=1)  # (B, T, H)
        keys = self.attn.keys(context, pos)
        h = self._feed_forward(self.attn(h, keys, content))
        if g is not None and query is not None:
            g = self._feed_forward(self.attn(g, keys, query))
        return h, g

    def _feed_forward(self, x: Tensor) -> Tensor:
        f = self.ffn
        y = f.down(self.drop(f.act(f.up(x))))  # (B, S, H)
        return self.ffn_norm(x + self.drop(y))


class RelativeEncoder(nn.Module):
    """The layer stack with its masks, relative encodings and memory (Transformer-XL, XLNet).

    Takes the embedded content stream h (B, S, H) and, for two-stream attention, the query
    stream g (B, P, H) of the P targets whose positions `target_mapping` (B, P, S) one-hot
    gives. Each layer's input is cached as memory (`update_memory`) when `use_mems`.
    """

    def __init__(self, cfg: RelativeConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(RelativeBlock(cfg) for _ in range(cfg.num_layers))
        self.drop = Dropout(cfg.dropout)

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        g: Tensor | None = None,
        perm_mask: Tensor | None = None,
        target_mapping: Tensor | None = None,
        mems: list[Tensor] | None = None,
        use_mems: bool = False,
    ) -> RelativeOutput:
        cfg = self.cfg
        b, s, _ = h.shape
        mlen = mems[0].shape[1] if mems else 0
        klen = mlen + s
        pos = relative_encoding(s, klen, cfg.hidden_size, cfg.attn_type, cfg.clamp_len, h.device)
        pos = self.drop(pos.to(h.dtype))  # (R, H)
        content_mask, query_mask = attention_masks(b, s, mlen, attention_mask, perm_mask,
                                                   cfg.attn_type, h.device)
        segments = None
        if cfg.segments and token_type_ids is not None:
            segments = segment_difference(token_type_ids, mlen, h.dtype)  # (B, S, T)
        index = relative_index(torch.arange(s, device=h.device)[None], s, klen, pos.shape[0])
        content = Queries(content_mask, index, segments)
        query = None
        if g is not None and target_mapping is not None:
            targets = target_mapping.argmax(-1)  # (B, P)
            query = Queries(_rows(query_mask, targets), relative_index(targets, s, klen,
                            pos.shape[0]), _rows(segments, targets))
            g = self.drop(g)
        h = self.drop(h)
        new_mems = []
        for i, layer in enumerate(self.layers):
            if use_mems:
                new_mems.append(update_memory(mems[i] if mems else None, h, cfg.mem_len,
                                              cfg.reuse_len))
            h, g = layer(h, g, pos, content, query, mems[i] if mems else None)
        return RelativeOutput(h, g if query is not None else None,
                              new_mems if use_mems else None)


def _rows(x: Tensor | None, rows: Tensor) -> Tensor | None:
    """x: (B, S, T), rows: (B, P) -> (B, P, T)."""
    if x is None:
        return None
    return x.gather(1, rows[..., None].expand(-1, -1, x.shape[2]))


def init_relative(module: nn.Module, std: float) -> None:
    """N(0, std) for the relative-attention projections and biases (XLNet's initializer)."""
    for m in module.modules():
        if isinstance(m, RelativeAttention):
            for p in m.parameters(recurse=False):
                nn.init.normal_(p, std=std)
