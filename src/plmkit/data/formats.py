"""File formats beside plain text: gzip / zstd compressed files, and tables (Parquet, Arrow IPC,
a directory written by the `datasets` library's ``save_to_disk``) read in streaming batches.

Compressed files name their inner format by the suffix before ``.gz`` / ``.zst``
(``corpus.jsonl.zst``). A table's rows are read a batch at a time with pyarrow
(``ParquetFile.iter_batches``, ``RecordBatchStreamReader``), never whole. Every problem is a
`UserError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from plmkit.errors import UserError

if TYPE_CHECKING:
    import pyarrow as pa

Kind = Literal["text", "parquet", "arrow", "datasets"]
COMPRESSIONS = (".gz", ".zst")
DATASETS_STATE = "state.json"  # `datasets.Dataset.save_to_disk` writes it beside the arrow files
DATASET_DICT = "dataset_dict.json"  # `DatasetDict.save_to_disk`: one directory per split
BATCH_ROWS = 1024


def kind(path: Path) -> Kind:
    """How `path` is read: a table format, a `datasets` directory, or (compressed) text."""
    if path.is_dir() and (path / DATASETS_STATE).is_file():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".arrow":
        return "arrow"
    return "text"


def inner_suffix(path: Path) -> str:
    """The suffix that names the format: ``.jsonl`` for ``a.jsonl.gz``, ``.txt`` for ``a.txt``."""
    name = Path(path.name)
    if name.suffix.lower() in COMPRESSIONS:
        name = name.with_suffix("")
    return name.suffix.lower()


def open_binary(path: Path) -> IO[bytes]:
    """`path` opened for reading bytes, decompressed if it ends in .gz or .zst."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.open(path, "rb"))  # type: ignore[arg-type]
    return open(path, "rb")


def decompress_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a corrupt gzip or zstd stream raises while it is read."""
    import zstandard

    return (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError)


def corrupt(path: Path, error: BaseException) -> UserError:
    """The one-line error for a compressed file whose data cannot be decompressed."""
    what = "gzip" if path.suffix.lower() == ".gz" else "zstd"
    detail = str(error).strip().rstrip(".") or type(error).__name__
    return UserError(f"{path}: corrupt {what} data ({detail})")


def read_text(path: Path) -> str:
    """The whole (decompressed) file as text, or a UserError naming the line of the first byte
    that is not UTF-8."""
    path = Path(path)
    try:
        with open_binary(path) as f:
            data = f.read()
    except decompress_errors() as e:  # before OSError: BadGzipFile is one
        raise corrupt(path, e) from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: invalid UTF-8") from None


def check_column(path: Path, column: str, option: str = "--text-field") -> None:
    """A UserError unless the table `path` has a string column `column`."""
    import pyarrow as pa

    schema = _schema(path)
    if column not in schema.names:
        raise UserError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); "
                        f"name the text column with {option}")
    kind_ = schema.field(column).type
    if not (pa.types.is_string(kind_) or pa.types.is_large_string(kind_)):
        raise UserError(f"{path}: column {column!r} holds {kind_}, not text")


def rows(path: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a table file or `datasets` directory as dicts, a batch at a time."""
    for batch in record_batches(path, columns):
        yield from batch.to_pylist()


def record_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of `columns` (None: all) of a Parquet / Arrow file or a `datasets` directory."""
    import pyarrow as pa

    try:
        for file in _table_files(path):
            yield from _file_batches(file, columns)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: cannot read the table ({_first_line(e)})") from None


def _file_batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        return
    with _open_arrow(path) as reader:
        if isinstance(reader, pa.ipc.RecordBatchFileReader):  # random access: batch by batch
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        for batch in batches:
            yield batch.select(columns) if columns is not None else batch


def _open_arrow(path: Path) -> Any:
    """An Arrow IPC stream reader (as `datasets` writes), else a reader of the IPC file format."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(pa.memory_map(str(path)))
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(str(path)))


def _schema(path: Path) -> pa.Schema:
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = _table_files(path)[0]
    try:
        if file.suffix.lower() == ".parquet":
            return pq.read_schema(file)
        with _open_arrow(file) as reader:
            return reader.schema
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable {file.suffix[1:]} table "
                        f"({_first_line(e)})") from None


def _table_files(path: Path) -> list[Path]:
    """The file itself, or a `datasets` directory's arrow files in order (its state.json)."""
    if not path.is_dir():
        return [path]
    state_path = path / DATASETS_STATE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{state_path}: not a datasets state file (no _data_files list of "
                        "filenames)") from None
    if not names:
        raise UserError(f"{state_path}: lists no data files")
    files = [path / name for name in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such file (listed in {state_path})")
    return files


def datasets_dict_hint(path: Path) -> str | None:
    """For a `DatasetDict.save_to_disk` directory, the message naming its split directories."""
    if not (path / DATASET_DICT).is_file():
        return None
    splits = sorted(p.name for p in path.iterdir() if (p / DATASETS_STATE).is_file())
    return (f"{path}: a datasets DatasetDict; give one split's directory "
            f"({', '.join(str(path / s) for s in splits) or 'none found'})")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
