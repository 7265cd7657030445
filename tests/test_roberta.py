"""RoBERTa: presets, position numbering, parity with transformers both ways, learning on tweets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

import plmkit
from conftest import randomize
from plmkit.jobs.pretrain import PretrainArgs, trainer_for
from plmkit.models.roberta import PRESETS, Roberta, RobertaConfig, position_ids
from plmkit.tokenizers import Tokenizer

TINY = {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 37, "max_positions": 66}


def hf_config(**kw) -> transformers.RobertaConfig:
    return transformers.RobertaConfig(
        vocab_size=kw["vocab_size"], hidden_size=kw["hidden_size"],
        num_hidden_layers=kw["num_layers"], num_attention_heads=kw["num_heads"],
        intermediate_size=kw["intermediate_size"],
        max_position_embeddings=kw.get("max_positions", 514), type_vocab_size=1,
    )


def inputs(vocab: int = 99, batch: int = 3, seq: int = 11) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (batch, seq))
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0  # one padded row, padded with <pad> = 1
    ids[1, 7:] = 1
    return {"input_ids": ids, "attention_mask": mask}


def compare(ours: Roberta, theirs: transformers.RobertaForMaskedLM) -> None:
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
                                   ref.logits[keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name: str) -> None:
    with torch.device("meta"):
        ours = plmkit.build(plmkit.preset_config(name))
        theirs = transformers.RobertaModel(hf_config(**{**RobertaConfig().__dict__,
                                                        **PRESETS[name]}))
    backbone = sum(p.numel() for m in (ours.encoder, ours.pooler) for p in m.parameters())
    assert backbone == sum(p.numel() for p in theirs.parameters())
    expected = {"roberta-base": 125e6, "roberta-large": 355e6}.get(name)  # RoBERTa Table 9
    if expected:
        assert abs(backbone - expected) / expected < 0.01


def test_positions_start_past_padding_as_transformers() -> None:
    x = inputs()["input_ids"]
    expected = RobertaEmbeddings.create_position_ids_from_input_ids(x, padding_idx=1)
    assert torch.equal(position_ids(x, 1), expected)
    assert position_ids(x, 1)[0].tolist() == list(range(2, 13))
    assert position_ids(x, 1)[1, 7:].tolist() == [1] * 4


def test_load_transformers_masked_lm(tmp_path: Path) -> None:
    theirs = randomize(transformers.RobertaForMaskedLM(hf_config(**TINY)))
    theirs.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="pooler"):  # RobertaForMaskedLM has no pooler
        ours = plmkit.load(tmp_path)
    assert isinstance(ours, Roberta) and ours.config.type_vocab_size == 1
    compare(ours, theirs)


def test_save_hf_loads_in_transformers(tmp_path: Path) -> None:
    ours = randomize(Roberta(RobertaConfig(**TINY)))
    plmkit.save_hf(ours, tmp_path)
    theirs, info = transformers.RobertaForMaskedLM.from_pretrained(tmp_path,
                                                                  output_loading_info=True)
    assert info["missing_keys"] == [] or not info["missing_keys"]
    compare(ours, theirs)
    base, info = transformers.AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(base, transformers.RobertaModel) and not info["missing_keys"]
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**x).pooler_output, base.eval()(**x).pooler_output,
                                   atol=1e-5, rtol=1e-5)


def test_too_long_input_is_a_user_error() -> None:
    model = Roberta(RobertaConfig(**TINY))  # 66 positions: 64 tokens after the offset of 2
    model(torch.full((1, 64), 5))
    with pytest.raises(plmkit.UserError, match="exceeds the model's 64 positions"):
        model(torch.full((1, 65), 5))


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
def test_tiny_roberta_learns_on_real_text(corpus: Path, tmp_path: Path) -> None:
    args = PretrainArgs(model="roberta-tiny", corpus=[corpus], out=tmp_path / "run",
                        heldout=[corpus], vocab_size=2000, batch_size=16, seq_len=64, lr=2e-3,
                        steps=20, warmup=2, eval_every=20, save_every=20, log_every=10,
                        eval_batches=2, progress=False)
    trainer = trainer_for(args)
    batch = next(iter(trainer.phases[0].source))
    tok = Tokenizer.load(tmp_path / "run" / "tokenizer")
    assert tok.kind == "bpe"
    assert (batch["input_ids"][:, 0] == tok.cls_id).all()  # <s> ... </s>, full rows
    assert batch["input_mask"].float().mean() > 0.75  # FULL-SENTENCES: whole tweets, packed
    assert (batch["segment_ids"] == 0).all()
    before = trainer.evaluate()["eval_mlm_loss"]
    after = trainer.train()[-1]["eval_mlm_loss"]
    assert after < before - 0.5
    assert isinstance(plmkit.load(tmp_path / "run"), Roberta)
