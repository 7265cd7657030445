"""Attention head pruning (`plmkit prune`): remove heads physically (smaller query, key, value
and output matrices), chosen by hand (`--heads 0:1,3:5`) or as the least important fraction
by Michel et al. (2019)'s gradient score (`plmkit.deploy.inspect.head_importance`), ranked across
all layers after each layer's scores are normalized, never a layer's last head.

A pruned plmkit model saves and loads pruned (`MultiHeadAttention.kept_heads`); exported to
transformers (`plmkit.save_hf`) the pruned heads come back as zeros, since transformers 5
has no pruned heads: the same outputs, at the unpruned size.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

import plmkit
from plmkit.deploy.inspect import attention_modules, backbone_of, head_importance
from plmkit.errors import UserError
from plmkit.interop.native import FINETUNE_CONFIG, TOKENIZER_DIR, saved_options, tokenizer_dir
from plmkit.nn.attention import MultiHeadAttention
from plmkit.tasks.base import resolve_options, task_of_model
from plmkit.tasks.batching import in_batches, pad_collate
from plmkit.tasks.options import FinetuneOptions
from plmkit.tokenizers import Tokenizer
from plmkit.training.modeldir import save_model

Heads = dict[int, list[int]]


def parse_heads(text: str) -> Heads:
    """"0:1,0:3,2:0" -> {0: [1, 3], 2: [0]} (layer:head pairs, 0-based)."""
    heads: Heads = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        layer, sep, head = item.partition(":")
        if not sep or not layer.strip().isdigit() or not head.strip().isdigit():
            raise UserError(f"--heads: {item!r} is not LAYER:HEAD (e.g. 0:3,2:0)")
        heads.setdefault(int(layer), []).append(int(head))
    if not heads:
        raise UserError("--heads is empty; give LAYER:HEAD pairs such as 0:3,2:0")
    return heads


def prunable(model: nn.Module) -> list[MultiHeadAttention]:
    """The attention layers of `model`'s encoder, in order (layer i of `--heads i:h`)."""
    modules = attention_modules(backbone_of(model))
    if not all(isinstance(m, MultiHeadAttention) for m in modules):
        raise UserError("head pruning supports the BERT-style encoders (bert, roberta, electra, "
                        "albert, ernie); relative attention (xlnet) is not supported")
    return modules  # type: ignore[return-value]


def prune_heads(model: nn.Module, heads: Mapping[int, Iterable[int]]) -> int:
    """Remove `heads` ({layer: [original head indices]}) from `model`; returns how many."""
    layers = prunable(model)
    removed = 0
    for layer, which in sorted(heads.items()):
        if not 0 <= layer < len(layers):
            raise UserError(f"--heads: layer {layer} does not exist (the model has "
                            f"{len(layers)} layers, 0-{len(layers) - 1})")
        which = sorted(set(which))
        try:
            layers[layer].prune(which)
        except ValueError as e:
            raise UserError(f"--heads: layer {layer}: {e}") from None
        removed += len(which)
    return removed


def least_important(scores: Tensor, fraction: float) -> Heads:
    """The `fraction` of the remaining heads with the lowest `scores` (layers, heads; NaN =
    already pruned), keeping at least one head in every layer."""
    if not 0 < fraction < 1:
        raise UserError(f"--fraction must be between 0 and 1, got {fraction}")
    alive = {(i, j): float(v) for (i, j), v in _items(scores) if not math.isnan(v)}
    left = {i: sum(1 for (a, _) in alive if a == i) for i, _ in alive}
    target = round(fraction * len(alive))
    chosen: Heads = {}
    for (i, j), _ in sorted(alive.items(), key=lambda kv: kv[1]):
        if sum(map(len, chosen.values())) == target:
            break
        if left[i] > 1:
            chosen.setdefault(i, []).append(j)
            left[i] -= 1
    return chosen


def _items(scores: Tensor) -> Iterable[tuple[tuple[int, int], float]]:
    for i, row in enumerate(scores.tolist()):
        for j, v in enumerate(row):
            yield (i, j), v


def classify_importance(model: nn.Module, tokenizer: Tokenizer, data: Path,
                        options: FinetuneOptions) -> Tensor:
    """Head importance of a model fine-tuned with `--task classify`, on the labelled `data`."""
    task = task_of_model(model)
    if not (hasattr(task, "read") and hasattr(task, "features")):
        raise UserError(f"--fraction needs a model fine-tuned with --task classify (this one: "
                        f"{task.name}); give --heads instead")
    options = resolve_options(task, options)
    features = task.features(tokenizer, task.read(data, need_label=True), options)
    batches = in_batches(features, options.batch_size, pad_collate(tokenizer.pad_id))
    return head_importance(model, lambda m, b: task.objective(m, b)[0], batches)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class PruneResult:
    """What `prune_dir` did: the heads removed and the parameter counts before and after."""

    heads: Heads
    parameters_before: int
    parameters_after: int

    def summary(self) -> str:
        """"removed N heads (LAYER:HEAD,...): BEFORE -> AFTER parameters"."""
        removed = sum(map(len, self.heads.values()))
        listed = ",".join(f"{layer}:{h}" for layer, hs in sorted(self.heads.items())
                          for h in sorted(hs))
        return (f"removed {removed} heads ({listed}): {self.parameters_before:,} -> "
                f"{self.parameters_after:,} parameters")


def prune_dir(model_dir: Path, out: Path, heads: Heads | None = None,
              fraction: float | None = None, data: Path | None = None) -> PruneResult:
    """Prune the model in `model_dir` and save it to `out` with its tokenizer (and the
    fine-tuning options of a fine-tuned model, so `plmkit evaluate` works on it)."""
    if (heads is None) == (fraction is None):
        raise UserError("give either --heads LAYER:HEAD,... or --fraction F (with --data)")
    model = plmkit.load(model_dir)
    tokenizer = Tokenizer.load(tokenizer_dir(model_dir))
    if heads is None:
        if data is None:
            raise UserError("--fraction needs --data FILE (labelled examples to score heads on)")
        scores = classify_importance(model, tokenizer, data, saved_options(model_dir))
        heads = least_important(scores, fraction)  # type: ignore[arg-type]
    before = count_parameters(model)
    prune_heads(model, heads)
    save_model(model, out)
    tokenizer.save(Path(out) / TOKENIZER_DIR)
    if (Path(model_dir) / FINETUNE_CONFIG).is_file():
        shutil.copy(Path(model_dir) / FINETUNE_CONFIG, Path(out) / FINETUNE_CONFIG)
    return PruneResult(heads, before, count_parameters(model))
