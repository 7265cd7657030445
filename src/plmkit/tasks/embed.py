"""Sentence embeddings (`plmkit embed`, `/v1/embed`): the [CLS] hidden state, BERT's pooler,
or the mean or max over the real tokens, optionally L2-normalised.

A model directory with sentence-transformers files (modules.json naming a Pooling module and
its `1_Pooling/config.json`, a Normalize module, `sentence_bert_config.json`'s max_seq_length)
embeds as `SentenceTransformer(dir).encode` does unless told otherwise (`EmbeddingSetup`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.tasks.base import pool
from plmkit.tasks.batching import Batch, pad_collate, rows_by_length
from plmkit.tokenizers import Tokenizer

POOLINGS = ("cls", "pooler", "mean", "max")
ST_MODULES = "modules.json"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_CONFIG = "sentence_bert_config.json"
# 1_Pooling/config.json's flags, each for a plmkit pooling
ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
            "pooling_mode_max_tokens": "max"}
DEFAULT_MAX_SEQ_LEN = 512


@dataclass(frozen=True)
class EmbeddingSetup:
    """How a model embeds: its pooling, whether vectors are unit length, the longest input."""

    pooling: str = "cls"
    normalize: bool = False
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; use {', '.join(POOLINGS)}")

    def given(self, pooling: str | None = None, normalize: bool | None = None,
              max_seq_len: int | None = None) -> EmbeddingSetup:
        """This setup with the options given (None: keep this setup's)."""
        chosen = {"pooling": pooling, "normalize": normalize, "max_seq_len": max_seq_len}
        return replace(self, **{k: v for k, v in chosen.items() if v is not None})


def embedding_setup(model_dir: str | Path) -> EmbeddingSetup:
    """The sentence-transformers pooling, normalisation and max_seq_length of `model_dir`;
    plmkit's defaults ([CLS], not normalised, 512 tokens) when it has no modules.json."""
    directory = Path(model_dir)
    modules_path = directory / ST_MODULES
    if not modules_path.is_file():
        return EmbeddingSetup()
    modules = _json_list(modules_path)
    types = [str(m.get("type", "")) for m in modules]
    other = [t for t in types if t not in (ST_TRANSFORMER, ST_POOLING, ST_NORMALIZE)]
    if other:
        raise UserError(f"{modules_path}: module {other[0]} is not supported (plmkit embeds "
                        "with a Transformer, a Pooling and a Normalize module)")
    pooling = next((m for m in modules if m.get("type") == ST_POOLING), None)
    setup = EmbeddingSetup(normalize=ST_NORMALIZE in types)
    if pooling is not None:
        setup = replace(setup, pooling=_st_pooling(directory / str(pooling.get("path", ""))))
    config = directory / ST_CONFIG
    if config.is_file():
        length = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(length, int) and length > 0:
            setup = replace(setup, max_seq_len=length)
    return setup


def _st_pooling(folder: Path) -> str:
    """The plmkit pooling of a sentence-transformers Pooling folder's config.json."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the pooling config ({e})") from None
    on = [k for k, v in config.items() if k.startswith("pooling_mode") and v is True]
    if len(on) != 1 or on[0] not in ST_MODES:
        raise UserError(f"{path}: pooling {', '.join(on) or '(none)'} is not supported "
                        f"(one of {', '.join(ST_MODES)})")
    return ST_MODES[on[0]]


def _json_list(path: Path) -> list[dict[str, Any]]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it ({e})") from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise UserError(f"{path}: not a list of modules")
    return value


def sentence_vectors(output: Any, attention_mask: Tensor, pooling: str) -> Tensor:
    """(B, H) vectors from a model output (`last_hidden_state` (B, S, H)): "cls" the first
    token's hidden state, "pooler" BERT's tanh pooler over it (Devlin et al. 2019, section 3),
    "mean" / "max" over the tokens of `attention_mask` (B, S)."""
    hidden = output.last_hidden_state  # (B, S, H)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise UserError("this model has no pooler; use --pooling cls, mean or max")
        return pooled
    if pooling == "mean":
        return pool(output, attention_mask, "mean")
    if pooling != "max":
        raise UserError(f"unknown pooling {pooling!r}; use {', '.join(POOLINGS)}")
    padding = ~attention_mask.bool()[..., None]  # (B, S, 1)
    return hidden.masked_fill(padding, torch.finfo(hidden.dtype).min).amax(1)


def embed(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str],
          setup: EmbeddingSetup | str = "cls", batch_size: int = 32) -> np.ndarray:
    """(N, H) float32 vectors of `texts` (`setup`: an `EmbeddingSetup` or a pooling name);
    a fine-tuned model embeds with its backbone."""
    setup = setup if isinstance(setup, EmbeddingSetup) else EmbeddingSetup(setup)
    backbone = getattr(model, "backbone", model)
    encoded = tokenizer(list(texts), max_length=setup.max_seq_len, padding=False,
                        return_tensors=False)
    features = [dict(zip(encoded, v, strict=True)) for v in zip(*encoded.values(), strict=True)]
    if not features:
        return np.zeros((0, backbone.config.hidden_size), np.float32)  # type: ignore[union-attr]

    def vectors(batch: Batch, out: Any) -> Tensor:
        mask = batch["attention_mask"].to(out.last_hidden_state.device)
        vector = sentence_vectors(out, mask, setup.pooling).float()  # (B, H)
        return F.normalize(vector, dim=-1) if setup.normalize else vector

    return rows_by_length(backbone, features, batch_size, pad_collate(tokenizer.pad_id),
                          vectors).numpy()


def write_sentence_transformers(directory: Path, setup: EmbeddingSetup, hidden_size: int) -> None:
    """Write the sentence-transformers files that make `SentenceTransformer(directory)` embed
    as `setup` does (pooling "pooler" has no sentence-transformers module: refused)."""
    modes = {mode: flag for flag, mode in ST_MODES.items()}
    if setup.pooling not in modes:
        raise UserError(f"--sentence-transformers {setup.pooling}: sentence-transformers pools "
                        f"by {', '.join(modes)} only")
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING}]
    if setup.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": hidden_size,
               **{flag: mode == setup.pooling for mode, flag in modes.items()},
               "pooling_mode_mean_sqrt_len_tokens": False}
    files = {ST_MODULES: modules, "1_Pooling/config.json": pooling,
             ST_CONFIG: {"max_seq_length": setup.max_seq_len, "do_lower_case": False}}
    for name, value in files.items():
        (directory / name).write_text(json.dumps(value, indent=2) + "\n")
