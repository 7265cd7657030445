"""`Tokenizer`: a trained `tokenizers.Tokenizer` plus the ids and layout the models need."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Encoding
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordPiece

from plmkit.errors import UserError
from plmkit.tokenizers.pipeline import (
    CONTINUATION,
    SPECIALS,
    WORD_START,
    WORDPIECE_KINDS,
    Specials,
    set_post_processor,
    wordpiece_backend,
)

MODEL_KINDS = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}
ROLES = ("pad", "unk", "cls", "sep", "mask")


class Tokenizer:
    """Text <-> ids for one vocabulary, and model inputs in the BERT or RoBERTa layout.

    ``is_continuation[i]`` is True when token ``i`` continues a word: "##x" in WordPiece, a token
    without the "Ġ" / "▁" word-start mark in BPE / Unigram (with RoBERTa's byte-level BPE the first
    word of a text has no "Ġ" either, so whole-word masking should start a word after a special).
    """

    def __init__(self, backend: Backend, kind: str, specials: Specials, lowercase: bool) -> None:
        self.backend = backend
        self.kind = kind
        self.specials = specials
        self.lowercase = lowercase
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        ids = {role: backend.token_to_id(getattr(specials, role)) for role in ROLES}
        missing = [getattr(specials, role) for role, i in ids.items() if i is None]
        if missing:
            raise UserError(f"special tokens {missing} are not in the vocabulary")
        self.pad_id, self.unk_id = ids["pad"], ids["unk"]
        self.cls_id, self.sep_id, self.mask_id = ids["cls"], ids["sep"], ids["mask"]
        self.special_ids = frozenset(ids.values()) | frozenset(
            i for i, t in backend.get_added_tokens_decoder().items() if t.special
        )
        self.is_continuation = self._continuation_mask()
        backend.no_padding()
        backend.no_truncation()

    def _continuation_mask(self) -> np.ndarray:
        tokens = [self.backend.id_to_token(i) or "" for i in range(self.vocab_size)]
        if self.kind in WORDPIECE_KINDS:
            mask = np.array([t.startswith(CONTINUATION) for t in tokens], dtype=bool)
        else:
            mask = np.array([not t.startswith(WORD_START[self.kind]) for t in tokens], dtype=bool)
        mask[list(self.special_ids)] = False
        return mask

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without special tokens."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, without special tokens (parallel, in Rust)."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of ``ids``."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str:
        token = self.backend.id_to_token(i)
        if token is None:
            raise IndexError(f"token id {i} out of range for vocab_size {self.vocab_size}")
        return token

    def __call__(
        self,
        texts: str | list[str],
        pairs: str | list[str] | None = None,
        max_length: int = 512,
        padding: bool = True,
        truncation: bool = True,
        return_tensors: bool = True,
    ) -> dict[str, torch.Tensor | list]:
        """Model inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` for a batch.

        A single string is a batch of one. Pairs are truncated longest-first to ``max_length``
        and padding is on the right with ``pad_id`` to the longest sequence of the batch.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        if pairs is not None:
            second = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(second) != len(batch):
                raise ValueError(f"{len(batch)} texts but {len(second)} pairs")
            batch = list(zip(batch, second, strict=True))
        encodings = self._encode_inputs(batch, max_length, padding, truncation)
        out = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        if not return_tensors:
            return out
        if len({len(ids) for ids in out["input_ids"]}) > 1:
            raise ValueError("return_tensors needs padding=True for texts of different lengths")
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    def _encode_inputs(
        self, batch: list, max_length: int, padding: bool, truncation: bool
    ) -> list[Encoding]:
        if truncation:
            self.backend.enable_truncation(max_length)
        if padding:
            self.backend.enable_padding(pad_id=self.pad_id, pad_token=self.specials.pad)
        try:
            return self.backend.encode_batch(batch, add_special_tokens=True)
        finally:
            self.backend.no_padding()
            self.backend.no_truncation()

    def save(self, directory: str | Path) -> None:
        """Write a directory that `Tokenizer.load` and `transformers.AutoTokenizer` both load."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(out / "tokenizer.json"))
        if self.kind in WORDPIECE_KINDS:
            vocab = (self.id_to_token(i) for i in range(self.vocab_size))
            (out / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
        tokens = {f"{role}_token": getattr(self.specials, role) for role in ROLES}
        if self.kind == "bpe":
            tokens |= {"bos_token": self.specials.cls, "eos_token": self.specials.sep}
        config = {**self._hf_class(), **tokens, "model_max_length": 512, "plmkit_kind": self.kind}
        _write_json(out / "tokenizer_config.json", config)
        _write_json(out / "special_tokens_map.json", tokens)

    def _hf_class(self) -> dict[str, Any]:
        """transformers class and its options: BertTokenizer over a BERT normaliser, else generic.

        (transformers' BertTokenizer rebuilds the normaliser from these options; the generic
        PreTrainedTokenizerFast uses tokenizer.json as it is.)
        """
        norm = json.loads(self.backend.to_str())["normalizer"] or {}
        if self.kind not in WORDPIECE_KINDS or norm.get("type") != "BertNormalizer":
            return {"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": self.lowercase}
        return {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": norm["lowercase"],
            "strip_accents": norm["strip_accents"],
            "tokenize_chinese_chars": norm["handle_chinese_chars"],
        }

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Load a plmkit or transformers tokenizer directory (tokenizer.json, else vocab.txt)."""
        path = Path(directory)
        config = _read_json(path / "tokenizer_config.json")
        names = {**_read_json(path / "special_tokens_map.json"), **config}
        if (path / "tokenizer.json").is_file():
            return _from_tokenizer_json(path / "tokenizer.json", config, names)
        if (path / "vocab.txt").is_file():
            return _from_vocab_txt(path / "vocab.txt", config, names)
        raise UserError(f"{path}: no tokenizer.json or vocab.txt (not a tokenizer directory)")


def _from_tokenizer_json(file: Path, config: dict, names: dict) -> Tokenizer:
    try:
        backend = Backend.from_file(str(file))
    except Exception as e:  # the Rust side raises a bare Exception on malformed files
        raise UserError(f"{file}: not a valid tokenizer file ({e})") from None
    spec = json.loads(backend.to_str())
    model_type = spec["model"]["type"]
    kind = config.get("plmkit_kind") or MODEL_KINDS.get(model_type)
    if kind not in SPECIALS:
        raise UserError(f"{file}: unsupported tokenizer model {model_type!r}")
    return Tokenizer(backend, kind, _specials(kind, names), _lowercases(spec["normalizer"]))


def _from_vocab_txt(file: Path, config: dict, names: dict) -> Tokenizer:
    specials = _specials("wordpiece", names)
    lowercase = config.get("do_lower_case", True)
    backend = wordpiece_backend(
        WordPiece.read_file(str(file)),
        lowercase,
        unk=specials.unk,
        strip_accents=config.get("strip_accents"),
        chinese_chars=config.get("tokenize_chinese_chars", True),
    )
    backend.add_special_tokens([getattr(specials, role) for role in ROLES])
    set_post_processor(backend, "wordpiece", specials)
    return Tokenizer(backend, "wordpiece", specials, lowercase)


def _specials(kind: str, names: dict) -> Specials:
    """The default specials of ``kind`` overridden by a transformers config's ``*_token`` names."""
    default = SPECIALS[kind]
    found = {role: _content(names.get(f"{role}_token")) for role in ROLES}
    chosen = {role: found[role] or getattr(default, role) for role in ROLES}
    return Specials(**chosen, order=default.order)


def _content(value: Any) -> str | None:
    """A token name from a config: a string or an AddedToken dict ``{"content": ...}``."""
    return value.get("content") if isinstance(value, dict) else value


def _lowercases(normalizer: dict | None) -> bool:
    """Whether a tokenizer.json normaliser lowercases."""
    if not normalizer:
        return False
    if normalizer["type"] == "Sequence":
        return any(_lowercases(n) for n in normalizer["normalizers"])
    return normalizer["type"] == "Lowercase" or bool(normalizer.get("lowercase"))


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: invalid JSON ({e})") from None


def _write_json(file: Path, data: dict) -> None:
    file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
