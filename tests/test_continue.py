"""Continued pretraining (`plmkit pretrain --model DIR`): the real all-MiniLM-L6-v2 on the World
English Bible (nothing re-initialised, the held-out masked-LM loss falls, the export loads in
transformers' BertForMaskedLM); for each family a tiny random transformers checkpoint continued
and reloaded in transformers with plmkit's outputs; the options a checkpoint refuses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

import plmkit
from conftest import randomize
from plmkit.cli import main
from plmkit.data.bible import build_bible_corpus, chapter_splits, read_bible
from plmkit.errors import UserError
from plmkit.interop.start import export_hf
from plmkit.jobs.options import CONTINUED_LR
from plmkit.jobs.pretrain import PretrainArgs, pretrain, trainer_for
from plmkit.tokenizers import Tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
BOOKS = "Ruth 1:1-Esther 10:3"  # 204 chapters of the WEB


@pytest.fixture(scope="module")
def bible(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The WEB from Ruth to Esther as `plmkit data build --name bible-web` writes it."""
    paths = build_bible_corpus(tmp_path_factory.mktemp("bible"), key=BOOKS)
    return paths["train"], paths["dev"]


def test_the_bible_corpus_leaves_the_test_chapters_out(bible: tuple[Path, Path]) -> None:
    verses = read_bible("web", BOOKS)
    splits = chapter_splits(verses, 0)
    docs = {name: path.read_text().strip().split("\n\n") for name, path in zip(
        ("train", "dev"), bible, strict=True)}
    assert {k: len(v) for k, v in docs.items()} == {k: len(splits[k]) for k in docs}
    lines = {line for d in [*docs["train"], *docs["dev"]] for line in d.split("\n")}
    test = [v.text for v in verses if (v.book, v.chapter) in splits["test"]]
    assert sum(t in lines for t in test) < 0.05 * len(test)  # Kings and Chronicles repeat some


def run_args(model: Path | str, corpus: Path, out: Path, **kw: Any) -> PretrainArgs:
    base = dict(steps=3, batch_size=4, seq_len=32, save_every=0, eval_every=0, log_every=1,
                progress=False, bf16=False)
    return PretrainArgs(model=str(model), corpus=[corpus], out=out, **{**base, **kw})


