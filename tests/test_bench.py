"""`plmkit bench` over BERT, RoBERTa, ALBERT, ELECTRA, XLNet and the Transformer: records well
formed, the same targets on both sides (no timing assertions: the machine is shared)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from plmkit.bench import suite as bench
from plmkit.errors import UserError
from plmkit.models import get_family
from plmkit.objectives import get_objective, plm

PRESETS = ["bert-tiny", "roberta-tiny", "albert-tiny"]


def test_run_covers_bert_roberta_albert() -> None:
    records = bench.run(PRESETS, ["train", "infer"], 2, 32, 1, memory=False)
    assert [(r.family, r.size, r.mode) for r in records] == [
        (p.split("-")[0], "tiny", m) for p in PRESETS for m in ("train", "infer")]
    for r in records:
        assert {f.name for f in dataclasses.fields(r)} == {
            "family", "size", "mode", "dtype", "batch", "seq", "reps", "plmkit_tok_s",
            "hf_tok_s", "ratio", "ratio_lo", "ratio_hi", "plmkit_peak_mb", "hf_peak_mb",
            "vs_mlm", "flops", "plmkit_mfu", "hf_mfu"}
        assert (r.dtype, r.batch, r.seq, r.reps) == ("float32", 2, 32, 1)
        assert r.plmkit_tok_s > 0 and r.hf_tok_s > 0
        assert all(math.isfinite(x) and x > 0 for x in (r.ratio, r.ratio_lo, r.ratio_hi))
        assert r.plmkit_peak_mb is None and r.hf_peak_mb is None and r.vs_mlm is None
        assert r.flops is None and r.plmkit_mfu is None
    assert "roberta-tiny" in bench.table(records)


def test_electra_rows_and_the_ratio_to_a_same_size_mlm_step() -> None:
    records = bench.run(["electra-tiny"], ["train", "infer"], 2, 32, 1, memory=False)
    assert [(r.family, r.size, r.mode) for r in records] == [
        ("electra", "tiny", "train"), ("electra", "tiny", "infer")]
    train, infer = records
    for r in records:
        assert all(math.isfinite(x) and x > 0
                   for x in (r.plmkit_tok_s, r.hf_tok_s, r.ratio, r.ratio_lo, r.ratio_hi))
    assert train.vs_mlm is not None and math.isfinite(train.vs_mlm) and train.vs_mlm > 0
    assert infer.vs_mlm is None
    assert "vs mlm" in bench.table(records)


def test_electra_twins_share_weights_and_compute_finite_losses() -> None:
    ours, theirs = bench.twins("electra-tiny")
    assert isinstance(theirs, bench.HFElectra)
    gen, disc = theirs.generator, theirs.discriminator
    assert gen.electra.embeddings is disc.electra.embeddings  # shared, as in plmkit
    assert gen.generator_lm_head.weight is disc.electra.embeddings.word_embeddings.weight
    assert (sum(p.numel() for p in ours.parameters())
            == sum(p.numel() for p in theirs.parameters()))
    ours.eval(), theirs.eval()
    batch = bench.pretraining_batch(ours.config.vocab_size, 2, 16)
    with torch.no_grad():
        ours_loss, metrics = get_objective("electra")(ours, batch)
        theirs_loss, theirs_mlm = theirs.loss(bench.hf_inputs(theirs, batch), batch)
    # the samples differ, so the totals only need be finite; the generator's MLM is the same
    assert math.isfinite(ours_loss.item()) and math.isfinite(theirs_loss.item())
    torch.testing.assert_close(metrics["mlm_loss"], theirs_mlm, atol=1e-4, rtol=1e-4)
    bert = bench.mlm_twin(ours.config)
    assert (bert.config.num_layers, bert.config.hidden_size, bert.config.embedding_size) == (
        ours.config.num_layers, ours.config.hidden_size, ours.config.embedding_size)


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


def test_xlnet_sides_compute_the_same_two_stream_loss() -> None:
    ours, theirs = bench.twins("xlnet-tiny")
    assert type(theirs).__name__ == "XLNetLMHeadModel"
    ours.eval(), theirs.eval()
    batch = bench.bench_batch(ours.config, 2, 24)
    preds = 24 // plm.K
    assert batch["target_mapping"].shape == (2, preds, 24)
    assert batch["perm_mask"].shape == (2, 24, 24) and bool(batch["perm_mask"].any())
    assert batch["segment_ids"][:, -1].eq(2).all()  # [CLS] last, its own segment
    with torch.no_grad():
        ours_loss = get_objective("plm")(ours, batch)[0]
        theirs_loss = theirs(**bench.hf_inputs(theirs, batch)).loss
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["xlnet-tiny", "transformer-tiny"])
def test_xlnet_and_transformer_rows(preset: str) -> None:
    records = bench.run([preset], ["train", "infer"], 2, 16, 1, memory=False)
    family = preset.split("-")[0]
    assert [(r.family, r.size, r.mode) for r in records] == [
        (family, "tiny", "train"), (family, "tiny", "infer")]
    for r in records:
        assert all(math.isfinite(x) and x > 0 for x in (r.plmkit_tok_s, r.hf_tok_s, r.ratio))


def test_transformer_and_marian_compute_the_same_smoothed_loss_and_logits() -> None:
    ours, theirs = bench.twins("transformer-tiny")
    assert isinstance(theirs, bench.HFMarian)
    marian = theirs.marian
    shared = marian.model.shared.weight
    assert marian.lm_head.weight is shared and marian.model.encoder.embed_tokens.weight is shared
    ours.eval(), theirs.eval()
    batch = bench.bench_batch(ours.config, 2, 12)
    with torch.no_grad():
        ours_loss, metrics = get_objective("seq2seq")(ours, batch)
        theirs_loss, theirs_nll = theirs.loss(bench.hf_inputs(theirs, batch), batch)
        logits = ours(batch["input_ids"], batch["attention_mask"],
                      decoder_input_ids=batch["decoder_input_ids"]).logits
        theirs_logits = theirs(batch["input_ids"], batch["attention_mask"],
                               batch["decoder_input_ids"])
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["nll"], theirs_nll, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, theirs_logits, atol=1e-5, rtol=1e-5)


def test_family_without_counterpart_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no transformers counterpart"):
        bench.hf_architecture("transfo-xl-tiny")


def test_model_flops_count_the_useful_work() -> None:
    """An inference forward of bert-tiny: 2 FLOPs per non-embedding weight and token, plus
    attention's two (S x S x d) products per layer and head."""
    ours, theirs = bench.twins("bert-tiny")
    ours.eval(), theirs.eval()
    b, s = 2, 32
    a, _ = bench.infer_steps(ours, theirs, bench.bench_batch(ours.config, b, s))
    cfg = ours.config
    weights = sum(p.numel() for n, p in ours.encoder.named_parameters()
                  if p.dim() == 2 and "embed" not in n)
    attention = cfg.num_layers * 2 * 2 * s * s * cfg.hidden_size * b
    pooler = 2 * cfg.hidden_size**2 * b  # [CLS] only
    expected = 2 * weights * b * s + attention + pooler
    assert bench.step_flops(a) == pytest.approx(expected, rel=1e-6)


