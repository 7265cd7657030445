"""Sentence embeddings of the real all-MiniLM-L6-v2 through `plmkit embed`, `/v1/embed` and the
Python API equal sentence-transformers' vectors; the four poolings mean what they say; an
exported model with sentence-transformers files loads in sentence-transformers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sentence_transformers  # a dev dependency: missing, the tests fail, not skip
import torch

import plmkit
from plmkit.cli import main
from plmkit.deploy.embed import embed_dir
from plmkit.deploy.serve import Server, make_server
from plmkit.errors import UserError
from plmkit.tasks.embed import EmbeddingSetup, embed, embedding_setup
from plmkit.tokenizers import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

# real text: World English Bible verses (public domain), one long enough to be truncated
TEXTS = ["In the beginning, God created the heavens and the earth.",
         "Jesus wept.",
         "The earth was formless and empty. Darkness was on the surface of the deep " * 30,
         "Blessed are the poor in spirit, for theirs is the Kingdom of Heaven."]


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> np.ndarray:
    model = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_directory_sets_mean_pooling_normalisation_and_length(minilm_dir: Path) -> None:
    assert embedding_setup(minilm_dir) == EmbeddingSetup("mean", True, 256)
    assert embedding_setup(minilm_dir).given(pooling="cls") == EmbeddingSetup("cls", True, 256)


def test_python_api_equals_sentence_transformers(minilm_dir: Path,
                                                 reference: np.ndarray) -> None:
    ours = embed_dir(minilm_dir, TEXTS)
    assert cosines(ours, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    model, tok = plmkit.load(minilm_dir), Tokenizer.load(minilm_dir)
    same = embed(model, tok, TEXTS, embedding_setup(minilm_dir))
    np.testing.assert_allclose(same, ours, atol=1e-6)


def test_cli_equals_sentence_transformers(minilm_dir: Path, reference: np.ndarray,
                                          tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "in.txt"),
                 "--output", str(out)]) == 0
    assert cosines(np.load(out), reference).min() >= 0.9999


@pytest.fixture(scope="module")
def minilm_server(minilm_dir: Path) -> Iterator[Server]:
    server = make_server(minilm_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def post(server: Server, body: dict) -> dict:
    import http.client

    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", "/v1/embed", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def test_v1_embed_equals_sentence_transformers(minilm_server: Server, minilm_dir: Path,
                                               reference: np.ndarray) -> None:
    got = np.array(post(minilm_server, {"texts": TEXTS})["embeddings"], dtype=np.float32)
    assert cosines(got, reference).min() >= 0.9999
    raw = np.array(post(minilm_server, {"texts": TEXTS, "pooling": "cls",
                                        "normalize": False})["embeddings"])
    expected = embed_dir(minilm_dir, TEXTS, pooling="cls", normalize=False)
    np.testing.assert_allclose(raw, expected, atol=1e-4)


def test_each_pooling_is_what_it_names(minilm_dir: Path) -> None:
    model, tok = plmkit.load(minilm_dir).eval(), Tokenizer.load(minilm_dir)
    batch = tok(TEXTS[:2], max_length=64)
    with torch.no_grad():
        out = model(**batch)
    hidden, mask = out.last_hidden_state, batch["attention_mask"].bool()
    one = lambda pooling: embed(model, tok, TEXTS[:2], EmbeddingSetup(pooling, False, 64))  # noqa: E731
    np.testing.assert_allclose(one("cls"), hidden[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(one("pooler"), out.pooler_output.numpy(), atol=1e-5)
    short = hidden[1, mask[1]]  # the second text's real tokens only
    np.testing.assert_allclose(one("mean")[1], short.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(one("max")[1], short.amax(0).numpy(), atol=1e-5)
    assert not np.allclose(one("cls"), one("pooler"), atol=1e-2)  # "cls" is not the pooler


def test_unsupported_sentence_transformers_modules_are_refused(minilm_dir: Path,
                                                               tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(json.dumps(
        [{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(UserError, match="Dense is not supported"):
        embedding_setup(tmp_path)


def test_export_writes_sentence_transformers_files(minilm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "st"
    assert main(["export", "--format", "hf", "--model", str(minilm_dir), "--out", str(out),
                 "--sentence-transformers", "max"]) == 0
    assert embedding_setup(out) == EmbeddingSetup("max", False, 512)
    loaded = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    theirs = loaded.encode(TEXTS[:2], convert_to_numpy=True)
    ours = embed_dir(minilm_dir, TEXTS[:2], pooling="max", normalize=False)
    assert cosines(ours, theirs).min() >= 0.9999


def test_normalize_alone_is_refused(minilm_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--model", str(minilm_dir), "--out", str(tmp_path / "x"),
                 "--normalize"])
    assert code == 2 and "--sentence-transformers" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_output_of_another_format_is_refused(minilm_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "vectors.csv"
    assert main(["embed", "--model", str(minilm_dir), "--input", str(texts), "--output",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"plmkit: error: --output {out}: expected a file ending in .npy or .jsonl\n"
    assert not out.exists()
