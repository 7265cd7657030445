"""The tokenizer pipelines (normaliser, pre-tokeniser, model, decoder) as the papers use them.

- ``wordpiece``: BERT (BertNormalizer, BertPreTokenizer, WordPiece with "##" continuations).
- ``char``: BERT-Chinese / ERNIE 1.0: the same pipeline, every CJK character a token and Latin
  words in word pieces, with the characters making up most of the vocabulary (`CHAR_SHARE`).
- ``bpe``: RoBERTa / GPT-2 byte-level BPE (no prefix space, every byte in the alphabet).
- ``unigram``: ALBERT-style SentencePiece Unigram (NFKC, Metaspace "▁").
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

KINDS = ("wordpiece", "bpe", "unigram", "char")
WORDPIECE_KINDS = frozenset({"wordpiece", "char"})  # BERT's pipeline, "##" continuations
CHAR_SHARE = 0.9  # char: the most frequent characters fill at most this share of the vocab


@dataclass(frozen=True)
class Specials:
    """Special-token strings by role; ``order`` is their id order (0, 1, ...) when trained."""

    pad: str
    unk: str
    cls: str
    sep: str
    mask: str
    order: tuple[str, ...]


BERT_ORDER = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROBERTA_ORDER = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
ALBERT_ORDER = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
SPECIALS = {
    "wordpiece": Specials(*BERT_ORDER, order=BERT_ORDER),
    "bpe": Specials("<pad>", "<unk>", "<s>", "</s>", "<mask>", order=ROBERTA_ORDER),
    "unigram": Specials(*ALBERT_ORDER, order=ALBERT_ORDER),
    "char": Specials(*BERT_ORDER, order=BERT_ORDER),
}

# Vocabulary entries that begin a word (BPE, Unigram) or continue one (WordPiece).
WORD_START = {"bpe": "Ġ", "unigram": "▁"}
CONTINUATION = "##"


def special_tokens(kind: str) -> list[AddedToken]:
    """The special tokens of ``kind`` in id order; RoBERTa's <mask> eats the space before it."""
    mask = SPECIALS[kind].mask
    return [
        AddedToken(t, special=True, normalized=False, lstrip=kind == "bpe" and t == mask)
        for t in SPECIALS[kind].order
    ]


def wordpiece_backend(
    vocab: dict[str, int] | None,
    lowercase: bool,
    unk: str = "[UNK]",
    strip_accents: bool | None = None,
    chinese_chars: bool = True,
) -> Tokenizer:
    """BERT's WordPiece pipeline, empty (to train) or over a given vocabulary."""
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, continuing_subword_prefix=CONTINUATION))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=chinese_chars,
        strip_accents=strip_accents,
        lowercase=lowercase,
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION)
    return tok


def bpe_backend(lowercase: bool) -> Tokenizer:
    """RoBERTa's byte-level BPE pipeline, empty."""
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def unigram_backend(lowercase: bool) -> Tokenizer:
    """ALBERT-style SentencePiece Unigram pipeline, empty."""
    tok = Tokenizer(models.Unigram())
    steps = [normalizers.NFKC(), normalizers.Lowercase()] if lowercase else [normalizers.NFKC()]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def empty_backend(kind: str, lowercase: bool) -> Tokenizer:
    """An untrained pipeline of ``kind``."""
    if kind in WORDPIECE_KINDS:
        return wordpiece_backend(None, lowercase)
    return bpe_backend(lowercase) if kind == "bpe" else unigram_backend(lowercase)


def trainer(kind: str, vocab_size: int, min_frequency: int) -> trainers.Trainer:
    """The trainer of ``kind``: specials first (ids 0..4), byte alphabet for BPE."""
    specials = special_tokens(kind)
    if kind in WORDPIECE_KINDS:
        # char: the alphabet (the characters) may fill most of the vocabulary
        alphabet = {"limit_alphabet": int(vocab_size * CHAR_SHARE)} if kind == "char" else {}
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            continuing_subword_prefix=CONTINUATION,
            show_progress=False,
            **alphabet,
        )
    if kind == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    return trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        unk_token=SPECIALS[kind].unk,
        show_progress=False,
    )


def set_post_processor(tok: Tokenizer, kind: str, specials: Specials) -> None:
    """[CLS] A [SEP] (B [SEP]) for wordpiece / unigram, <s> A </s></s> B </s> for bpe."""
    cls, sep = specials.cls, specials.sep
    cls_id, sep_id = tok.token_to_id(cls), tok.token_to_id(sep)
    if kind == "bpe":
        tok.post_processor = processors.RobertaProcessing(
            (sep, sep_id), (cls, cls_id), trim_offsets=True, add_prefix_space=False
        )
        return
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )
