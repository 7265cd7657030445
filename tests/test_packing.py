"""RoBERTa's FULL-SENTENCES / DOC-SENTENCES packing, static vs dynamic masking, exact resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import plmkit.objectives as objectives
from plmkit.data.bert import BertInstanceConfig
from plmkit.data.options import DataOptions
from plmkit.data.packing import PackedStream, TokenBudgetBatches, pack_sentences
from plmkit.data.shards import ShardedCorpus, prepare_corpus
from plmkit.tokenizers import Tokenizer, train_tokenizer

SEP = 2


def docs() -> list[list[np.ndarray]]:
    """Three documents whose sentences are runs of distinct ids, one sentence longer than 10."""
    ids = itertools.count(10)
    sizes = [[3, 4, 2], [5], [2, 1, 3], [12]]
    return [[np.array([next(ids) for _ in range(n)]) for n in doc] for doc in sizes]


def test_full_sentences_cross_documents_with_a_separator_and_fill() -> None:
    seqs = pack_sentences(docs(), room=10, sep_id=SEP, cross_documents=True)
    assert [s.tolist() for s in seqs] == [
        list(range(10, 19)),  # 3 + 4 + 2 tokens: separator + 5 would overflow
        [*range(19, 24), SEP, *range(24, 27)],  # document 2, separator, document 3 goes on
        list(range(27, 30)),
        list(range(30, 40)),  # a sentence longer than the room is cut
        [40, 41],
    ]
    assert all(len(s) <= 10 for s in seqs)


def test_doc_sentences_never_cross_a_document() -> None:
    seqs = pack_sentences(docs(), room=10, sep_id=SEP, cross_documents=False)
    assert [s.tolist() for s in seqs] == [
        list(range(10, 19)), list(range(19, 24)), list(range(24, 30)), list(range(30, 40)),
        [40, 41]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory,
             tweets: list[str]) -> tuple[ShardedCorpus, Tokenizer]:
    """Real tweets in documents of 8, with a byte-level BPE vocabulary."""
    root = tmp_path_factory.mktemp("packing")
    path = root / "train.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 800, 8)) + "\n")
    tok = train_tokenizer("bpe", tweets[:800], 1000)
    return prepare_corpus([path], tok, root / "shards", fingerprint="bpe-1000"), tok


def stream(prepared, fmt: str = "full-sentences", masking: str = "static",
           dupe_factor: int = 2) -> PackedStream:
    corpus, tok = prepared
    options = DataOptions(masking=masking, dupe_factor=dupe_factor)  # type: ignore[arg-type]
    config = BertInstanceConfig.from_options(options, 64, nsp=False)
    return PackedStream(corpus, tok, config, fmt, seed=3, window=40)  # type: ignore[arg-type]


def originals(instances: list[dict]) -> list[tuple[int, ...]]:
    """The unmasked tokens of each (statically masked) instance."""
    out = []
    for x in instances:
        ids = x["input_ids"].copy()
        weights = x["masked_lm_weights"].astype(bool)
        ids[x["masked_lm_positions"][weights]] = x["masked_lm_ids"][weights]
        out.append(tuple(ids.tolist()))
    return out


def test_packed_instances_have_roberta_layout_on_real_text(prepared) -> None:
    _, tok = prepared
    instances = stream(prepared).window_instances(0, 0)
    for x in instances:
        n = int(x["input_mask"].sum())
        ids = originals([x])[0]
        assert ids[0] == tok.cls_id and ids[n - 1] == tok.sep_id and set(ids[n:]) <= {tok.pad_id}
        assert not x["segment_ids"].any()
    lengths = np.array([x["input_mask"].sum() for x in instances])
    assert np.mean(lengths[lengths < 64]) > 40 and np.median(lengths) > 50  # filled


def test_static_masks_repeat_per_dupe_copy_and_dynamic_ones_do_not(prepared) -> None:
    static = stream(prepared)
    epoch0, epoch1, epoch2 = (sorted(originals(static.window_instances(e, 0))) for e in range(3))
    masked0, masked2 = ({tuple(x["input_ids"].tolist()) for x in static.window_instances(e, 0)}
                        for e in (0, 2))
    assert epoch0 == epoch2 and masked0 == masked2  # copy 0 again: same sequences, same masks
    assert epoch0 != epoch1  # copy 1: another packing and other masks

    dynamic = stream(prepared, masking="dynamic")
    windows = [sorted(dynamic.window_instances(e, 0), key=lambda x: x["input_ids"].tolist())
               for e in (0, 2)]
    assert [x["input_ids"].tolist() for x in windows[0]] == \
        [x["input_ids"].tolist() for x in windows[1]]  # the same sequences...
    a, b = (dynamic.collate(w) for w in windows)
    assert not torch.equal(a["input_ids"], b["input_ids"])  # ...masked afresh


@pytest.mark.parametrize("fmt", ["full-sentences", "doc-sentences"])
def test_resume_is_exact(prepared, fmt: str) -> None:
    corpus, tok = prepared
    options = DataOptions(batch_size=8, masking="dynamic", input_format=fmt)  # type: ignore[arg-type]
    first = objectives.get_objective("mlm").batches(corpus, tok, options, 64, seed=1)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    expected = [next(it) for _ in range(3)]
    again = objectives.get_objective("mlm").batches(corpus, tok, options, 64, seed=1)
    again.load_state_dict(state)
    for got, want in zip(iter(again), expected, strict=False):
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)


def test_doc_sentences_batches_keep_tokens_about_constant(prepared) -> None:
    corpus, tok = prepared
    options = DataOptions(batch_size=8, input_format="doc-sentences")
    batches = objectives.get_objective("mlm").batches(corpus, tok, options, 64, seed=0)
    assert isinstance(batches, TokenBudgetBatches)
    sizes, tokens = [], []
    for batch in itertools.islice(batches, 12):
        sizes.append(len(batch["input_ids"]))
        tokens.append(int(batch["input_mask"].sum()))
    assert all(8 * 64 <= t < 9 * 64 for t in tokens)
    assert max(sizes) > 8  # short sequences near document ends: more of them per batch


def test_unknown_input_format_is_refused() -> None:
    with pytest.raises(ValueError, match="input_format"):
        PackedStream([], None, BertInstanceConfig(nsp=False), "segments")  # type: ignore[arg-type]
