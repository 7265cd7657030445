"""What the CLI writes and reads through the modules it calls (issue 23, item 3): `plmkit embed`
gives the same vectors as .npy and as .jsonl, each line with its text; the interactive commands
prompt before each line and skip blank ones."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from plmkit.cli import main
from plmkit.deploy.console import prompted_lines

pytestmark = pytest.mark.usefixtures("one_thread")


def test_embed_writes_the_same_vectors_as_npy_and_jsonl(minilm_dir: Path, tmp_path: Path) -> None:
    texts = ["the cat sat on the mat", "¿dónde está la biblioteca?", "a third line"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for out in ("v.npy", "v.jsonl"):
        assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "in.txt"),
                     "--output", str(tmp_path / out)]) == 0
    vectors = np.load(tmp_path / "v.npy")
    lines = [json.loads(line) for line in
             (tmp_path / "v.jsonl").read_text(encoding="utf-8").splitlines()]
    assert vectors.shape == (3, 384)
    assert [line["text"] for line in lines] == texts
    np.testing.assert_allclose([line["embedding"] for line in lines], vectors, atol=1e-6)
    assert not list(tmp_path.glob(".v*"))  # no staging file left


def test_interactive_input_prompts_before_each_line_and_skips_blank_ones() -> None:
    out = io.StringIO()
    assert list(prompted_lines(io.StringIO("a cat\n\n  sat  \n"), out)) == ["a cat", "sat"]
    assert out.getvalue() == "> " * 4  # the last one before the end of input
    out = io.StringIO()
    assert list(prompted_lines(io.StringIO("x\n"), out, prompt=False)) == ["x"]
    assert out.getvalue() == ""
