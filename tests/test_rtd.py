"""The `electra` objective: labels, gradient isolation, two-stage training, real-text learning."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import plmkit
from plmkit.data.masking import MaskingSpec, mask_batch, scatter_predictions
from plmkit.jobs.pretrain import PretrainArgs, trainer_for
from plmkit.models.electra import Electra, ElectraConfig
from plmkit.objectives import get_objective
from plmkit.objectives.rtd import (
    ReplacedTokenDetection,
    corrupt,
    discriminator_loss,
    roc_auc,
    sample_tokens,
)

TINY = {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 37, "max_positions": 64, "embedding_size": 16}


def batch(size: int = 4, seq: int = 20) -> dict[str, torch.Tensor]:
    """Random tokens between [CLS]=2 and [SEP]=3, the last row padded, masked as BERT does."""
    ids = torch.randint(5, 99, (size, seq))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones(size, seq, dtype=torch.long)
    mask[-1, 12:] = 0
    ids[-1, 11], ids[-1, 12:] = 3, 0
    spec = MaskingSpec(99, mask_id=4, special_ids=frozenset(range(5)), max_predictions=5)
    masked = mask_batch(ids, mask, torch.Generator().manual_seed(0), spec)
    return {"input_ids": masked.input_ids, "input_mask": mask,
            "segment_ids": torch.zeros_like(ids), "masked_lm_positions": masked.positions,
            "masked_lm_ids": masked.labels, "masked_lm_weights": masked.weights}


def test_a_sample_equal_to_the_original_counts_as_original() -> None:
    b = batch()
    labels, valid = b["masked_lm_ids"], b["masked_lm_weights"] > 0
    sampled = labels.clone()
    sampled[:, 0] = (labels[:, 0] + 1 - 5) % 94 + 5  # the first prediction of each row differs
    fake, replaced = corrupt(b, sampled)
    assert replaced.sum() == valid[:, 0].sum()  # only those are replaced
    rows = torch.arange(len(labels))
    assert replaced[rows, b["masked_lm_positions"][:, 0]].all()
    assert (fake.gather(1, b["masked_lm_positions"]) == sampled)[valid].all()
    assert not (fake == 4).any()  # no [MASK] is left for the discriminator
    logits = torch.where(replaced, 5.0, -5.0)
    _, metrics = discriminator_loss(logits, replaced, b["input_mask"].bool())
    assert metrics["disc_accuracy"] == metrics["disc_precision"] == metrics["disc_recall"] == 1


def generator_grads(model: Electra, objective: ReplacedTokenDetection
                    ) -> dict[str, torch.Tensor | None]:
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout and samples in every call
    objective(model, batch())[0].backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_no_gradient_reaches_the_generator_through_the_samples() -> None:
    model = Electra(ElectraConfig(**TINY))
    joint = generator_grads(model, ReplacedTokenDetection())
    mlm_only = generator_grads(model, ReplacedTokenDetection(disc_weight=0.0))
    own = [n for n in joint if n.startswith(("generator.", "mlm."))]  # not the shared tables
    assert own and all(torch.equal(joint[n], mlm_only[n]) for n in own)
    assert joint["rtd.out.weight"].abs().sum() > 0
    assert joint["discriminator.layers.0.attn.qkv.weight"].abs().sum() > 0


def test_two_stage_training() -> None:
    model = Electra(ElectraConfig(**{**TINY, "generator_size": 1.0}))
    first = generator_grads(model, ReplacedTokenDetection(stage="generator"))
    assert first["rtd.out.weight"] is None
    assert first["discriminator.layers.0.attn.qkv.weight"] is None
    model.init_discriminator_from_generator()
    second = generator_grads(model, ReplacedTokenDetection(stage="discriminator"))
    assert all(second[n] is None for n in second if n.startswith(("generator.", "mlm.")))
    assert second["discriminator.layers.1.ffn.up.weight"].abs().sum() > 0
    with pytest.raises(ValueError, match="stage"):
        ReplacedTokenDetection(stage="both")  # type: ignore[arg-type]


def entropy(p: float) -> float:
    """The loss of the best constant guess (the base rate) when a fraction p is replaced."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def electra_run(tweets: list[str], root: Path, steps: int, **kw) -> list[dict]:
    corpus = root / "tweets.txt"
    corpus.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 2000, 8)))
    args = PretrainArgs(**{**dict(
        model="electra-tiny", objective="electra", corpus=[corpus], out=root / "run",
        vocab_size=2000, batch_size=16, seq_len=64, lr=2e-3, steps=steps, warmup=3,
        log_every=5, save_every=steps, eval_every=0, progress=False), **kw})
    trainer = trainer_for(args)
    assert trainer.phases[0].source.stream.config.static_masking is False  # dynamic default
    return trainer.train()


