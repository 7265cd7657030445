"""Greedy and beam search for encoder-decoder models, with a key/value cache so that every new
token costs one decoder step (`use_cache=False` recomputes the whole prefix, for checking).

Beam search as in "Attention Is All You Need" (Vaswani et al. 2017, section 6.1): beam 4, the
GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^alpha with alpha 0.6 (Wu et al. 2016), and a
maximum output length of input length + 50 (|Y| counts the closing </s>). A sentence is done
once `beam` hypotheses have ended; as in fairseq, an ending counts only when it is among the
`beam` best candidates of its step, so that beam 1 is exactly greedy decoding.

The model needs `config` (`bos_token_id`, `eos_token_id`, `pad_token_id`, `max_positions`),
`encode(input_ids, attention_mask)`, `decode(ids, memory, memory_mask, cache)` and `new_cache()`
(see `plmkit.models.transformer.Transformer`).

`generate_causal` continues a prompt with a causal LM (Transformer-XL, XLNet trained with clm):
greedy, or sampled with a temperature and top-k (`plmkit generate`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.errors import UserError
from plmkit.nn.decoder import DecoderCache
from plmkit.nn.masks import padding_mask
from plmkit.tokenizers import Tokenizer

BEAM = 4
ALPHA = 0.6
MAX_EXTRA = 50


class EncoderDecoder(Protocol):
    config: Any

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor: ...

    def decode(self, decoder_input_ids: Tensor, memory: Tensor, memory_mask: Tensor | None = None,
               cache: DecoderCache | None = None) -> Tensor: ...

    def new_cache(self) -> DecoderCache: ...


@dataclass
class Hypothesis:
    """Generated tokens (no <s>; ending with </s> unless cut off) and their total log-prob."""

    tokens: list[int]
    score: float

    def normalized(self, alpha: float = ALPHA) -> float:
        return self.score / length_penalty(len(self.tokens), alpha)


def length_penalty(length: int, alpha: float = ALPHA) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / (5 + 1))^alpha."""
    return ((5 + length) / 6) ** alpha


class _Steps:
    """Next-token log-probs for a batch of prefixes, from the cache or by full recomputation."""

    def __init__(self, model: EncoderDecoder, memory: Tensor, memory_mask: Tensor | None,
                 use_cache: bool):
        self.model, self.memory, self.memory_mask = model, memory, memory_mask
        self.cache = model.new_cache() if use_cache else None
        self.banned = [model.config.pad_token_id, model.config.bos_token_id]

    def __call__(self, prefix: Tensor) -> Tensor:
        """prefix: (N, t) -> log-probs of token t+1 (N, V)."""
        ids = prefix[:, -1:] if self.cache is not None else prefix
        logits = self.model.decode(ids, self.memory, self.memory_mask, self.cache)  # (N, *, V)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)  # (N, V)
        logp[:, self.banned] = float("-inf")  # <pad> and <s> are never outputs
        return logp

    def reorder(self, index: Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)