def test_mfu_rows_and_the_defaults_mode() -> None:
    peaks = {"float32": 1e11, "bfloat16": 4e11}
    records = bench.run(["bert-tiny"], ["train", "train-defaults"], 2, 16, 1, memory=False,
                        peaks=peaks)
    train, defaults = records
    assert train.dtype == "float32"
    assert defaults.dtype == f"{bench.default_dtype()}/float32"
    for r in records:
        assert r.flops and r.flops > 0
        ours_peak = peaks[r.dtype.split("/")[0]]
        assert r.plmkit_mfu == pytest.approx(r.flops * r.plmkit_tok_s / 32 / ours_peak)
        assert r.hf_mfu == pytest.approx(r.flops * r.hf_tok_s / 32 / peaks["float32"])
    assert "plmk MFU" in bench.table(records)


def test_compiled_training_mode() -> None:
    record, = bench.run(["albert-tiny"], ["train-compiled"], 2, 16, 1, memory=False,
                        peaks={"float32": 1e11})
    assert record.mode == "train-compiled" and record.dtype == "float32"
    assert record.ratio > 0 and record.flops and record.flops > 0  # the eager step's FLOPs
    assert record.plmkit_peak_mb is None  # no memory column for compiled steps


def test_remeasured_peaks_keep_the_highest_and_set_every_mfu() -> None:
    peaks = {"float32": 1.0}  # far below any real measurement: the run's own one wins
    first, second = bench.run(["bert-tiny", "roberta-tiny"], ["infer"], 2, 16, 1,
                              memory=False, peaks=peaks, remeasure=True)
    assert peaks["float32"] > 1e8
    for r in (first, second):
        assert r.plmkit_mfu == pytest.approx(r.flops * r.plmkit_tok_s / 32 / peaks["float32"])


def test_matmul_peak_is_measured() -> None:
    assert bench.matmul_peak("float32", sizes=(128,), reps=1) > 1e8


def test_report_round_trips_into_the_markdown_section(tmp_path) -> None:
    records = bench.run(["bert-tiny"], ["infer"], 2, 16, 1, memory=False)
    report_path = tmp_path / "bench.json"
    bench.write_json(records, report_path, {"float32": 1e11}, "plmkit bench --models bert-tiny")
    report = bench.read_json(report_path)
    assert report["records"] == records
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{bench.BEGIN}\nold\n{bench.END}\n\nnotes\n")
    bench.update_markdown(doc, bench.markdown(report))
    text = doc.read_text()
    assert "old" not in text and text.startswith("# Benchmarks\n\nintro") and "notes" in text
    assert "plmkit bench --models bert-tiny" in text and "bert-tiny" in text
    assert "float32 100 GFLOP/s" in text
    (tmp_path / "bad.json").write_text("{\"records\": 1}")
    with pytest.raises(UserError, match=r"bad\.json: not a plmkit bench report"):
        bench.read_json(tmp_path / "bad.json")


def test_suite_covers_every_family_at_three_sizes() -> None:
    families = {p.rsplit("-", 1)[0] for p in bench.SUITE}
    assert families == {"bert", "roberta", "albert", "electra", "xlnet", "ernie", "transformer"}
    for family in families:
        for size in ("tiny", "small", "base"):
            assert f"{family}-{size}" in bench.SUITE
            bench.hf_architecture(f"{family}-{size}")  # every preset has a counterpart
