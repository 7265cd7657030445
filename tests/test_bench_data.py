"""`plmkit bench --data`: the reference port of create_pretraining_data makes valid BERT
instances from real tweets, and the measuring functions return sane figures (no timing
assertions: the machine is shared)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from plmkit.bench import data as bench_data
from plmkit.bench.command import BenchArgs, bench
from plmkit.data.bert import FIELDS, BertInstanceConfig
from plmkit.data.options import DataOptions
from plmkit.data.shards import prepare_corpus
from plmkit.errors import UserError
from plmkit.jobs.pretrain import fingerprint
from plmkit.tokenizers import Tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SEQ = 64
CONFIG = BertInstanceConfig.from_options(DataOptions(dupe_factor=3), SEQ, nsp=True)


@pytest.fixture(scope="module")
def corpus(tweets: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 real tweets, one a line, 8 to a document (as `plmkit data build --name tweets`)."""
    lines = [" ".join(t.split()) for t in tweets if t.strip()][:400]
    docs = ["\n".join(lines[i : i + 8]) for i in range(0, len(lines), 8)]
    path = tmp_path_factory.mktemp("corpus") / "tweets.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tweets: list[str]) -> Tokenizer:
    return train_tokenizer("wordpiece", tweets, 2000)


def original_tokens(x: bench_data.RefInstance) -> list[int]:
    """The instance's tokens before masking."""
    tokens = list(x.tokens)
    for i, label in zip(x.masked_lm_positions, x.masked_lm_labels, strict=True):
        tokens[i] = label
    return tokens


def test_port_makes_valid_nsp_instances(corpus: Path, tok: Tokenizer) -> None:
    docs = bench_data.read_reference_documents([corpus], tok)
    assert len(docs) == 50 and all(1 <= len(d) <= 8 for d in docs)
    instances = bench_data.reference_instances(docs, tok, CONFIG, random.Random(0))
    assert len(instances) >= 3 * len(docs)  # each of the 3 dupe passes: >= 1 per document
    labels = [x.is_random_next for x in instances]
    assert 0.3 < sum(labels) / len(labels) < 0.8  # 50% random, more for one-sentence chunks
    for x in instances:
        tokens = original_tokens(x)
        seps = [i for i, t in enumerate(tokens) if t == tok.sep_id]
        assert len(tokens) <= SEQ and len(x.segment_ids) == len(tokens)
        assert tokens[0] == tok.cls_id and len(seps) == 2 and seps[1] == len(tokens) - 1
        assert 1 <= seps[0] < seps[1] - 1  # A and B are not empty
        assert x.segment_ids == [0] * (seps[0] + 1) + [1] * (len(tokens) - seps[0] - 1)


def test_port_masks_15_percent_80_10_10(corpus: Path, tok: Tokenizer) -> None:
    docs = bench_data.read_reference_documents([corpus], tok)
    instances = bench_data.reference_instances(docs, tok, CONFIG, random.Random(1))
    kinds = {"mask": 0, "kept": 0, "other": 0}
    for x in instances:
        n = len(x.masked_lm_positions)
        assert n == min(CONFIG.max_predictions_per_seq, max(1, round(0.15 * len(x.tokens))))
        assert abs(n - 0.15 * len(x.tokens)) <= 0.5 or n == CONFIG.max_predictions_per_seq
        assert x.masked_lm_positions == sorted(set(x.masked_lm_positions))
        assert all(t not in (tok.cls_id, tok.sep_id) for t in x.masked_lm_labels)
        for i, label in zip(x.masked_lm_positions, x.masked_lm_labels, strict=True):
            now = x.tokens[i]
            kinds["mask" if now == tok.mask_id else "kept" if now == label else "other"] += 1
    total = sum(kinds.values())
    assert total > 500
    assert 0.75 < kinds["mask"] / total < 0.85
    assert 0.05 < kinds["kept"] / total < 0.15 and 0.05 < kinds["other"] / total < 0.15


def test_truncate_pair_trims_the_longer_side() -> None:
    a, b = list(range(10)), list(range(100, 103))
    bench_data.truncate_pair(a, b, 8, random.Random(0))
    assert (len(a), len(b)) == (5, 3)
    assert a == list(range(a[0], a[0] + 5))  # a contiguous piece: trimmed at the ends only


def test_port_batches_hold_the_reference_fields(corpus: Path, tok: Tokenizer) -> None:
    batches = list(bench_data.reference_batches([corpus], tok, CONFIG, batch=4))
    P = CONFIG.max_predictions_per_seq
    first = batches[0]
    assert list(first) == list(FIELDS)
    assert first["input_ids"].shape == first["input_mask"].shape == (4, SEQ)
    assert first["masked_lm_positions"].shape == (4, P)
    assert first["next_sentence_labels"].shape == (4,)
    assert first["masked_lm_weights"].dtype == torch.float32
    for b in batches:
        real = b["input_mask"].sum(1)
        assert torch.equal(b["input_ids"][b["input_mask"] == 0], torch.zeros_like(
            b["input_ids"][b["input_mask"] == 0]))
        assert torch.equal(b["segment_ids"] * (1 - b["input_mask"]),
                           torch.zeros_like(b["segment_ids"]))
        assert (b["masked_lm_positions"] < real[:, None]).all()
        assert torch.equal(b["masked_lm_weights"].sum(1).long(),
                           (b["masked_lm_weights"] > 0).sum(1))