def _start(model: EncoderDecoder, input_ids: Tensor, attention_mask: Tensor | None,
           copies: int, max_extra: int, use_cache: bool) -> tuple[_Steps, Tensor]:
    """Encode once; returns the stepper over `copies` rows per sentence and the per-row length
    limits (N,)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    memory = model.encode(input_ids, attention_mask).repeat_interleave(copies, 0)  # (N, S, H)
    mask = padding_mask(attention_mask)  # (B, 1, 1, S) or None
    if mask is not None:
        mask = mask.repeat_interleave(copies, 0)
    limits = (attention_mask.sum(1) + max_extra).clamp(max=model.config.max_positions)
    return _Steps(model, memory, mask, use_cache), limits.repeat_interleave(copies)  # (N,)


def _force_eos(logp: Tensor, at_limit: Tensor, eos: int) -> Tensor:
    """Rows at their length limit (N,) may only end: every other token gets -inf."""
    forced = torch.full_like(logp, float("-inf"))
    forced[:, eos] = logp[:, eos]
    return torch.where(at_limit[:, None], forced, logp)


@torch.no_grad()
def greedy(model: EncoderDecoder, input_ids: Tensor, attention_mask: Tensor | None = None, *,
           max_extra: int = MAX_EXTRA, use_cache: bool = True) -> list[Hypothesis]:
    """The most probable token at each step, for each source (B, S)."""
    cfg = model.config
    steps, limits = _start(model, input_ids, attention_mask, 1, max_extra, use_cache)
    n = input_ids.shape[0]
    prefix = torch.full((n, 1), cfg.bos_token_id, dtype=torch.long, device=input_ids.device)
    scores = torch.zeros(n, device=input_ids.device)
    done = torch.zeros(n, dtype=torch.bool, device=input_ids.device)
    for t in range(int(limits.max())):
        logp = _force_eos(steps(prefix), t + 1 >= limits, cfg.eos_token_id)  # (N, V)
        best, token = logp.max(-1)  # (N,) each
        token = token.masked_fill(done, cfg.pad_token_id)
        scores += best.masked_fill(done, 0.0)
        prefix = torch.cat([prefix, token[:, None]], dim=1)  # (N, t+2)
        done |= token == cfg.eos_token_id
        if done.all():
            break
    return [Hypothesis(_until_eos(row, cfg.eos_token_id), float(s))
            for row, s in zip(prefix[:, 1:].tolist(), scores.tolist(), strict=True)]


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


@torch.no_grad()
def beam_search(model: EncoderDecoder, input_ids: Tensor, attention_mask: Tensor | None = None,
                *, beam: int = BEAM, alpha: float = ALPHA, max_extra: int = MAX_EXTRA,
                use_cache: bool = True) -> list[Hypothesis]:
    """The best of `beam` hypotheses by length-normalized log-prob, for each source (B, S)."""
    cfg = model.config
    b, k = input_ids.shape[0], beam
    steps, limits = _start(model, input_ids, attention_mask, k, max_extra, use_cache)
    device = input_ids.device
    prefix = torch.full((b * k, 1), cfg.bos_token_id, dtype=torch.long, device=device)
    beam_scores = torch.full((b, k), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0  # one live beam at the start
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    for t in range(int(limits.max())):
        logp = _force_eos(steps(prefix), t + 1 >= limits, cfg.eos_token_id)  # (B*K, V)
        vocab = logp.shape[-1]
        candidates = (beam_scores.view(-1, 1) + logp).view(b, k * vocab)  # (B, K*V)
        top_scores, top = candidates.topk(2 * k, dim=1)  # (B, 2K)
        rows, tokens, scores = _select(top_scores.tolist(), top.tolist(), prefix, finished,
                                       k, vocab, cfg)
        if all(len(f) >= k for f in finished):
            break
        index = torch.tensor(rows, device=device)  # (B*K,)
        steps.reorder(index)
        next_tokens = torch.tensor(tokens, device=device)[:, None]
        prefix = torch.cat([prefix.index_select(0, index), next_tokens], dim=1)  # (B*K, t+2)
        beam_scores = torch.tensor(scores, device=device).view(b, k)
    return [max(f, key=lambda h: h.normalized(alpha)) for f in finished]


def _select(top_scores: list[list[float]], top: list[list[int]], prefix: Tensor,
            finished: list[list[Hypothesis]], k: int, vocab: int,
            cfg: Any) -> tuple[list[int], list[int], list[float]]:
    """Per sentence: endings among the `k` best candidates join `finished`; the `k` best other
    candidates are the next beams. Returns their rows, tokens and scores (B*K each); a done
    sentence keeps dead beams (score -inf)."""
    rows: list[int] = []
    tokens: list[int] = []
    scores: list[float] = []
    for i, (cand_scores, cand) in enumerate(zip(top_scores, top, strict=True)):
        live: list[tuple[int, int, float]] = []
        for j, (score, flat) in enumerate(zip(cand_scores, cand, strict=True)):
            if len(finished[i]) >= k or len(live) == k or score == float("-inf"):
                break
            row, token = i * k + flat // vocab, flat % vocab
            if token == cfg.eos_token_id:
                if j < k:
                    finished[i].append(Hypothesis([*prefix[row, 1:].tolist(), token], score))
            else:
                live.append((row, token, score))
        live += [(i * k, cfg.pad_token_id, float("-inf"))] * (k - len(live))
        for row, token, score in live:
            rows.append(row)
            tokens.append(token)
            scores.append(score)
    return rows, tokens, scores


@torch.no_grad()
def generate_causal(model: Any, prompt: list[int], max_new_tokens: int = 50,
                    temperature: float = 0.0, top_k: int = 0, eos_id: int | None = None,
                    context: int = 512, generator: torch.Generator | None = None) -> list[int]:
    """Continue `prompt` (token ids) with a causal LM (`lm_logits`, attn_type "uni": a
    Transformer-XL, or XLNet trained with clm): greedy at temperature 0, else sampled from
    softmax(logits / temperature), among the `top_k` best when > 0. Each step recomputes the
    last `context` tokens; stops after `eos_id`. Returns the new tokens."""
    if not prompt:
        raise ValueError("generation needs a prompt of at least one token")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)  # (1, t)
    new: list[int] = []
    for _ in range(max_new_tokens):
        hidden = model(ids[:, -context:]).last_hidden_state  # (1, t', H)
        logits = model.lm_logits(hidden[:, -1]).float()[0]  # (V,)
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            if top_k > 0:
                cut = logits.topk(min(top_k, logits.shape[0])).values[-1]
                logits = logits.masked_fill(logits < cut, float("-inf"))
            probs = F.softmax(logits / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        new.append(token)
        ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
        if token == eos_id:
            break
    warn_blank(new[:1] == [eos_id], 1)
    return new


def check_causal(model: Any, where: object = "the model") -> Any:
    """`model` if it generates text (`generate_causal`), else a UserError naming `where`."""
    if getattr(model.config, "attn_type", None) != "uni" or not hasattr(model, "lm_logits"):
        raise UserError(f"{where}: a {model.config.family} model does not generate text "
                        "(use a transfo-xl or clm-trained model, or a seq2seq model)")
    return model


def continue_prompts(model: Any, tok: Tokenizer, prompts: Sequence[str], max_new_tokens: int = 50,
                     temperature: float = 0.0, top_k: int = 0, seed: int = 0) -> Iterator[str]:
    """Each prompt with its continuation by a causal LM (`generate_causal`, stopping at the
    separator token), as text, one at a time; a prompt without tokens is a UserError."""
    generator = torch.Generator().manual_seed(seed)
    for prompt in prompts:
        ids = tok.encode(prompt)
        if not ids:
            raise UserError(f"the prompt {prompt!r} has no tokens")
        new = generate_causal(model, ids, max_new_tokens, temperature, top_k,
                              eos_id=tok.sep_id, generator=generator)
        yield tok.decode(ids + new).strip()


def warn_blank(blank: int, total: int) -> None:
    """One line on stderr when `blank` of `total` outputs ended with end-of-sequence as their
    first token (blank lines): the mark of a model that has not learnt yet."""
    if blank:
        print(f"plmkit: warning: {blank} of {total} outputs are blank (the model emits "
              "end-of-sequence first); it needs more training (--steps)", file=sys.stderr)
