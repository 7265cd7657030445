"""Permutation LM (XLNet): the masks, partial prediction, the data layout, pretraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.data.options import DataOptions
from plmkit.nn.rel_attention import attention_masks
from plmkit.objectives import get_objective
from plmkit.objectives.plm import K, permutation_masks, span_targets, target_mapping
from plmkit.pipeline import PretrainArgs, prepare, pretrain
from plmkit.tokenizers import Tokenizer


def test_permutation_masks_follow_the_factorization_order() -> None:
    generator = torch.Generator().manual_seed(0)
    is_target = torch.rand(4, 20, generator=generator) < 0.3
    functional = torch.zeros(4, 20, dtype=torch.bool)
    functional[:, -1] = True
    is_target &= ~functional
    perm = permutation_masks(is_target, functional, generator)
    content, query = attention_masks(4, 20, 0, None, perm, "bi", torch.device("cpu"))
    for b in range(4):
        targets = is_target[b].nonzero().flatten().tolist()
        for i in targets:
            assert not query[b, i, i]  # a target never sees its own content
            assert content[b, i, i]  # the content stream sees itself
        context = (~is_target[b] & ~functional[b]).nonzero().flatten()
        assert query[b][:, context].all()  # the unpredicted tokens are seen by everybody
        seen = query[b, targets][:, targets]  # targets see exactly the ones before them
        order = seen.sum(-1)  # how many targets precede each one in the order
        assert sorted(order.tolist()) == list(range(len(targets)))
        ranks = order.argsort()
        assert torch.equal(seen[ranks][:, ranks], torch.ones_like(seen).tril(-1))


def test_partial_prediction_predicts_one_in_k() -> None:
    rng = np.random.default_rng(0)
    word_start = rng.random(512) < 0.7
    maskable = np.ones(512, dtype=bool)
    maskable[[100, 200, 511]] = False
    chosen = span_targets(word_start, maskable, 512 // K, rng)
    assert chosen.sum() == 85 and not chosen[~maskable].any()  # 85 of 512 as the reference
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, chosen.astype(int), 0])))[::2]
    assert runs.max() > 1  # spans, not only single tokens
    mapping, positions, weights = target_mapping(torch.from_numpy(chosen)[None], 85)
    assert mapping.shape == (1, 85, 512) and weights.sum() == 85
    assert torch.equal(mapping[0].argmax(-1), positions[0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("xlnet")
    docs = ["\n".join(tweets[i:i + 8]) for i in range(0, len(tweets), 8)]
    train, heldout = root / "train.txt", root / "heldout.txt"
    train.write_text("\n\n".join(docs[:-25]) + "\n")
    heldout.write_text("\n\n".join(docs[-25:]) + "\n")
    return train, heldout


def test_xlnet_tiny_pretrains_with_plm_on_real_text(corpus: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    args = PretrainArgs(model="xlnet-tiny", objective="plm", corpus=[corpus[0]],
                        heldout=[corpus[1]], out=tmp_path, vocab_size=2000, batch_size=8,
                        seq_len=64, lr=1e-3, steps=60, warmup=6, log_every=10, eval_every=60,
                        save_every=60, eval_batches=2, progress=False)
    records = pretrain(args)
    assert records[-1]["plm_loss"] < records[0]["plm_loss"] - 0.5
    assert records[-1]["eval_plm_loss"] < 7.0  # ln(2000) = 7.6 before training
    tok = Tokenizer.load(tmp_path / "tokenizer")
    assert tok.kind == "unigram"
    shards = prepare([corpus[0]], tok, tmp_path / "data")
    batches = get_objective("plm").batches(shards, tok, DataOptions(batch_size=4), 64, 0)
    first = iter(batches)
    batch = next(first)
    ids, seg = batch["input_ids"], batch["segment_ids"]
    assert ids.shape == (4, 64) and (ids[:, -1] == tok.cls_id).all()  # [CLS] at the END
    assert (seg[:, -1] == 2).all() and (seg[:, :32] == 0).all()  # the reused half is segment 0
    assert ((ids == tok.sep_id).sum(-1) == 2).all()
    assert batch["target_weights"].sum(-1).eq(64 // K).all()
    state = batches.state_dict()
    second = next(first)
    batches.load_state_dict(state)
    again = next(iter(batches))
    assert all(torch.equal(second[k], again[k]) for k in second if k != "mem_key")
    rows = torch.from_numpy(batches.stream.tokens[:4])  # each row continues: memory fits
    assert torch.equal(ids[:, :32], rows[:, :32])
    assert torch.equal(second["input_ids"][:, :32], rows[:, 32:64])
