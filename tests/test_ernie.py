"""ERNIE 1.0: character tokenizer, knowledge units and masking, staged pretraining on People's
Daily, parity with transformers' ErnieForPreTraining both ways (task-type embedding included)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import plmkit
from conftest import randomize
from plmkit.data.builders import build_dataset
from plmkit.data.corpus import split_sentences
from plmkit.data.ernie import (
    Segmenter,
    jieba_entities,
    peoples_daily_entities,
    read_entities,
    token_flags,
)
from plmkit.data.masking import (
    MaskingSpec,
    candidates,
    mask_units,
    unit_starts,
    word_starts,
    word_units,
)
from plmkit.errors import UserError
from plmkit.jobs.pretrain import PretrainArgs, trainer_for
from plmkit.models.ernie import PRESETS, Ernie, ErnieConfig
from plmkit.tokenizers import Tokenizer, train_tokenizer

TINY = {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 37, "max_positions": 64}
SENTENCE = "中共中央 总书记 、 国家 主席 江 泽民 发表 １９９８年 新年 讲话 。"


@pytest.fixture(scope="module")
def pd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """People's Daily as `plmkit data build --name peoples-daily` writes it."""
    out = tmp_path_factory.mktemp("pd")
    assert [p.name for p in build_dataset("peoples-daily", out)] == [
        "train.txt", "heldout.txt", "entities.txt"]
    return out


@pytest.fixture(scope="module")
def small_corpus(pd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 documents (400 paragraphs) of the People's Daily training split."""
    docs = (pd_dir / "train.txt").read_text(encoding="utf-8").split("\n\n")[:40]
    path = tmp_path_factory.mktemp("small") / "pd.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(small_corpus: Path) -> Tokenizer:
    text = small_corpus.read_text(encoding="utf-8").splitlines()
    return train_tokenizer("char", [*text, SENTENCE, "the Transformer models"], 4000)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plmkit.cli", *args], capture_output=True,
                          text=True, timeout=300)


