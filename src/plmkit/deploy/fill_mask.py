"""Masked-word prediction (`plmkit fill-mask`, `POST /v1/fill-mask`): the top-k tokens and
their probabilities at every mask token of a text, from a model with an MLM head."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from plmkit.deploy.console import prompted_lines
from plmkit.errors import UserError
from plmkit.interop.hf import hf_names
from plmkit.models import get_family
from plmkit.tasks.batching import in_batches, pad_collate
from plmkit.tokenizers import Tokenizer

Prediction = dict[str, Any]  # {"token": str, "id": int, "score": float}


def load_mlm(path: Path) -> nn.Module:
    """The model of directory `path` for filling masks (`check_mlm`); the warnings of loading
    it are shown only when it passes, so a refused model gives one line."""
    import plmkit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = plmkit.load(path)
    check_mlm(model, path)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def check_mlm(model: nn.Module, where: object = "the model") -> nn.Module:
    """The model (or a fine-tuned model's backbone) that has a trained masked-LM head: a
    UserError if it has none, or if its checkpoint held no weights for it (a transformers
    directory without ``cls.predictions``: `load_hf` records them in `fresh_weights`)."""
    backbone = getattr(model, "backbone", model)
    family = getattr(getattr(backbone, "config", None), "family", type(backbone).__name__)
    if not hasattr(backbone, "mlm_logits"):
        raise UserError(f"{where}: a {family} model has no masked-LM head to fill masks with")
    fresh = sorted(n for n in getattr(model, "fresh_weights", ()) if n.startswith("mlm."))
    if fresh:
        spec = get_family(family).hf
        missing = hf_names(spec, fresh[0])[0] if spec is not None else fresh[0]
        raise UserError(f"{where}: the checkpoint has no masked-LM head weights ({missing} and "
                        f"{len(fresh) - 1} more are missing), so its predictions would be "
                        "random; continue pretraining it first (plmkit pretrain --model DIR)")
    return backbone


@torch.no_grad()
def fill_mask(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], top_k: int = 5,
              max_seq_len: int = 512, batch_size: int = 32) -> list[list[list[Prediction]]]:
    """For each text, for each mask token in it (in order), the `top_k` predictions."""
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    backbone = check_mlm(model)
    encoded = tokenizer(list(texts), max_length=max_seq_len, padding=False,
                        return_tensors=False)
    features = [dict(zip(encoded, v, strict=True)) for v in zip(*encoded.values(), strict=True)]
    mask = tokenizer.specials.mask
    for text, f in zip(texts, features, strict=True):
        if tokenizer.mask_id not in f["input_ids"]:
            raise UserError(f"no {mask} in {text[:60]!r}; write {mask} where a word is missing")
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    results: list[list[list[Prediction]]] = []
    try:
        for batch in in_batches(features, batch_size, pad_collate(tokenizer.pad_id)):
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = backbone(**batch).last_hidden_state  # (B, S, H)
            for h, ids in zip(hidden, batch["input_ids"], strict=True):
                masked = h[ids == tokenizer.mask_id][None]  # (1, M, H)
                probs = backbone.mlm_logits(masked)[0].float().softmax(-1)  # (M, V)
                top = probs.topk(min(top_k, probs.shape[-1]))  # (M, k)
                results.append([_predictions(tokenizer, s, i) for s, i in
                                zip(top.values.tolist(), top.indices.tolist(), strict=True)])
    finally:
        backbone.train(was_training)
    return results


def _predictions(tokenizer: Tokenizer, scores: list[float], ids: list[int]) -> list[Prediction]:
    return [{"token": tokenizer.id_to_token(i), "id": i, "score": s}
            for s, i in zip(scores, ids, strict=True)]


def fill_mask_file(model: nn.Module, tokenizer: Tokenizer, path: Path, out: TextIO,
                   top_k: int = 5) -> None:
    """Each non-empty line of `path` as one JSON line on `out`: {"text", "predictions"}, one
    list of predictions per mask."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    for line, masks in zip(lines, fill_mask(model, tokenizer, lines, top_k), strict=True):
        out.write(json.dumps({"text": line, "predictions": masks}, ensure_ascii=False) + "\n")


def fill_mask_lines(model: nn.Module, tokenizer: Tokenizer, lines: TextIO, out: TextIO,
                    top_k: int = 5, prompt: bool = False) -> None:
    """Interactive / streaming: each non-empty line in, one line per mask out
    ("[MASK] 1: token (0.42)  token (0.11) ..."); a line without a mask gets an error line."""
    for line in prompted_lines(lines, out, prompt):
        try:
            found = fill_mask(model, tokenizer, [line], top_k)[0]
        except UserError as e:
            print(f"error: {e}", file=sys.stderr if not prompt else out)
            continue
        out.write(format_predictions(found) + "\n")
        out.flush()


def format_predictions(masks: list[list[Prediction]]) -> str:
    """One line per mask: its number and the predictions with their probabilities."""
    return "\n".join(f"mask {n}: " + "  ".join(f"{p['token']} ({p['score']:.3f})" for p in preds)
                     for n, preds in enumerate(masks, 1))
