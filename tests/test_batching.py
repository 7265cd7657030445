"""Evaluation batched by length (`rows_by_length`): the real all-MiniLM-L6-v2 on real tweets
gives the rows that input-order batches give, in input order, from far fewer tokens."""

from __future__ import annotations

from pathlib import Path

import torch

import plmkit
from plmkit.tasks.base import pool
from plmkit.tasks.batching import in_batches, pad_collate, rows_by_length, run_model
from plmkit.tokenizers import Tokenizer


def test_rows_by_length_match_input_order_with_less_padding(minilm_dir: Path,
                                                            tweets: list[str]) -> None:
    model, tok = plmkit.load(minilm_dir).eval(), Tokenizer.load(minilm_dir)
    texts = tweets[:320]
    encoded = tok(texts, max_length=128, padding=False, return_tensors=False)
    features = [dict(zip(encoded, v, strict=True)) for v in zip(*encoded.values(), strict=True)]
    widths: list[int] = []

    def mean(batch: dict[str, torch.Tensor], out: object) -> torch.Tensor:
        widths.append(batch["input_ids"].numel())
        return pool(out, batch["attention_mask"], "mean")  # (B, H)

    with torch.no_grad():
        in_order = torch.cat([mean(b, o) for b, o in run_model(
            model, in_batches(features, 16, pad_collate(tok.pad_id)))])
        padded_in_order, widths[:] = sum(widths), []
        by_length = rows_by_length(model, features, 16, pad_collate(tok.pad_id), mean)
    assert by_length.shape == in_order.shape == (320, 384)
    torch.testing.assert_close(by_length, in_order, atol=1e-5, rtol=1e-5)
    tokens = sum(len(f["input_ids"]) for f in features)
    assert sum(widths) < 1.1 * tokens < 0.8 * padded_in_order