def annotate(tok: Tokenizer, text: str, level: str) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] text [SEP] ids and the unit starts at `level`."""
    segmenter = Segmenter(peoples_daily_entities())
    enc = tok.backend.encode(text, add_special_tokens=False)
    words = segmenter.words(text)
    flags = token_flags(enc.offsets, words, segmenter.entity_spans(text, words))
    ids = np.array([tok.cls_id, *enc.ids, tok.sep_id])
    flags = np.concatenate([[0], flags, [0]]).astype(np.uint8)
    return ids, unit_starts(flags, word_starts(ids, tok.is_continuation), level)


def spans_of(tok: Tokenizer, ids: np.ndarray, text: str) -> list[int]:
    """Positions in ``ids`` of the characters of ``text`` (contiguous)."""
    target = [tok.token_to_id(c) for c in text]
    for i in range(len(ids) - len(target) + 1):
        if list(ids[i:i + len(target)]) == target:
            return list(range(i, i + len(target)))
    raise AssertionError(f"{text} not in the sequence")


def test_char_tokenizer_and_chinese_sentences(tok: Tokenizer, small_corpus: Path,
                                              tmp_path: Path) -> None:
    pieces = [tok.id_to_token(i) for i in tok.encode("江泽民说Transformer很好")]
    assert pieces[:3] == ["江", "泽", "民"] and pieces[-2:] == ["很", "好"]
    assert pieces[3] == "说" and pieces[4] == "t"  # Latin: one word in word pieces
    assert all(p.startswith("##") for p in pieces[5:-2])
    result = cli("tokenizer", "train", "--kind", "char", "--corpus", str(small_corpus),
                 "--vocab-size", "3000", "--out", str(tmp_path / "tok"))
    assert result.returncode == 0, result.stderr
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.kind == "char" and loaded.vocab_size <= 3000
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "国家主席江泽民发表新年讲话。"
    assert theirs(text)["input_ids"] == loaded(text, return_tensors=False)["input_ids"][0]
    assert split_sentences("今天下雨了。你去吗？去！“好的。”然后呢；") == [
        "今天下雨了。", "你去吗？", "去！", "“好的。”", "然后呢；"]


def test_entity_level_masks_a_whole_entity_and_none_of_its_neighbours(tok: Tokenizer) -> None:
    ids, starts = annotate(tok, SENTENCE, "entity")
    name = spans_of(tok, ids, "江泽民")
    units = word_units(candidates(ids, tok.special_ids), starts)
    assert [name[0], name[-1] + 1] in units.tolist()
    spec = MaskingSpec.from_vocab(tok, mask_prob=3 / len(ids))  # a budget of 3 tokens
    exactly = 0
    for seed in range(300):
        masked = set(mask_units(ids, starts, np.random.default_rng(seed), spec).positions)
        assert masked >= set(name) or not masked & set(name), masked
        exactly += masked == set(name)
    assert exactly > 5  # chosen: the three characters, neither 主席 nor 发表 around them
    _, phrase = annotate(tok, SENTENCE, "phrase")
    assert phrase[name].tolist() == [True, True, False]  # phrase level: 江 | 泽民


def test_phrase_level_respects_word_boundaries(tok: Tokenizer, small_corpus: Path) -> None:
    lines = [s for line in small_corpus.read_text(encoding="utf-8").splitlines()[:60]
             for s in split_sentences(line)][:80]
    spec = MaskingSpec.from_vocab(tok)
    longest = []
    for i, text in enumerate([*lines, "我爱北京天安门，也爱人民大会堂。"]):  # last: jieba
        ids, starts = annotate(tok, text, "phrase")
        words = word_units(candidates(ids, tok.special_ids), starts)
        longest.append(int((words[:, 1] - words[:, 0]).max()))
        masked = np.zeros(len(ids), bool)
        masked[mask_units(ids, starts, np.random.default_rng(i), spec).positions] = True
        for a, b in words:
            assert masked[a:b].all() or not masked[a:b].any(), (text, a, b)
    assert np.mean(np.array(longest) >= 2) > 0.9 and longest[-1] == 5  # jieba: 人民大会堂


def test_masked_fraction_and_80_10_10_per_unit(tok: Tokenizer, small_corpus: Path) -> None:
    text = "".join(small_corpus.read_text(encoding="utf-8").splitlines()[:200])
    ids_all, starts_all = annotate(tok, text, "entity")
    rng = np.random.default_rng(0)
    spec = MaskingSpec.from_vocab(tok, max_predictions=20)
    kinds = {"mask": 0, "keep": 0, "random": 0}
    masked_tokens = total = 0
    for k in range(400):  # sequences of 128 from random places of the text
        at = int(rng.integers(1, len(ids_all) - 130))
        ids = np.concatenate([[tok.cls_id], ids_all[at:at + 126], [tok.sep_id]])
        starts = np.concatenate([[True], starts_all[at:at + 126], [True]])
        out = mask_units(ids, starts, np.random.default_rng(k), spec)
        units = word_units(candidates(ids, tok.special_ids), starts)
        chosen = [(a, b) for a, b in units if np.isin(np.arange(a, b), out.positions).any()]
        for a, b in chosen:
            assert np.isin(np.arange(a, b), out.positions).all()  # units are taken whole
            new, old = out.ids[a:b], ids[a:b]
            if (new == tok.mask_id).all():
                kinds["mask"] += 1
            elif (new == old).all():
                kinds["keep"] += 1
            else:
                assert not (new == tok.mask_id).any()  # one decision per unit
                kinds["random"] += 1
        masked_tokens += len(out.positions)
        total += len(ids)
    n = sum(kinds.values())
    for kind, p in (("mask", 0.8), ("keep", 0.1), ("random", 0.1)):
        assert abs(kinds[kind] / n - p) < 4 * (p * (1 - p) / n) ** 0.5, kinds
    assert 0.14 <= masked_tokens / total <= 0.15  # round(128 * 0.15) = 19 of 128


def hf_config(**kw) -> transformers.ErnieConfig:
    return transformers.ErnieConfig(
        vocab_size=kw["vocab_size"], hidden_size=kw["hidden_size"],
        num_hidden_layers=kw["num_layers"], num_attention_heads=kw["num_heads"],
        intermediate_size=kw["intermediate_size"],
        max_position_embeddings=kw.get("max_positions", 513), hidden_act="relu",
        layer_norm_eps=1e-5, use_task_id=kw.get("use_task_id", False), task_type_vocab_size=3,
    )


def inputs(vocab: int = 99) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask,
            "token_type_ids": torch.randint(0, 2, ids.shape),
            "task_type_ids": torch.randint(0, 3, ids.shape)}


def assert_same(ours: Ernie, theirs: transformers.ErnieForPreTraining) -> None:
    ours.eval()
    theirs.eval()
    x = inputs()
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        out = ours(**x)
        ref = theirs(**x, output_hidden_states=True)
    close = {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(out.last_hidden_state[keep], ref.hidden_states[-1][keep], **close)
    torch.testing.assert_close(ours.mlm_logits(out.last_hidden_state)[keep],
                               ref.prediction_logits[keep], **close)
    torch.testing.assert_close(ours.sentence_logits(out.pooler_output),
                               ref.seq_relationship_logits,
                               **close)


@pytest.mark.parametrize("task_id", [True, False])
def test_parity_with_transformers_both_ways(tmp_path: Path, task_id: bool) -> None:
    theirs = randomize(transformers.ErnieForPreTraining(hf_config(**TINY, use_task_id=task_id)))
    theirs.save_pretrained(tmp_path / "hf")
    ours = plmkit.load(tmp_path / "hf")
    assert isinstance(ours, Ernie) and ours.config.use_task_id == task_id
    assert (ours.encoder.embeddings.task_types is not None) == task_id
    assert_same(ours, theirs)
    ours = randomize(Ernie(ErnieConfig(**TINY, use_task_id=task_id)))
    plmkit.save_hf(ours, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "ernie"
    back = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "out")
    assert isinstance(back, transformers.ErnieForPreTraining)
    assert_same(ours, back)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name: str) -> None:
    with torch.device("meta"):
        ours = plmkit.build(plmkit.preset_config(name))
        theirs = transformers.ErnieModel(hf_config(**{**ErnieConfig().__dict__, **PRESETS[name]}))
    backbone = sum(p.numel() for m in (ours.encoder, ours.pooler) for p in m.parameters())
    assert backbone == sum(p.numel() for p in theirs.parameters())
    if name == "ernie-base":  # BERT-base's 110M less 12.5k rows of vocabulary
        assert abs(backbone - 99.9e6) / 99.9e6 < 0.01


def test_pretrain_steps_through_three_stages_with_falling_loss(small_corpus: Path,
                                                               tmp_path: Path) -> None:
    words = small_corpus.read_text(encoding="utf-8").split()
    pair = next(a + b for a, b in itertools.pairwise(words)
                if len(a) == len(b) == 2 and a + b not in peoples_daily_entities())
    entities = tmp_path / "entities.txt"
    entities.write_text(pair + "\n")  # two words of the corpus, one entity from now on
    run = tmp_path / "run"
    result = cli("pretrain", "--model", "ernie-tiny", "--objective", "ernie", "--corpus",
                 str(small_corpus), "--out", str(run), "--steps", "30", "--batch-size", "16",
                 "--seq-len", "32", "--vocab-size", "3000", "--lr", "2e-3", "--log-every", "3",
                 "--eval-every", "0", "--save-every", "0", "--entities", str(entities),
                 "--no-progress")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["mlm_loss"] for r in records if "mlm_loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses
    model = plmkit.load(run)
    assert isinstance(model, Ernie)
    args = PretrainArgs(model="ernie-tiny", objective="ernie", corpus=[small_corpus],
                        out=run, steps=30, tokenizer=run / "tokenizer", batch_size=4, seq_len=48,
                        entities=entities, progress=False)
    trainer = trainer_for(args)
    levels = [p.source.stream.level for p in trainer.phases]
    assert levels == ["basic", "phrase", "entity"]
    assert [p.steps for p in trainer.phases] == [10, 10, 10]
    flags = trainer.phases[2].source.stream.corpus.flags
    tok = Tokenizer.load(run / "tokenizer")
    corpus = trainer.phases[0].source.stream.corpus.corpus
    ids = np.concatenate([corpus.sentence(j) for j in range(corpus.num_sentences)])
    at = spans_of(tok, ids, pair)
    assert (np.asarray(flags[at]) & 2 > 0).tolist() == [True, False, False, False]


def test_entity_lists_replace_peoples_dailys(tmp_path: Path) -> None:
    assert read_entities(None) == peoples_daily_entities()
    own = tmp_path / "entities.txt"
    own.write_text("甲乙公司\n\n丙丁\n", encoding="utf-8")
    assert read_entities(own) == {"甲乙公司", "丙丁"}
    # jieba's dictionary: names made without People's Daily's annotations (ner-zh's source)
    names = read_entities("jieba")
    assert names == jieba_entities() and len(names) > 50_000
    assert {"北京", "邓小平", "上海"} <= names and names != peoples_daily_entities()
    assert all(len(n) > 1 for n in names)


def test_user_mistakes_are_one_line_errors(small_corpus: Path, tmp_path: Path) -> None:
    lines = small_corpus.read_text(encoding="utf-8").split("\n\n")[:3]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    base = dict(model="ernie-tiny", corpus=[corpus], out=tmp_path / "run", steps=3,
                vocab_size=3000, progress=False)
    with pytest.raises(UserError, match=r"missing\.txt: no such entity list"):
        trainer_for(PretrainArgs(**base, entities=tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="statically"):
        trainer_for(PretrainArgs(**base, masking="dynamic"))


def test_ernie_with_dialogues_mixes_both_tasks_in_every_batch(small_corpus: Path,
                                                              tmp_path: Path) -> None:
    args = PretrainArgs(model="ernie-tiny", objective="ernie+dlm", corpus=[small_corpus],
                        out=tmp_path / "run", steps=24, vocab_size=3000, batch_size=16,
                        seq_len=48, lr=2e-3, log_every=4, eval_every=0, save_every=0,
                        progress=False)
    trainer = trainer_for(args)
    assert [p.source.text.stream.level for p in trainer.phases] == ["basic", "phrase", "entity"]
    source = trainer.phases[0].source
    batch = next(iter(source))
    talk = batch["dialogue"]
    assert talk.tolist() == [False] * 11 + [True] * 5  # round(16 x 54/173) dialogues
    roles = batch["segment_ids"][talk]
    assert batch["input_ids"].shape == (16, 48) and (roles.amax(1) == 1).all()
    state = source.state_dict()
    expected = next(iter(source))
    same_vocabulary = dataclasses.replace(args, tokenizer=args.out / "tokenizer")
    again = trainer_for(same_vocabulary).phases[0].source
    again.load_state_dict(state)
    got = next(iter(again))
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # both positions resume
    records = trainer.train()
    assert records[-1]["step"] == 24
    first, last = records[0], records[-1]
    assert {"nsp_loss", "nsp_accuracy", "dlm_loss", "dlm_accuracy"} <= set(last)
    assert last["mlm_loss"] < first["mlm_loss"] - 0.5
    # the dialogue LM can go on from this checkpoint: the same model, the same weight names
    dlm = trainer_for(dataclasses.replace(args, objective="dlm", out=tmp_path / "dlm",
                                          corpus=[dialogue_file(tmp_path)]))
    assert set(dlm.model.state_dict()) == set(plmkit.load(tmp_path / "run").state_dict())


def dialogue_file(tmp_path: Path) -> Path:
    from plmkit.data.dialogue import chatterbot_dialogues

    path = tmp_path / "dialogues.txt"
    path.write_text("\n\n".join("\n".join(d) for d in chatterbot_dialogues(("chinese",))) + "\n",
                    encoding="utf-8")
    return path


def test_dlm_continues_from_a_knowledge_masking_run(small_corpus: Path, tmp_path: Path) -> None:
    base = dict(steps=4, batch_size=8, seq_len=48, eval_every=0, save_every=0, progress=False)
    first = PretrainArgs(model="ernie-tiny", objective="ernie", corpus=[small_corpus],
                         out=tmp_path / "ernie", vocab_size=3000, **base)
    trainer_for(first).train()
    start = plmkit.load(tmp_path / "ernie")
    then = PretrainArgs(model=str(tmp_path / "ernie"), objective="dlm",
                        corpus=[dialogue_file(tmp_path)], out=tmp_path / "dlm", **base)
    trainer = trainer_for(then)  # the run's own tokenizer, its config and its weights
    assert Tokenizer.load(tmp_path / "dlm" / "tokenizer").vocab_size == start.config.vocab_size
    model = trainer.model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  start.state_dict().values(), strict=True))
    last = trainer.train()[-1]
    assert last["step"] == 4 and "dlm_accuracy" in last
    with pytest.raises(UserError, match="do not fit"):
        other = dataclasses.replace(then, out=tmp_path / "x", tokenizer=None, overrides={
            "hidden_size": 64, "num_heads": 2, "intermediate_size": 64})
        trainer_for(other)
