"""Reading corpora: documents, sentences, jsonl, and every way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plmkit.data.corpus import CorpusStats, read_documents, split_sentences
from plmkit.errors import UserError
from test_data_common import raw_tweets, tweet_documents, write_documents


def test_split_sentences_english() -> None:
    text = (
        'Mr. Smith went to the U.S. He said "hi." Then left! Really? Pi is 3.14. J. R. R. Tolkien.'
    )
    assert split_sentences(text) == [
        "Mr. Smith went to the U.S. He said \"hi.\"",
        "Then left!",
        "Really?",
        "Pi is 3.14.",
        "J. R. R. Tolkien.",
    ]
    assert split_sentences("no full stop, e.g. this one. and lower case after") == [
        "no full stop, e.g. this one. and lower case after"
    ]
    assert split_sentences("   ") == []


def test_split_sentences_chinese() -> None:
    assert split_sentences("今天天气很好。我们去公园吧！你去吗？“好。”走；") == [
        "今天天气很好。", "我们去公园吧！", "你去吗？", "“好。”", "走；"
    ]


def test_plain_text_documents_are_blank_line_blocks(tmp_path: Path) -> None:
    docs = tweet_documents(50)
    path = write_documents(tmp_path / "tweets.txt", docs)
    stats = CorpusStats()
    got = list(read_documents([path], stats=stats))
    assert len(got) == 50 == stats.documents
    assert got == [[s for t in doc for s in split_sentences(t)] for doc in docs]
    assert stats.sentences == sum(map(len, got)) and stats.messages() == []


def test_several_blank_lines_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst one.\r\nSecond.\r\n\r\n\r\n   \r\nThird doc.\r\n")
    assert list(read_documents([path])) == [["First one.", "Second."], ["Third doc."]]


def test_jsonl_documents(tmp_path: Path) -> None:
    docs = tweet_documents(20)
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"body": "\n".join(d), "id": i}) for i, d in enumerate(docs)]
    path.write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n")
    got = list(read_documents([path], text_field="body"))
    assert got == [[s for t in doc for s in split_sentences(t)] for doc in docs]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"c\.jsonl:2: invalid JSON"),
        ('["a list"]', r"c\.jsonl:2: expected a JSON object, got list"),
        ('{"body": "x"}', r"c\.jsonl:2: no field 'text' \(fields: body\)"),
        ('{"text": 3}', r"c\.jsonl:2: field 'text' is int, not a string"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "Fine."}\n' + line + "\n")
    docs = read_documents([path])
    assert next(docs) == ["Fine."]  # streamed: the bad line is met only when it is read
    with pytest.raises(UserError, match=message):
        next(docs)


def bad_utf8_corpus(tmp_path: Path) -> tuple[Path, int]:
    """Real tweets, a blank line after every fifth, including those that are not valid UTF-8."""
    raw = raw_tweets()[:3000]
    bad = 0
    lines = []
    for i, t in enumerate(raw):
        lines.append(t)
        if i % 5 == 4:
            lines.append(b"")
        try:
            t.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    path = tmp_path / "raw.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, bad


def test_invalid_utf8_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path, bad = bad_utf8_corpus(tmp_path)
    assert bad > 0
    stats = CorpusStats()
    docs = list(read_documents([path], bad_utf8="skip", stats=stats))
    assert len(docs) == 600
    assert stats.bad_utf8 == {str(path): bad}
    assert stats.messages() == [f"skipped {bad} lines with invalid UTF-8 in {path}"]


def test_invalid_utf8_is_an_error_on_request(tmp_path: Path) -> None:
    path, _ = bad_utf8_corpus(tmp_path)
    first_bad = next(i for i, line in enumerate(path.read_bytes().split(b"\n"), 1)
                     if not _utf8(line))
    with pytest.raises(UserError, match=rf"^{path}:{first_bad}: invalid UTF-8$"):
        list(read_documents([path], bad_utf8="error"))


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_binary_files_are_refused_up_front(tmp_path: Path) -> None:
    text = write_documents(tmp_path / "ok.txt", tweet_documents(2))
    nul = tmp_path / "model.bin"
    nul.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(bytes(range(128, 256)) * 40)
    for path in (nul, latin):
        with pytest.raises(UserError, match=rf"^{path}: looks binary"):
            read_documents([text, path])  # before any document is read


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.txt: no such file"):
        read_documents([tmp_path / "nope.txt"])
    with pytest.raises(UserError, match="is a directory"):
        read_documents([tmp_path])
    with pytest.raises(UserError, match="no corpus files"):
        read_documents([])


def test_empty_corpus(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.jsonl"
    blank.write_text('\n{"text": "   "}\n')
    with pytest.raises(UserError, match=r"empty\.txt, .*blank\.jsonl: empty corpus"):
        list(read_documents([empty, blank]))