def test_electra_tiny_trains_on_real_tweets(tweets: list[str], tmp_path: Path) -> None:
    assert get_objective("electra").name == "electra"
    records = electra_run(tweets, tmp_path, steps=25)
    first, last = records[0], records[-1]
    assert last["mlm_loss"] < first["mlm_loss"] - 0.5  # the generator learns
    assert 0.12 < last["replaced_fraction"] < 0.16  # ~15% masked, nearly all replaced
    # the discriminator has learnt at least the base rate of replacements
    assert last["disc_loss"] < entropy(last["replaced_fraction"]) + 0.01 < first["disc_loss"]
    model = plmkit.load(tmp_path / "run")
    assert isinstance(model, Electra) and model.config.vocab_size == 2000



def test_sampled_tokens_follow_the_softmax() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0, float("-inf")])
    rows = logits.expand(100_000, 5)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_tokens(rows, g), minlength=5).float()
    p = logits.softmax(-1)
    sigma = (p * (1 - p) * 1e5).sqrt()
    assert ((counts - p * 1e5).abs() <= 5 * sigma + 1).all()
    assert counts[4] == 0  # never a token of probability 0
    again = sample_tokens(rows, torch.Generator().manual_seed(0))
    assert torch.equal(again, sample_tokens(rows, torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def tweet_corpus(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]):
    """Real tweets in documents of 8, a WordPiece vocabulary, the prepared shards."""
    from plmkit.data.shards import prepare_corpus
    from plmkit.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("rtd")
    path = root / "train.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 800, 8)) + "\n")
    tok = train_tokenizer("wordpiece", tweets[:800], 1000)
    return prepare_corpus([path], tok, root / "shards", fingerprint="wp-1000"), tok


def electra_batches(tweet_corpus, masking: str = "dynamic", seed: int = 0):
    from plmkit.data.options import DataOptions

    corpus, tok = tweet_corpus
    options = DataOptions(batch_size=32, masking=masking)  # type: ignore[arg-type]
    return get_objective("electra").batches(corpus, tok, options, 64, seed)


def test_electra_feeds_two_consecutive_segments(tweet_corpus) -> None:
    corpus, tok = tweet_corpus
    documents = [" " + " ".join(map(str, np.concatenate(corpus.document(d)).tolist())) + " "
                 for d in range(corpus.num_documents)]
    two = rows = 0
    for b in itertools.islice(iter(electra_batches(tweet_corpus)), 10):
        ids = scatter_predictions(b["input_ids"], b["masked_lm_positions"], b["masked_lm_ids"],
                                  b["masked_lm_weights"] > 0)  # (B, S) unmasked
        for row, types, real in zip(ids, b["segment_ids"], b["input_mask"].bool(), strict=True):
            tokens, types = row[real], types[real]
            seps = (tokens == tok.sep_id).nonzero().flatten().tolist()
            rows += 1
            if types.any():  # [CLS] A [SEP] B [SEP]: B and its [SEP] are segment 1
                two += 1
                assert len(seps) == 2 and (types == (torch.arange(len(types)) > seps[0])).all()
                text = " " + " ".join(map(str, torch.cat([tokens[1:seps[0]],
                                                          tokens[seps[0] + 1:-1]]).tolist()))
                assert any(text + " " in d for d in documents)  # A then B, one document
            else:
                assert seps == [len(tokens) - 1]
    # fewer than 90%: a chunk of one sentence, or two that both go to A, has no B
    assert rows == 320 and 0.6 < two / rows < 0.9


def test_a_chunk_of_many_sentences_splits_nine_times_in_ten() -> None:
    from plmkit.data.bert import BertInstanceConfig, consecutive_segments

    config = BertInstanceConfig(max_seq_length=64, nsp=False, two_segment_prob=0.9)
    rng = np.random.default_rng(0)
    chunk = [np.arange(k, k + 4) for k in range(0, 80, 4)]  # 20 sentences of 4 tokens
    pairs = [consecutive_segments(chunk, 62, config, rng) for _ in range(4000)]
    split = [(a, b) for a, b, _ in pairs if len(b)]
    assert abs(len(split) / 4000 - 0.9) < 0.015  # binomial sd 0.005
    for a, b in split:  # A is the first ~30 tokens, B goes on from there, 64 in all
        joined = np.concatenate([a, b])
        assert (joined == np.arange(len(joined))).all() and 28 <= len(a) <= 32
        assert len(joined) == 64 - 3


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_electra_masks_85_percent_and_keeps_15(tweet_corpus, masking: str) -> None:
    _, tok = tweet_corpus
    counts = torch.zeros(3)
    for b in itertools.islice(iter(electra_batches(tweet_corpus, masking)), 20):
        valid = b["masked_lm_weights"] > 0
        shown = b["input_ids"].gather(1, b["masked_lm_positions"])[valid]
        original = b["masked_lm_ids"][valid]
        masked = shown == tok.mask_id
        counts += torch.tensor([masked.sum(), (~masked & (shown == original)).sum(),
                                (~masked & (shown != original)).sum()])
    share = counts / counts.sum()
    assert counts.sum() > 3000 and counts[2] == 0  # never a random token
    assert abs(share[0] - 0.85) < 0.025 and abs(share[1] - 0.15) < 0.025


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_electra_batches_resume_exactly(tweet_corpus, masking: str) -> None:
    first = electra_batches(tweet_corpus, masking, seed=3)
    it = iter(first)
    next(it)
    state = first.state_dict()
    expected = list(itertools.islice(it, 2))
    again = electra_batches(tweet_corpus, masking, seed=3)
    again.load_state_dict(state)
    for got, want in zip(again, expected, strict=False):
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_second_segment_embedding_trains(tweet_corpus) -> None:
    _, tok = tweet_corpus
    model = Electra(ElectraConfig(**{**TINY, "vocab_size": tok.vocab_size}))
    loss, _ = get_objective("electra")(model, next(iter(electra_batches(tweet_corpus))))
    loss.backward()
    grad = model.discriminator.embeddings.segments.weight.grad
    assert grad is not None and grad[1].abs().sum() > 0


def electra_fakes():
    spec = importlib.util.spec_from_file_location(
        "electra_fakes", Path(__file__).resolve().parent.parent / "benchmarks" / "electra_fakes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_auc_counts_the_pairs_ranked_right() -> None:
    scores = torch.tensor([0.1, 0.9, 0.4, 0.7, 0.2, 0.8])
    positive = torch.tensor([False, True, False, False, True, True])
    pairs = [(p, n) for p in scores[positive] for n in scores[~positive]]
    assert roc_auc(scores, positive).item() == pytest.approx(
        sum(float(p > n) for p, n in pairs) / len(pairs))


def test_the_discriminator_auc_ranks_real_tokens_only() -> None:
    replaced = torch.tensor([[True, False, False, True], [False, True, False, False]])
    real = torch.tensor([[True, True, True, True], [True, True, True, False]])
    logits = torch.tensor([[3.0, -1.0, -2.0, 2.0], [-3.0, 1.0, 0.5, 9.0]])  # 9.0: padding
    _, metrics = discriminator_loss(logits, replaced, real)
    assert metrics["disc_auc"].item() == 1.0  # every replaced token above every original
    _, metrics = discriminator_loss(logits - 10.0, replaced, real)  # all "original" at 0.5
    assert metrics["disc_recall"].item() == 0.0 and metrics["disc_auc"].item() == 1.0
    _, metrics = discriminator_loss(-logits, replaced, real)
    assert metrics["disc_auc"].item() == 0.0


def test_a_young_discriminator_spots_uniform_fakes_not_unigram_ones(
        tweets: list[str], tmp_path: Path) -> None:
    """What docs/compare.md's ELECTRA diagnosis rests on: a discriminator trained briefly
    against a near-uniform generator tells uniformly drawn tokens apart by their rarity, and
    tokens drawn by the corpus's unigram frequencies hardly at all."""
    electra_run(tweets, tmp_path, steps=25)
    run = tmp_path / "run"
    out = tmp_path / "fakes.json"
    [report] = electra_fakes().main([str(run), "--run", str(run), "--batches", "2",
                                     "--json", str(out), "--plot", str(tmp_path / "f.png")])
    assert json.loads(out.read_text()) == [report] and report["step"] == 25
    assert (tmp_path / "f.png").stat().st_size > 0
    assert report["uniform"]["auc"] > 0.7 > 0.6 > report["unigram"]["auc"]
    for kind in ("generator", "uniform", "unigram"):
        assert 0.1 < report[kind]["replaced"] < 0.16
    assert report["generator_entropy"] > report["unigram_entropy"]  # still near uniform
