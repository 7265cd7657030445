"""ALBERT: presets and sharing ablations, parity with transformers both ways, n-gram masking
statistics on real text, learning with MLM + SOP on tweets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import plmkit
from conftest import randomize
from plmkit.data.masking import (
    MaskingSpec,
    mask_batch,
    mask_tokens,
    ngram_probs,
    ngram_units,
)
from plmkit.jobs.pretrain import PretrainArgs, trainer_for
from plmkit.models.albert import PRESETS, Albert, AlbertConfig
from plmkit.tokenizers import train_tokenizer

TINY = {"vocab_size": 99, "embedding_size": 16, "hidden_size": 32, "num_layers": 4,
        "num_heads": 4, "intermediate_size": 37, "max_positions": 64}


def hf_config(groups: int = 1, **kw) -> transformers.AlbertConfig:
    return transformers.AlbertConfig(
        vocab_size=kw["vocab_size"], embedding_size=kw["embedding_size"],
        hidden_size=kw["hidden_size"], num_hidden_layers=kw["num_layers"],
        num_hidden_groups=groups, num_attention_heads=kw["num_heads"],
        intermediate_size=kw["intermediate_size"],
        max_position_embeddings=kw.get("max_positions", 512),
    )


def inputs(vocab: int = 99, batch: int = 3, seq: int = 11) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0  # one padded row
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def compare(ours: Albert, theirs: transformers.AlbertForPreTraining) -> None:
    ours.eval()
    theirs.eval()
    x = inputs(ours.config.vocab_size)
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        out = ours(**x)
        ref = theirs(**x, output_hidden_states=True)
        torch.testing.assert_close(out.last_hidden_state[keep], ref.hidden_states[-1][keep],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.mlm_logits(out.last_hidden_state)[keep],
                                   ref.prediction_logits[keep], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.sentence_logits(out.pooler_output), ref.sop_logits,
                                   atol=1e-5, rtol=1e-5)


def backbone_size(model: Albert) -> int:
    return sum(p.numel() for m in (model.encoder, model.pooler) for p in m.parameters())


# transformers' AlbertModel counts; the paper's Table 1 rounds them to 12M, 18M, 60M, 235M.
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name: str) -> None:
    with torch.device("meta"):
        ours = plmkit.build(plmkit.preset_config(name))
        kw = {**AlbertConfig().__dict__, **PRESETS[name]}
        theirs = transformers.AlbertModel(hf_config(**kw))
    assert backbone_size(ours) == sum(p.numel() for p in theirs.parameters())
    millions = {"albert-base": 11.7, "albert-large": 17.7, "albert-xlarge": 58.7,
                "albert-xxlarge": 222.6}.get(name)
    if millions:
        assert round(backbone_size(ours) / 1e6, 1) == millions


@pytest.mark.parametrize(("sharing", "millions"),
                         [("all", 12), ("attention", 64), ("ffn", 38), ("none", 89)])
def test_sharing_ablation_counts_as_table_4(sharing: str, millions: int) -> None:
    with torch.device("meta"):
        model = Albert(AlbertConfig(sharing=sharing))  # ALBERT-base, E = 128
    assert abs(backbone_size(model) / 1e6 - millions) < 0.7  # the paper rounds 89.65 down


def test_partial_sharing_shares_one_module_and_round_trips(tmp_path: Path) -> None:
    model = randomize(Albert(AlbertConfig(**TINY, sharing="attention"))).eval()
    blocks = model.encoder.layers.blocks
    assert blocks[3].attn is blocks[0].attn and blocks[3].ffn is not blocks[0].ffn
    plmkit.save_model(model, tmp_path / "native")
    again = plmkit.load(tmp_path / "native").eval()
    assert again.encoder.layers.blocks[2].attn_norm is again.encoder.layers.blocks[0].attn_norm
    x = inputs()
    with torch.no_grad():
        assert torch.equal(model(**x).last_hidden_state, again(**x).last_hidden_state)
    with pytest.raises(plmkit.UserError, match="cannot export to Hugging Face"):
        plmkit.save_hf(model, tmp_path / "hf")


@pytest.mark.parametrize("groups", [1, 2])
def test_load_transformers_pretraining_checkpoint(tmp_path: Path, groups: int) -> None:
    theirs = randomize(transformers.AlbertForPreTraining(hf_config(groups, **TINY)))
    theirs.save_pretrained(tmp_path)
    ours = plmkit.load(tmp_path)
    assert ours.config.num_groups == groups and len(ours.encoder.layers.groups) == groups
    compare(ours, theirs)


@pytest.mark.parametrize("sharing", ["all", "none"])
def test_save_hf_loads_in_transformers(tmp_path: Path, sharing: str) -> None:
    ours = randomize(Albert(AlbertConfig(**TINY, sharing=sharing)))
    plmkit.save_hf(ours, tmp_path)
    theirs, info = transformers.AlbertForPreTraining.from_pretrained(tmp_path,
                                                                    output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert theirs.config.num_hidden_groups == (1 if sharing == "all" else 4)
    compare(ours, theirs)
    base, info = transformers.AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(base, transformers.AlbertModel) and not info["missing_keys"]
    x = inputs()
    keep = x["attention_mask"].bool()  # plmkit leaves padded positions at zero
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**x).last_hidden_state[keep],
                                   base.eval()(**x).last_hidden_state[keep], atol=1e-5,
                                   rtol=1e-5)


def test_config_errors() -> None:
    with pytest.raises(plmkit.UserError, match="embedding_size below"):
        AlbertConfig(embedding_size=768)
    with pytest.raises(plmkit.UserError, match="sharing must be"):
        AlbertConfig(sharing="some")  # type: ignore[arg-type]
    with pytest.raises(plmkit.UserError, match="num_groups 1 only"):
        AlbertConfig(sharing="ffn", num_groups=2)


@pytest.fixture(scope="module")
def unigram(tweets: list[str]):
    return train_tokenizer("unigram", tweets, 2000)


def test_ngram_masking_statistics_on_real_text(unigram, tweets: list[str]) -> None:
    spec = MaskingSpec.from_vocab(unigram, max_predictions=1000, whole_word=True, max_ngram=3)
    rng = np.random.default_rng(0)
    masked = total = 0
    kinds = np.zeros(2)  # [MASK], kept
    for text in tweets[:600]:
        ids = np.array([unigram.cls_id, *unigram.encode(text), unigram.sep_id])
        out = mask_tokens(ids, rng, spec)
        masked, total = masked + len(out.positions), total + len(ids)
        kinds += [(out.ids[out.positions] == unigram.mask_id).sum(),
                  (out.ids[out.positions] == out.labels).sum()]
        assert not np.isin(out.positions, [0, len(ids) - 1]).any()
    assert abs(masked / total - 0.15) < 0.01  # 15% of the tokens, whole words
    assert abs(kinds[0] / masked - 0.8) < 0.03 and abs(kinds[1] / masked - 0.1) < 0.03

    # The n drawn for each span follows 6/11, 3/11, 2/11 (long runs of words: no truncation).
    units = np.stack([np.arange(0, 30000), np.arange(1, 30001)], axis=1)
    n = np.diff(ngram_units(units, 3, rng), axis=1)[:, 0]
    freq = np.bincount(n, minlength=4)[1:] / len(n)
    np.testing.assert_allclose(freq, ngram_probs(3), atol=0.01)
    assert np.allclose(ngram_probs(3) * 11, [6, 3, 2])


def test_ngram_masking_in_a_dynamic_batch(unigram, tweets: list[str]) -> None:
    spec = MaskingSpec.from_vocab(unigram, whole_word=True, max_ngram=3)
    rows = [[unigram.cls_id, *unigram.encode(t)[:30], unigram.sep_id] for t in tweets[:8]]
    ids = torch.full((8, 32), unigram.pad_id)
    mask = torch.zeros(8, 32, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
    a = mask_batch(ids, mask, torch.Generator().manual_seed(1), spec)
    b = mask_batch(ids, mask, torch.Generator().manual_seed(1), spec)
    assert torch.equal(a.input_ids, b.input_ids)  # seeded by the generator
    chosen = a.positions[a.weights.bool()]
    assert (mask.gather(1, a.positions)[a.weights.bool()] == 1).all() and len(chosen) > 8
    assert torch.equal(ids.gather(1, a.positions) * a.weights.long(), a.labels)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    """Real tweets, documents of 8."""
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 1600, 8)) + "\n")
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded 2-core machine, two threads per op wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_tiny_albert_learns_mlm_and_sop_on_real_text(corpus: Path, tmp_path: Path) -> None:
    args = PretrainArgs(model="albert-tiny", corpus=[corpus], out=tmp_path / "run",
                        heldout=[corpus], vocab_size=2000, batch_size=16, seq_len=64, lr=2e-3,
                        steps=20, warmup=2, eval_every=20, save_every=20, log_every=10,
                        eval_batches=2, progress=False)
    trainer = trainer_for(args)
    before = trainer.evaluate()
    after = trainer.train()[-1]
    assert after["eval_mlm_loss"] < before["eval_mlm_loss"] - 0.5
    assert {"eval_sop_loss", "eval_sop_accuracy"} <= set(after)
    model = plmkit.load(tmp_path / "run")
    assert isinstance(model, Albert) and len(model.encoder.layers.groups) == 1
