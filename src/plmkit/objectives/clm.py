"""Causal language modelling with segment-level recurrence (Transformer-XL, Dai et al. 2019):
train on consecutive segments of each row of the corpus, each attending to the cached hidden
states of the previous one; evaluate a long text either with that memory (each segment is
computed once, section 3.2) or as the vanilla model does, sliding a window one token at a time
and recomputing the whole context for every prediction (section 3.1, Figure 1c).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.data.batches import Batches
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.data.xlnet import LMStream
from plmkit.errors import UserError
from plmkit.objectives.mlm import masked_cross_entropy
from plmkit.objectives.plm import Memory
from plmkit.objectives.protocols import RelativeLM

Batch = dict[str, Tensor]


def check_causal(model: object) -> None:
    """Raise unless `model` is a causal relative model (attn_type "uni") with an LM head."""
    config = getattr(model, "config", None)
    if getattr(config, "attn_type", None) != "uni" or not hasattr(model, "lm_logits"):
        raise UserError("--objective clm needs a causal model with memory: a transfo-xl preset "
                        "(or an xlnet config with attn_type='uni')")


class CausalLM:
    """The `clm` objective: next-token cross entropy over every position, with memory."""

    name = "clm"

    def __init__(self) -> None:
        self.memory = Memory()
        self.state_dict, self.load_state_dict = self.memory.state_dict, self.memory.load_state_dict

    def batches(self, corpus: ShardedCorpus, vocab: Any, options: DataOptions, seq_len: int,
                seed: int) -> Batches:
        """Each row of the corpus, `seq_len` tokens per batch."""
        return Batches(LMStream(corpus, options.batch_size, seq_len, seed), options.batch_size)

    def __call__(self, model: RelativeLM, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        check_causal(model)
        out = model(batch["input_ids"], mems=self.memory.get(batch["mem_key"]), use_mems=True)
        self.memory.put(batch["mem_key"], out.mems)
        logits = model.lm_logits(out.last_hidden_state)  # (B, S, V)
        return masked_cross_entropy(logits, batch["labels"], torch.ones_like(batch["labels"]),
                                    "clm")


@dataclass
class LMEvaluation:
    """Perplexity of `tokens` predictions, how fast they were made and how many token
    positions the model computed for them (`positions`: the work, independent of the clock).
    `steady_tokens` and `steady_seconds`: the predictions made, and their time, once each one
    sees the whole attention length (the memory full, or a full window), as on a long text;
    the predictions before are cheaper both ways."""

    perplexity: float
    tokens: int
    seconds: float
    context: int  # attention length: segment + memory, or the sliding window
    positions: int
    steady_tokens: int
    steady_seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def steady_tokens_per_s(self) -> float:
        """NaN when the text is too short to reach the steady state."""
        return self.steady_tokens / self.steady_seconds if self.steady_tokens else math.nan


@torch.no_grad()
def evaluate_with_memory(model: nn.Module, text: Tensor, seq_len: int) -> LMEvaluation:
    """text: (N,) token ids. Predict tokens 1..N-1 segment by segment, each segment attending to
    the model's `mem_len` cached states of the ones before."""
    check_causal(model)
    model.eval()
    mem_len = model.config.mem_len or 0
    start, nll, mems, positions = time.perf_counter(), torch.zeros(()), None, 0
    steady = None  # when the segments begin to see mem_len cached states
    for begin in range(0, len(text) - 1, seq_len):
        if begin >= mem_len and steady is None:
            steady = (time.perf_counter(), begin)
        window = text[begin: begin + seq_len + 1][None]  # (1, s + 1)
        out = model(window[:, :-1], mems=mems, use_mems=True)
        mems, positions = out.mems, positions + window.shape[1] - 1
        logits = model.lm_logits(out.last_hidden_state)  # (1, s, V)
        nll += F.cross_entropy(logits[0].float(), window[0, 1:], reduction="sum")
    n, end = len(text) - 1, time.perf_counter()
    at, first = steady or (end, n)
    return LMEvaluation(math.exp(nll.item() / n), n, end - start, seq_len + mem_len, positions,
                        n - first, end - at)


@torch.no_grad()
def evaluate_sliding(model: nn.Module, text: Tensor, context: int,
                     batch_size: int = 64) -> LMEvaluation:
    """text: (N,) token ids. The vanilla evaluation: the first `context` predictions from one
    window, then each later token from the `context` tokens before it, recomputed every time
    (windows batched `batch_size` at a time)."""
    check_causal(model)
    model.eval()
    start = time.perf_counter()
    first = text[: context + 1][None]  # (1, c + 1)
    logits = model.lm_logits(model(first[:, :-1]).last_hidden_state)  # (1, c, V)
    nll = F.cross_entropy(logits[0].float(), first[0, 1:], reduction="sum")
    windows = text[:-1].unfold(0, context, 1)[1:]  # (N-1-c, c): the window before token t
    targets = text[context + 1:]  # (N-1-c,)
    steady = time.perf_counter()  # from here each prediction has a full window
    for i in range(0, len(windows), batch_size):
        hidden = model(windows[i: i + batch_size]).last_hidden_state[:, -1]  # (b, H)
        logits = model.lm_logits(hidden)  # (b, V)
        nll += F.cross_entropy(logits.float(), targets[i: i + batch_size], reduction="sum")
    n, end = len(text) - 1, time.perf_counter()
    positions = first.shape[1] - 1 + windows.numel()
    return LMEvaluation(math.exp(nll.item() / n), n, end - start, context, positions,
                        len(windows), end - steady)
