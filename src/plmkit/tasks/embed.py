"""Sentence embeddings (`plmkit embed`): the [CLS] / pooler vector or mean pooling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from plmkit.tasks.finetune import in_batches, pad_collate, pool, run_model
from plmkit.tokenizers import Tokenizer


def embed(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], pooling: str = "cls",
          max_seq_len: int = 512, batch_size: int = 32) -> np.ndarray:
    """(N, H) float32 vectors of `texts`; a fine-tuned model embeds with its backbone."""
    backbone = getattr(model, "backbone", model)
    encoded = tokenizer(list(texts), max_length=max_seq_len, padding=False,
                        return_tensors=False)
    features = [dict(zip(encoded, v, strict=True)) for v in zip(*encoded.values(), strict=True)]
    vectors = [pool(out, batch["attention_mask"].to(out.last_hidden_state.device), pooling)
               .float().cpu()
               for batch, out in run_model(backbone, in_batches(features, batch_size,
                                                                pad_collate(tokenizer.pad_id)))]
    hidden = backbone.config.hidden_size  # type: ignore[union-attr]
    return torch.cat(vectors).numpy() if vectors else np.zeros((0, hidden), np.float32)
