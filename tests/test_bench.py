"""`plmkit bench` over BERT, RoBERTa and ALBERT: records well formed, the same targets on both
sides (no timing assertions: the machine is shared)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from plmkit import bench
from plmkit.errors import UserError
from plmkit.models import get_family
from plmkit.objectives import get_objective

PRESETS = ["bert-tiny", "roberta-tiny", "albert-tiny"]


def test_run_covers_bert_roberta_albert() -> None:
    records = bench.run(PRESETS, ["train", "infer"], 2, 32, 1, memory=False)
    assert [(r.family, r.size, r.mode) for r in records] == [
        (p.split("-")[0], "tiny", m) for p in PRESETS for m in ("train", "infer")]
    for r in records:
        assert {f.name for f in dataclasses.fields(r)} == {
            "family", "size", "mode", "dtype", "batch", "seq", "reps", "plmkit_tok_s",
            "hf_tok_s", "ratio", "ratio_lo", "ratio_hi", "plmkit_peak_mb", "hf_peak_mb"}
        assert (r.dtype, r.batch, r.seq, r.reps) == ("float32", 2, 32, 1)
        assert r.plmkit_tok_s > 0 and r.hf_tok_s > 0
        assert all(math.isfinite(x) and x > 0 for x in (r.ratio, r.ratio_lo, r.ratio_hi))
        assert r.plmkit_peak_mb is None and r.hf_peak_mb is None
    assert "roberta-tiny" in bench.table(records)


@pytest.mark.parametrize("preset", PRESETS)
def test_both_sides_compute_the_same_loss(preset: str) -> None:
    ours, theirs = bench.twins(preset)
    assert type(theirs).__name__ == get_family(ours.config.family).hf.architecture
    ours.eval(), theirs.eval()
    one_segment = getattr(ours.config, "type_vocab_size", 2) == 1
    batch = bench.pretraining_batch(ours.config.vocab_size, 2, 16, segments=not one_segment)
    assert bool(batch["segment_ids"].any()) != one_segment
    objective = get_objective(get_family(ours.config.family).default_objective)
    with torch.no_grad():
        ours_loss = objective(ours, batch)[0]
        theirs_loss = theirs(**bench.hf_inputs(theirs, batch)).loss
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-4, rtol=1e-4)


def test_family_without_counterpart_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no transformers counterpart"):
        bench.hf_architecture("transformer-tiny")
