"""ELECTRA: presets, shared embeddings, parity with transformers' ElectraForPreTraining
(discriminator) and ElectraForMaskedLM (generator) in both directions."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import transformers

import plmkit
from conftest import randomize
from plmkit.models.electra import PRESETS, Electra, ElectraConfig

TINY = {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 37, "max_positions": 64, "embedding_size": 16,
        "generator_size": 0.75}


def hf_config(cfg: ElectraConfig, generator: bool = False) -> transformers.ElectraConfig:
    g = cfg.generator_config() if generator else cfg
    return transformers.ElectraConfig(
        vocab_size=cfg.vocab_size, embedding_size=cfg.embedding_size, hidden_size=g.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=g.num_heads,
        intermediate_size=g.intermediate_size, max_position_embeddings=cfg.max_positions,
        type_vocab_size=cfg.type_vocab_size,
    )


def inputs(vocab: int = 99, batch: int = 3, seq: int = 11) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0  # one padded row
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def compare(ours: Electra, disc: transformers.ElectraForPreTraining,
            gen: transformers.ElectraForMaskedLM) -> None:
    for m in (ours, disc, gen):
        m.eval()
    x = inputs(ours.config.vocab_size)
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        hidden = ours(**x).last_hidden_state
        ref = disc(**x, output_hidden_states=True)
        close(hidden[keep], ref.hidden_states[-1][keep])
        close(ours.rtd_logits(hidden)[keep], ref.logits[keep])
        hidden = ours.generator_hidden(**x)
        ref = gen(**x, output_hidden_states=True)
        close(hidden[keep], ref.hidden_states[-1][keep])
        close(ours.mlm_logits(hidden)[keep], ref.logits[keep])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name: str) -> None:
    cfg = plmkit.preset_config(name)
    with torch.device("meta"):
        ours = plmkit.build(cfg)
        disc = transformers.ElectraModel(hf_config(cfg))
        gen = transformers.ElectraModel(hf_config(cfg, generator=True))
    for mine, theirs in ((ours.discriminator, disc), (ours.generator, gen)):
        assert sum(p.numel() for p in mine.parameters()) == \
            sum(p.numel() for p in theirs.parameters())
    count = sum(p.numel() for p in ours.discriminator.parameters())
    if name == "electra-small":  # "14M" (Clark et al. 2020, Table 1); generator H64, 1 head
        assert 13e6 < count < 14e6
        assert (cfg.generator_hidden_size, cfg.generator_num_heads) == (64, 1)
    if name == "electra-base":  # 110M; generator 1/3: H256, 4 heads, FF1024
        assert 108e6 < count < 111e6
        assert cfg.generator_intermediate_size == 1024 and cfg.generator_num_heads == 4
    if name == "electra-large":
        assert cfg.mask_prob == 0.25 and cfg.generator_hidden_size == 256


def test_embeddings_are_shared_and_the_generator_output_tied() -> None:
    model = Electra(ElectraConfig(**TINY))
    d, g = model.discriminator.embeddings, model.generator.embeddings
    for name in ("tokens", "positions", "segments", "norm"):
        assert getattr(d, name).weight is getattr(g, name).weight
    assert d.project is not g.project  # each projects E to its own hidden size
    assert (d.project.out_features, g.project.out_features) == (32, 24)
    hidden = torch.randn(1, 3, 24)
    expected = model.mlm.norm(torch.nn.functional.gelu(model.mlm.dense(hidden)))
    close(model.mlm_logits(hidden), expected @ d.tokens.weight.T + model.mlm.bias)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("generator.embeddings.tokens") for n in names)  # counted once


def test_load_transformers_discriminator_and_generator(tmp_path: Path) -> None:
    cfg = ElectraConfig(**TINY)
    disc = randomize(transformers.ElectraForPreTraining(hf_config(cfg)))
    gen = randomize(transformers.ElectraForMaskedLM(hf_config(cfg, generator=True)))
    with torch.no_grad():  # the plmkit model shares them, as the released checkpoints do
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings",
                     "LayerNorm"):
            shared = getattr(disc.electra.embeddings, name)
            getattr(gen.electra.embeddings, name).load_state_dict(shared.state_dict())
    disc.save_pretrained(tmp_path)
    gen.save_pretrained(tmp_path / "generator")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = plmkit.load(tmp_path)
    assert ours.config.generator_hidden_size == 24
    compare(ours, disc, gen)


def test_load_base_model_and_save_hf_loads_in_transformers(tmp_path: Path) -> None:
    base = randomize(transformers.ElectraModel(hf_config(ElectraConfig(**TINY))))
    base.save_pretrained(tmp_path / "base")
    with pytest.warns(UserWarning, match="head parameters"):
        ours = plmkit.load(tmp_path / "base").eval()
    x = inputs()
    keep = x["attention_mask"].bool()  # plmkit leaves padded positions at zero
    with torch.no_grad():
        close(ours(**x).last_hidden_state[keep], base.eval()(**x).last_hidden_state[keep])

    ours = randomize(Electra(ElectraConfig(**TINY)))
    plmkit.save_hf(ours, tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing / unexpected keys
        disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf")
        gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "hf" / "generator")
    compare(ours, disc, gen)
    auto = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        close(ours.eval()(**x).last_hidden_state[keep], auto(**x).last_hidden_state[keep])
    again = plmkit.load(tmp_path / "hf")
    compare(again, disc, gen)


def test_native_round_trip(tmp_path: Path) -> None:
    ours = randomize(Electra(ElectraConfig(**TINY))).eval()
    plmkit.save_model(ours, tmp_path)
    again = plmkit.load(tmp_path).eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(ours(**x).last_hidden_state, again(**x).last_hidden_state)
        assert torch.equal(ours.generator_hidden(**x), again.generator_hidden(**x))
    assert again.generator.embeddings.tokens is again.discriminator.embeddings.tokens


def test_two_stage_initialisation() -> None:
    with pytest.raises(plmkit.UserError, match=r"generator_size 1\.0"):
        Electra(ElectraConfig(**TINY)).init_discriminator_from_generator()
    model = Electra(ElectraConfig(**{**TINY, "generator_size": 1.0}))
    model.init_discriminator_from_generator()
    x = inputs()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**x).last_hidden_state, model.generator_hidden(**x))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(plmkit.UserError, match="generator_size"):
        ElectraConfig(generator_size=0)
    with pytest.raises(plmkit.UserError, match="not divisible"):
        ElectraConfig(hidden_size=64, num_heads=4, generator_num_heads=3)
    disc = transformers.ElectraForPreTraining(hf_config(ElectraConfig(**TINY)))
    disc.save_pretrained(tmp_path)
    gen_cfg = hf_config(ElectraConfig(**TINY), generator=True)
    gen_cfg.num_hidden_layers = 1
    transformers.ElectraForMaskedLM(gen_cfg).save_pretrained(tmp_path / "generator")
    with pytest.raises(plmkit.UserError, match="num_layers=1 differs"):
        plmkit.load(tmp_path)