def hidden(model: torch.nn.Module, tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tok(texts, max_length=48)
    model.eval()
    with torch.no_grad():
        out = model(**batch).last_hidden_state  # (B, S, H)
    return out[batch["attention_mask"].bool()]


VERSES = ["Naomi said, Go, return each of you to her mother's house.",
          "Your people will be my people, and your God my God."]


def test_minilm_one_step_at_a_negligible_lr_keeps_every_weight(
        minilm_dir: Path, bible: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    pretrain(run_args(minilm_dir, bible[0], out, steps=1, lr=1e-20, objective="mlm"))
    assert "created fresh: mlm, nsp" in capsys.readouterr().out  # a BertModel has no heads
    tok = Tokenizer.load(out / "tokenizer")
    torch.testing.assert_close(hidden(plmkit.load(out), tok, VERSES),
                               hidden(plmkit.load(minilm_dir), tok, VERSES), atol=1e-6, rtol=0)
    record = json.loads((out / "run.json").read_text())["args"]
    assert record["model"] == str(minilm_dir)


def test_minilm_continued_on_the_bible_lowers_heldout_mlm_loss_and_exports(
        minilm_dir: Path, bible: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = run_args(minilm_dir, bible[0], out, steps=12, objective="mlm", heldout=[bible[1]],
                    eval_batches=4, lr=1e-4, warmup=0)
    trainer = trainer_for(args)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.5, (before, after)
    assert trainer.config.lr == 1e-4
    hf = tmp_path / "hf"
    export_hf(out, hf)
    config = json.loads((hf / "config.json").read_text())
    assert config["_name_or_path"] == "nreimers/MiniLM-L6-H384-uncased"  # kept from the source
    theirs = transformers.BertForMaskedLM.from_pretrained(hf).eval()
    ours = plmkit.load(out).eval()
    batch = Tokenizer.load(hf)(VERSES, max_length=48)
    assert transformers.AutoTokenizer.from_pretrained(hf)(VERSES[0])["input_ids"] == \
        batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = ours.mlm_logits(ours(**batch).last_hidden_state)
        torch.testing.assert_close(theirs(**batch).logits[keep], expected[keep], atol=1e-4,
                                   rtol=1e-5)


@pytest.mark.slow
def test_minilm_continued_longer_predicts_the_bibles_masked_words(
        minilm_dir: Path, bible: tuple[Path, Path], tmp_path: Path) -> None:
    """At the continued-pretraining defaults (lr 5e-5, 6% warmup), 80 steps take the fresh
    MLM head from worse than chance (ln 30522 = 10.3 nats) to 6.1 nats and 9.7% of held-out
    masked words (measured; ~10 min on a shared 2-core CPU)."""
    args = run_args(minilm_dir, bible[0], tmp_path / "run", steps=80, batch_size=16,
                    seq_len=64, objective="mlm", heldout=[bible[1]], eval_batches=8)
    trainer = trainer_for(args)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert before["eval_loss"] > 10.0 and after["eval_loss"] < 7.0, (before, after)
    assert after["eval_mlm_accuracy"] > 0.07, after


def test_continuing_defaults_to_a_small_lr_and_6_percent_warmup(
        minilm_dir: Path, bible: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = trainer_for(run_args(minilm_dir, bible[0], tmp_path / "r", steps=100,
                                   objective="mlm"))
    assert (trainer.config.lr, trainer.config.warmup_steps) == (CONTINUED_LR, 6)


# family -> (transformers config, tokenizer kind, transformers class of the export)
def _bert(vocab: int, pad: int) -> transformers.PretrainedConfig:
    return transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37,
                                   max_position_embeddings=64, pad_token_id=pad)


def _roberta(vocab: int, pad: int) -> transformers.PretrainedConfig:
    return transformers.RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=37,
                                      max_position_embeddings=66, type_vocab_size=1,
                                      pad_token_id=pad)


def _albert(vocab: int, pad: int) -> transformers.PretrainedConfig:
    return transformers.AlbertConfig(vocab_size=vocab, embedding_size=16, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64,
                                     pad_token_id=pad)


def _electra(vocab: int, pad: int, hidden: int = 32, heads: int = 4,
             ffn: int = 37) -> transformers.PretrainedConfig:
    return transformers.ElectraConfig(vocab_size=vocab, embedding_size=16, hidden_size=hidden,
                                      num_hidden_layers=2, num_attention_heads=heads,
                                      intermediate_size=ffn, max_position_embeddings=64,
                                      pad_token_id=pad)


def _xlnet(vocab: int, pad: int) -> transformers.PretrainedConfig:
    return transformers.XLNetConfig(vocab_size=vocab, d_model=32, n_layer=2, n_head=4,
                                    d_inner=37, pad_token_id=pad)


def _ernie(vocab: int, pad: int) -> transformers.PretrainedConfig:
    return transformers.ErnieConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=37,
                                    max_position_embeddings=64, pad_token_id=pad)


FRESH_GENERATOR = "; not in it, created fresh: generator, mlm"
FAMILIES: dict[str, tuple[Callable[[int, int], Any], str, str]] = {
    "bert": (_bert, "wordpiece", "BertForPreTraining"),
    "roberta": (_roberta, "bpe", "RobertaForMaskedLM"),
    "albert": (_albert, "unigram", "AlbertForPreTraining"),
    "electra": (_electra, "wordpiece", "ElectraForPreTraining"),
    "xlnet": (_xlnet, "unigram", "XLNetLMHeadModel"),
    "ernie": (_ernie, "char", "ErnieForPreTraining"),
}


def tiny_checkpoint(family: str, corpus: Path, out: Path) -> tuple[Path, Tokenizer]:
    """A random transformers checkpoint of `family` with a tokenizer trained on `corpus`."""
    make, kind, cls = FAMILIES[family]
    texts = corpus.read_text().split("\n")
    tok = train_tokenizer(kind, texts, 300)
    model = randomize(getattr(transformers, cls)(make(tok.vocab_size, tok.pad_id)), 0.05)
    model.save_pretrained(out)
    tok.save(out)
    return out, tok


def own_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits of plmkit's model that the family's transformers class returns first."""
    out = model(**batch)
    h = out.last_hidden_state
    if hasattr(model, "rtd_logits"):
        return model.rtd_logits(h)
    return model.lm_logits(h) if hasattr(model, "lm_logits") else model.mlm_logits(h)


# the parts each class's checkpoint lacks: every pretraining head it has is reused
FRESH = {"roberta": "; not in it, created fresh: pooler", "electra": FRESH_GENERATOR}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_random_checkpoint_continued_reloads_in_transformers(
        family: str, bible: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    start, tok = tiny_checkpoint(family, bible[1], tmp_path / "start")
    out = tmp_path / "run"
    pretrain(run_args(start, bible[1], out, lr=1e-3, warmup=0))
    assert f"continuing from {start}{FRESH.get(family, '')}\n" in capsys.readouterr().out
    ours = plmkit.load(out).eval()
    initial = plmkit.load(start)
    assert ours.config == dataclasses.replace(initial.config, reuse_len=16) \
        if family == "xlnet" else ours.config == initial.config
    changed = [k for k, v in ours.state_dict().items()
               if not torch.equal(v, initial.state_dict()[k])]
    assert changed  # it trained
    hf = tmp_path / "hf"
    export_hf(out, hf)
    theirs = getattr(transformers, FAMILIES[family][2]).from_pretrained(hf).eval()
    batch = tok(VERSES, max_length=40)
    if family != "roberta" and family != "xlnet":
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    batch.pop("token_type_ids") if family == "roberta" else None
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = theirs(**batch)
        expected = getattr(ref, "prediction_logits", None)
        expected = ref.logits if expected is None else expected
        torch.testing.assert_close(own_logits(ours, batch)[keep], expected[keep],
                                   atol=1e-5, rtol=1e-5)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # as the checkpoint had them
        assert (hf / name).read_bytes() == (start / name).read_bytes()


def test_electra_generator_from_its_own_directory(bible: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    disc, tok = tiny_checkpoint("electra", bible[1], tmp_path / "disc")
    gen = tmp_path / "gen"
    config = _electra(tok.vocab_size, tok.pad_id, hidden=16, heads=2, ffn=20)
    randomize(transformers.ElectraForMaskedLM(config), 0.05).save_pretrained(gen)
    out = tmp_path / "run"
    pretrain(run_args(disc, bible[1], out, generator=gen, lr=1e-3, warmup=0))
    hf = tmp_path / "hf"
    export_hf(out, hf)
    ours = plmkit.load(out).eval()
    theirs = transformers.ElectraForMaskedLM.from_pretrained(hf / "generator").eval()
    batch = tok(VERSES, max_length=40)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = ours.mlm_logits(ours.generator_hidden(**batch))
        torch.testing.assert_close(theirs(**batch).logits[keep], expected[keep], atol=1e-5,
                                   rtol=1e-5)
    assert ours.config.generator_hidden_size == 16
    capsys.readouterr()
    pretrain(run_args(hf, bible[1], tmp_path / "again", steps=1))  # its generator/ beside it
    assert capsys.readouterr().out.splitlines()[-1] == f"continuing from {hf}"


def test_electra_discriminator_alone_gets_a_fresh_generator_at_the_papers_ratio(
        bible: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disc, _ = tiny_checkpoint("electra", bible[1], tmp_path / "disc")
    trainer = trainer_for(run_args(disc, bible[1], tmp_path / "run"))
    assert FRESH_GENERATOR in capsys.readouterr().out
    model = trainer.model
    assert model.config.generator_hidden_size == 32 // 4  # Clark et al. 2020, Table 6
    assert model.generator.embeddings.tokens is model.discriminator.embeddings.tokens


def test_a_transformer_run_continues_on_new_pairs(bible: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    """The encoder-decoder has no transformers class: it continues from a plmkit run."""
    verses = bible[1].read_text().split("\n")
    pairs = tmp_path / "pairs.tsv"  # each verse paired with the next, a stand-in translation
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in zip(verses[:400:2], verses[1:400:2],
                                                           strict=True) if a and b))
    first = run_args("transformer-tiny", pairs, tmp_path / "first", steps=2, vocab_size=300,
                     seq_len=96)
    pretrain(first)
    start = plmkit.load(tmp_path / "first")
    then = run_args(tmp_path / "first", pairs, tmp_path / "then", steps=3, seq_len=96)
    trainer = trainer_for(dataclasses.replace(then, lr=CONTINUED_LR))
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                  start.state_dict().values(), strict=True))
    trainer.train()
    assert Tokenizer.load(tmp_path / "then" / "tokenizer").vocab_size == start.config.vocab_size


@pytest.mark.parametrize(("change", "needle"), [
    ({"vocab_size": 999}, "--vocab-size 999: --model"),
    ({"generator": Path("/tmp")}, "bert checkpoint has no generator"),
    ({"seq_len": 100}, "has 64 positions"),
    ({"overrides": {"hidden_size": 64, "num_heads": 4}}, "do not fit"),
    ({"overrides": {"no_such_field": 1}}, "no config field"),
])
def test_options_that_contradict_the_checkpoint_are_refused(
        change: dict[str, Any], needle: str, bible: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = tiny_checkpoint("bert", bible[1], tmp_path / "start")
    with pytest.raises(UserError, match=needle):
        pretrain(dataclasses.replace(run_args(start, bible[1], tmp_path / "run"), **change))
    assert not (tmp_path / "run").exists()


def test_a_tokenizer_other_than_the_checkpoints_is_refused(bible: tuple[Path, Path],
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    start, _ = tiny_checkpoint("bert", bible[1], tmp_path / "start")
    other = tmp_path / "tok"
    train_tokenizer("wordpiece", bible[0].read_text().split("\n"), 280).save(other)
    code = main(["pretrain", "--model", str(start), "--tokenizer", str(other), "--corpus",
                 str(bible[1]), "--out", str(tmp_path / "run"), "--steps", "1", "--seq-len", "32"])
    assert code == 2 and "not the tokenizer of --model" in capsys.readouterr().err


def test_resume_a_continued_run(bible: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = tiny_checkpoint("bert", bible[1], tmp_path / "start")
    out = tmp_path / "run"
    args = run_args(start, bible[1], out, steps=2, save_every=2)
    pretrain(args)
    records = pretrain(dataclasses.replace(args, steps=4, resume=True))
    assert [r["step"] for r in records][-1] == 4


def test_model_spec_sets_objective_and_options(bible: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    pretrain(run_args("bert-tiny:mlm:masking=static:dropout=0.0", bible[1], out, steps=1,
                      vocab_size=300))
    args = json.loads((out / "run.json").read_text())["args"]
    assert (args["model"], args["objective"], args["masking"]) == ("bert-tiny", "mlm", "static")
    assert plmkit.load(out).config.dropout == 0.0