def test_measure_data_gives_positive_throughputs(corpus: Path, tok: Tokenizer) -> None:
    r = bench_data.measure_data([corpus], tok, SEQ, 4, reps=2, dupe_factor=2)
    assert r.corpus_mb == pytest.approx(corpus.stat().st_size / 1e6)
    assert (r.seq, r.batch, r.dupe_factor, r.reps) == (SEQ, 4, 2, 2)
    assert all(math.isfinite(v) and v > 0 for v in
               (r.plmkit_mb_s, r.port_mb_s, r.ratio, r.ratio_lo, r.ratio_hi))
    assert r.ratio_lo <= r.ratio <= r.ratio_hi
    assert 0 < r.plmkit_first_s < corpus.stat().st_size / 1e6 / r.plmkit_mb_s  # before the end
    assert 0 < r.port_first_s < corpus.stat().st_size / 1e6 / r.port_mb_s
    assert r.plmkit_batches_s > 0 and r.port_batches_s > 0
    # plmkit splits lines into sentences, the reference does not: similar counts, not equal
    assert 0.5 < r.plmkit_instances / r.port_instances < 2


def test_loader_share_is_a_fraction_of_the_step(corpus: Path, tok: Tokenizer,
                                                tmp_path: Path) -> None:
    shards = prepare_corpus([corpus], tok, tmp_path, fingerprint=fingerprint(tok))
    r = bench_data.loader_share(shards, tok, "bert-tiny", 32, 4, steps=3)
    assert (r.preset, r.batch, r.seq, r.steps) == ("bert-tiny", 4, 32, 3)
    assert r.step_ms > 0 and r.wait_ms > 0 and r.loader_ms > 0
    assert 0 < r.fraction < 1
    assert r.fraction == pytest.approx(r.loader_ms / (r.loader_ms + r.step_ms))


def test_run_data_trains_a_tokenizer_when_none_is_given(corpus: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_data, "LOADER_STEPS", 2)
    data, loader = bench_data.run_data(corpus, None, ["bert-tiny"], 32, 4, 1)
    assert len(data) == 1 and data[0].plmkit_mb_s > 0 and data[0].dupe_factor == 10
    assert [r.preset for r in loader] == ["bert-tiny"] and loader[0].steps == 2
    text = bench_data.table(data, loader)
    assert "time to the first step" in text and "batches/s in training" in text
    assert "bert-tiny" in text and "%" in text


def test_repeated_corpus_shuffles_whole_documents_to_the_size(corpus: Path,
                                                             tmp_path: Path) -> None:
    out = bench_data.repeated_corpus(corpus, 0.1, tmp_path / "big.txt")
    size = out.stat().st_size
    assert 100_000 <= size < 100_000 + 1000  # stops after the document that reaches the size
    docs = [d for d in out.read_text().split("\n\n") if d]
    source = corpus.read_text().strip().split("\n\n")
    n = len(source)
    assert set(docs) <= set(source) and len(docs) > 2 * n  # whole documents, passes over them
    first, second = docs[:n], docs[n : 2 * n]
    assert sorted(first) == sorted(second) == sorted(source)  # each pass: every document once
    assert first != second != source  # in a fresh order


@pytest.mark.slow
def test_prepare_curve_times_one_and_two_ranks(corpus: Path, tok: Tokenizer,
                                               tmp_path: Path) -> None:
    tok.save(tmp_path / "tok")
    records = bench_data.prepare_curve(corpus, tmp_path / "tok", [0.05, 0.1], [1, 2], tmp_path)
    assert [r.ranks for r in records] == [1, 2, 1, 2]
    assert [r.corpus_mb for r in records] == pytest.approx([0.05, 0.05, 0.1, 0.1], rel=0.02)
    assert records[0].tokens == records[1].tokens < records[2].tokens == records[3].tokens
    for r in records:
        assert r.seconds > 0 and r.mb_s == pytest.approx(r.corpus_mb / r.seconds)
        assert 0 < r.base_rss_mb <= r.peak_rss_mb
    assert "peak RSS MB" in bench_data.curve_table(records)


@pytest.mark.parametrize(("given", "options", "message"), [
    (False, {"data_sizes": "5"}, "--data-sizes needs --data CORPUS"),
    (True, {"data_sizes": "5,x"}, "--data-sizes 5,x: expected comma-separated positive numbers"),
    (True, {"data_sizes": "5", "data_ranks": "0"}, "--data-ranks 0: expected comma-separated"),
    (True, {"markdown": Path("BENCHMARKS.md")}, "--data writes no Markdown"),
])
def test_curve_options_are_checked(corpus: Path, given: bool, options: dict[str, str],
                                   message: str) -> None:
    with pytest.raises(UserError, match=message):
        bench(BenchArgs(data=corpus if given else None, **options))


def test_curve_json_holds_each_record_and_the_command(corpus: Path, tok: Tokenizer,
                                                     tmp_path: Path) -> None:
    tok.save(tmp_path / "tok")
    out = tmp_path / "curve.json"
    table = bench(BenchArgs(data=corpus, tokenizer=tmp_path / "tok", data_sizes="0.05",
                            json=out, command_line="plmkit bench --data-sizes 0.05"))
    (row,) = json.loads(out.read_text())
    assert row["mode"] == "data-curve" and row["ranks"] == 1
    assert row["corpus_mb"] == pytest.approx(0.05, rel=0.02) and row["tokens"] > 0
    assert row["command"] == "plmkit bench --data-sizes 0.05" and row["cpus"] >= 1
    assert f"{row['tokens']}" in table
