"""Permutation LM (XLNet): the masks, partial prediction, the data layout, pretraining."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.data.masking import span_targets
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus
from plmkit.data.xlnet import XLNetDataConfig
from plmkit.jobs.pretrain import PretrainArgs, prepare, pretrain
from plmkit.models import build, preset_config
from plmkit.nn.rel_attention import attention_masks
from plmkit.objectives import get_objective
from plmkit.objectives.plm import (
    K,
    PermutationLM,
    PLMStream,
    permutation_masks,
    target_mapping,
)
from plmkit.tokenizers import Tokenizer, train_tokenizer


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


@pytest.fixture(scope="module")
def shards(corpus: tuple[Path, Path], tweets: list[str],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[ShardedCorpus, Tokenizer]:
    tok = train_tokenizer("unigram", tweets, 2000)
    return prepare([corpus[0]], tok, tmp_path_factory.mktemp("shards")), tok


def test_memory_never_carries_a_target_of_the_next_segment(
        shards: tuple[ShardedCorpus, Tokenizer]) -> None:
    """The reused half sees only itself (reference `_local_perm` + perm_mask[:reuse, reuse:] = 1):
    the next segment starts with the tokens after it, so its cached states hold none of them.
    Changing a next-segment target's own token leaves that target's query stream exactly as it
    was, memory included."""
    corpus, tok = shards
    seq, reuse = 64, 32
    model = build(preset_config("xlnet-tiny", vocab_size=tok.vocab_size)).eval()
    batches = PermutationLM().batches(corpus, tok, DataOptions(batch_size=8), seq, 0)
    first, second = itertools.islice(batches, 2)
    assert first["perm_mask"][:, :reuse, reuse:].all()  # the reused part sees only itself
    a_len = (first["input_ids"] == tok.sep_id).int().argmax(-1) - reuse  # (B,) segment A
    changed = 0
    for slot in range(second["target_positions"].shape[1]):
        p = second["target_positions"][:, slot]  # (B,) a target per row, in the reused part
        rows = ((p < a_len) & second["target_weights"][:, slot].bool()).nonzero().flatten()
        if not len(rows):
            continue
        ids = [first["input_ids"].clone(), second["input_ids"].clone()]
        old = ids[1][rows, p[rows]]
        assert torch.equal(ids[0][rows, reuse + p[rows]], old)  # the same token, seen twice
        new = torch.where(old == 100, 101, 100)
        ids[0][rows, reuse + p[rows]], ids[1][rows, p[rows]] = new, new
        outs = []
        for x, y in ((first, second), ({**first, "input_ids": ids[0]},
                                         {**second, "input_ids": ids[1]})):
            objective = PermutationLM()
            with torch.no_grad():
                objective.forward(model, x)  # the memory for y
                outs.append(objective.forward(model, y))
        query = [o.query_hidden_state[rows, slot] for o in outs]
        assert torch.equal(query[0], query[1])
        content = [o.last_hidden_state[rows, p[rows]] for o in outs]
        assert not torch.equal(content[0], content[1])  # the change is real
        changed += len(rows)
    assert changed >= 10


@pytest.mark.parametrize(("seq", "split"), [(64, (5, 5)), (78, (7, 6)), (512, (43, 42))])
def test_targets_split_between_the_reused_part_and_the_rest(
        shards: tuple[ShardedCorpus, Tokenizer], seq: int, split: tuple[int, int]) -> None:
    """As the reference's `create_tfrecords`: `_sample_mask` on each part, num_predict - num_predict
    // 2 targets in the reused half (43 of 85 at 512), the rest in A [SEP] B [SEP] [CLS]."""
    corpus, tok = shards
    reuse = seq // 2
    stream = PLMStream(corpus, tok, 2, XLNetDataConfig(seq_len=seq, reuse_len=reuse))
    rows = iter(stream)
    for _ in range(3):
        batch = stream.collate([next(rows), next(rows)])
        chosen = batch["target_mapping"].sum(1).bool()  # (B, S)
        assert chosen[:, :reuse].sum(-1).eq(split[0]).all()
        assert chosen[:, reuse:].sum(-1).eq(split[1]).all()
        is_special = (batch["input_ids"] == tok.sep_id) | (batch["input_ids"] == tok.cls_id)
        assert not (chosen & is_special).any()
        perm = batch["perm_mask"]
        assert perm[:, :reuse, reuse:].all() and not perm[:, reuse:, :reuse].any()
        for part in (slice(0, reuse), slice(reuse, seq)):  # each part: its own order
            seen = ~perm[:, part, part] & chosen[:, None, part]  # (B, n, n) targets seen
            for b in range(2):
                targets = chosen[b, part]
                order = seen[b][targets][:, targets].sum(-1)  # targets before each one
                assert sorted(order.tolist()) == list(range(int(targets.sum())))
