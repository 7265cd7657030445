"""Permutation language modelling (XLNet, Yang et al. 2019, section 2): maximise the likelihood
of a sequence over sampled factorization orders, expressed as attention masks (the tokens are
never reordered), predicting only the last 1/K of each order (partial prediction, K = 6,
section 2.3) from the query stream, which sees the position but not the content of its target.

Targets are spans of up to 5 whole words, p(n) proportional to 1/n, each with a context of
about 6n unpredicted tokens around it, topped up at random to exactly S/K per sequence (the
reference's `_sample_mask`: mask_alpha 6, mask_beta 1, num_predict 85 of 512; `data/masking.py`
`span_targets`), sampled apart in the reused part (43 of 85) and in the rest (42), as the
reference's `create_tfrecords` does.
Non-target tokens come first in the order and see each other; the targets and the [SEP] / [CLS]
tokens follow in a random order (`permutation_masks`, the reference's `_local_perm`).

Memory: consecutive batches of a stream continue each row's text; the hidden states of each
segment's first `reuse_len` tokens are cached, up to `mem_len`, for the next batch (no gradient;
the trainer checkpoints it through `state_dict`, so a resumed run goes on with it). The next
segment begins with the tokens that follow the reused part, so the reused part has its own
factorization order and never sees the rest, which sees all of it (the reference's two
`_local_perm` calls); else the memory would hand each of those targets its own token.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.data.batches import Batches
from plmkit.data.masking import span_targets
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.data.xlnet import Instance, XLNetDataConfig, XLNetStream
from plmkit.nn.rel_attention import RelativeOutput
from plmkit.objectives.mlm import masked_cross_entropy
from plmkit.objectives.protocols import RelativeLM

Batch = dict[str, Tensor]
K = 6  # partial prediction: 1/K of the tokens are predicted (section 2.3)
_TARGETS, _ORDER = 1, 2  # random-stream tags


def permutation_masks(is_target: Tensor, is_functional: Tensor,
                      generator: torch.Generator | None = None, reuse_len: int = 0) -> Tensor:
    """is_target, is_functional ([SEP], [CLS]): (B, S) bool -> perm_mask (B, S, S) bool,
    True = query i may not see token j (XLNet's convention).

    A random factorization order ranks the targets and functional tokens; every other token
    ranks first (-1): it sees all of them and none of the hidden ones. A target sees exactly
    the tokens before it in the order, never itself; a functional token also sees itself.

    With `reuse_len`, the first `reuse_len` tokens (the part cached as the next segment's
    memory) and the rest are ordered apart, and the rest comes after: it sees all of the reused
    part, which sees none of it (the reference's two `_local_perm` calls). Otherwise the cache
    would carry the next segment's tokens, targets included, into its memory.
    """
    b, s = is_target.shape
    order = torch.rand(b, s, generator=generator).argsort(-1).argsort(-1)  # (B, S) ranks
    order = order.to(is_target.device)  # its restriction to each part is a uniform order too
    hidden = is_target | is_functional  # content not visible to all
    rank = torch.where(hidden, order, torch.full_like(order, -1))  # (B, S)
    own = torch.where(is_target, rank, rank + 1)  # a target may not see its own rank
    perm = (own[:, :, None] <= rank[:, None, :]) & hidden[:, None, :]  # (B, S, S)
    perm[:, :reuse_len, reuse_len:] = True
    perm[:, reuse_len:, :reuse_len] = False
    return perm


def target_mapping(is_target: Tensor, num_predict: int) -> tuple[Tensor, Tensor, Tensor]:
    """is_target: (B, S) bool -> one-hot target_mapping (B, P, S) float, positions (B, P),
    weights (B, P) (0 for padding when a row has fewer than P targets)."""
    count = is_target.sum(-1, keepdim=True)  # (B, 1)
    positions = is_target.float().argsort(dim=-1, descending=True, stable=True)[:, :num_predict]
    positions = positions.sort(-1).values  # (B, P) targets first, in sequence order
    weights = (torch.arange(num_predict, device=is_target.device) < count).float()  # (B, P)
    positions = torch.where(weights.bool(), positions, torch.zeros_like(positions))
    mapping = F.one_hot(positions, is_target.shape[1]).float() * weights[..., None]
    return mapping, positions, weights


class PLMStream(XLNetStream):
    """XLNet segments with their targets and factorization order: adds `perm_mask` (B, S, S),
    `target_mapping` (B, P, S), `target_positions`, `target_ids`, `target_weights` (B, P)."""

    def __init__(self, corpus: ShardedCorpus, vocab: Any, rows: int, config: XLNetDataConfig,
                 seed: int = 0, k: int = K):
        super().__init__(corpus, vocab, rows, config, seed)
        self.num_predict = max(1, config.seq_len // k)
        reused = -(-self.num_predict * config.reuse_len // config.seq_len)  # ceil: P - P // 2
        self.goals = reused, self.num_predict - reused  # targets: reused part, rest (43, 42)
        self.word_start = ~np.asarray(vocab.is_continuation, dtype=bool)  # (V,)
        self.special = np.zeros(len(self.word_start), dtype=bool)
        self.special[list(vocab.special_ids)] = True

    def instance(self, epoch: int, step: int, row: int) -> Instance:
        x = super().instance(epoch, step, row)
        ids, reuse = x["input_ids"], self.config.reuse_len
        rng = self.rng(_TARGETS, epoch, step, row)
        x["is_target"] = np.concatenate([
            span_targets(self.word_start[part], ~self.special[part], goal, rng)
            for part, goal in zip((ids[:reuse], ids[reuse:]), self.goals, strict=True)])
        return x

    def collate(self, instances: list[Instance]) -> dict[str, Tensor]:
        batch = super().collate(instances)
        is_target = batch.pop("is_target")
        ids = batch["input_ids"]
        functional = (ids == self.vocab.sep_id) | (ids == self.vocab.cls_id)
        epoch, step = (int(v) for v in batch["mem_key"][1:])
        seed = np.random.SeedSequence([self.seed, _ORDER, epoch, step]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        batch["perm_mask"] = permutation_masks(is_target, functional, generator,
                                               self.config.reuse_len)
        mapping, positions, weights = target_mapping(is_target, self.num_predict)
        batch["target_mapping"], batch["target_positions"] = mapping, positions
        batch["target_ids"], batch["target_weights"] = ids.gather(1, positions), weights
        return batch


class Memory:
    """The cached hidden states of the streams an objective has seen, one entry per stream:
    used for a batch only when it directly follows the cached one (`mem_key`)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple[int, int], list[Tensor]]] = {}

    def get(self, key: Tensor) -> list[Tensor] | None:
        stream, epoch, step = (int(v) for v in key)
        cached = self._cache.get(stream)
        if cached is None or cached[0] != (epoch, step - 1):
            return None
        return cached[1]

    def put(self, key: Tensor, mems: list[Tensor] | None) -> None:
        stream, epoch, step = (int(v) for v in key)
        if mems is not None:
            self._cache[stream] = ((epoch, step), mems)

    def state_dict(self) -> dict[str, Any]:
        """The cache as tensors and primitives, so that a checkpoint resumes exactly."""
        return {str(stream): {"key": list(key), "mems": mems}
                for stream, (key, mems) in self._cache.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cache = {int(s): (tuple(v["key"]), list(v["mems"])) for s, v in state.items()}


class PermutationLM:
    """The `plm` objective: XLNet's permutation LM on the query stream, with memory."""

    name = "plm"

    def __init__(self) -> None:
        self.memory = Memory()
        self._warned = False
        self.state_dict, self.load_state_dict = self.memory.state_dict, self.memory.load_state_dict

    def model_fields(self, seq_len: int) -> dict[str, int]:
        """The model caches the first half of each segment: the part the next one reuses."""
        return {"reuse_len": seq_len // 2}

    def batches(self, corpus: ShardedCorpus, vocab: Any, options: DataOptions, seq_len: int,
                seed: int) -> Batches:
        """Segments of `seq_len` whose first half is reused as the next one's memory."""
        config = XLNetDataConfig(seq_len=seq_len, **self.model_fields(seq_len))
        return Batches(PLMStream(corpus, vocab, options.batch_size, config, seed),
                       options.batch_size)

    def __call__(self, model: RelativeLM, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model.lm_logits(self.forward(model, batch).query_hidden_state)  # (B, P, V)
        return masked_cross_entropy(logits, batch["target_ids"], batch["target_weights"], "plm")

    def forward(self, model: RelativeLM, batch: Batch) -> RelativeOutput:
        """The model's two streams on `batch`, with the memory of the batch before it; caches
        this batch's memory for the next."""
        use_mems = self._memory_fits(model, batch)
        mems = self.memory.get(batch["mem_key"]) if use_mems else None
        out = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                    perm_mask=batch["perm_mask"], target_mapping=batch["target_mapping"],
                    mems=mems, use_mems=use_mems)
        self.memory.put(batch["mem_key"], out.mems)
        return out

    def _memory_fits(self, model: RelativeLM, batch: Batch) -> bool:
        """Memory is right only when the model caches exactly the reused part."""
        reuse = int(batch["reuse_len"][0])
        config = model.config
        if not config.mem_len or config.reuse_len == reuse:
            return bool(config.mem_len)
        if not self._warned:
            warnings.warn(f"the model caches reuse_len={config.reuse_len} tokens but the data "
                          f"reuses {reuse} (half of --seq-len): training without memory",
                          stacklevel=3)
            self._warned = True
        return False

