"""`plmkit serve`, `predict` and `embed` with `--backend onnx` (and `--int8`): over real HTTP
the same requests get the same answers (1e-4, same labels) from the torch model and from its
ONNX export, for a tiny classifier fine-tuned on real tweets and for the real
all-MiniLM-L6-v2; fill-mask, which an export cannot serve, is refused in one line."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from finetuned_tiny import finetuned_classifier_dir, labelled_tweets
from plmkit.cli import main
from plmkit.deploy.backend import load
from plmkit.deploy.onnx import export_onnx
from plmkit.deploy.serve import Server, make_server
from test_serve import request

pytestmark = pytest.mark.usefixtures("one_thread")

LIMIT = 1e-4


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    return finetuned_classifier_dir(tmp_path_factory, tweets)


@pytest.fixture(scope="module")
def exported(classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "sentiment"
    export_onnx(classifier, out, int8=True)
    return out


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Held-out real tweets (not fine-tuned on), of many lengths."""
    return [t for t, _ in labelled_tweets()[1500:1540]]


@contextlib.contextmanager
def running(model_dir: Path, backend: str = "torch", int8: bool = False) -> Iterator[Server]:
    server = make_server(model_dir, "127.0.0.1", 0, backend=backend, int8=int8)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


Pair = tuple[Server, Server]  # a torch and an onnx server


@contextlib.contextmanager
def side_by_side(torch_dir: Path, onnx_dir: Path) -> Iterator[Pair]:
    with running(torch_dir) as a, running(onnx_dir, "onnx") as b:
        yield a, b


def both(servers: Pair, path: str, body: dict[str, Any]) -> tuple[Any, Any]:
    """The answers of the torch and the onnx server to the same request (both 200)."""
    answers = []
    for server in servers:
        status, out = request(server, "POST", path, body)
        assert status == 200, out
        answers.append(out)
    return answers[0], answers[1]


def assert_same_embeddings(servers: Pair, texts: list[str], poolings: list[str | None]) -> None:
    for pooling in poolings:
        body: dict[str, Any] = {"texts": texts}
        if pooling is not None:
            body["pooling"] = pooling
        ours, theirs = both(servers, "/v1/embed", body)
        assert np.abs(np.array(ours["embeddings"]) - theirs["embeddings"]).max() < LIMIT


def test_classifier_same_answers_on_both_backends(classifier: Path, exported: Path,
                                                  texts: list[str]) -> None:
    with side_by_side(classifier, exported) as servers:
        assert_same_embeddings(servers, texts[:16], [None, "cls", "mean", "max"])
        status, out = request(servers[1], "POST", "/v1/embed",
                              {"texts": texts[:1], "pooling": "pooler"})
        assert status == 422 and "no pooler" in out["error"]  # a task graph returns none
        ours, theirs = both(servers, "/v1/classify", {"texts": texts})
        assert ours["labels"] == theirs["labels"]
        assert len(set(ours["labels"])) > 1  # fine-tuned: not one label for everything
        assert np.abs(np.array(ours["scores"]) - theirs["scores"]).max() < LIMIT
        onnx = servers[1]
        status, health = request(onnx, "GET", "/health")
        assert health["endpoints"] == ["embed", "classify"]
        assert health["model"] == {"family": "bert", "layers": 2, "hidden_size": 128,
                                   "task": "classify", "backend": "onnx", "int8": False}
        status, out = request(onnx, "POST", "/v1/fill-mask", {"text": "i [MASK] it"})
        assert status == 422 and "no masked-LM head" in out["error"]
        assert "\n" not in out["error"]
        assert request(servers[0], "POST", "/v1/fill-mask",
                       {"text": "i [MASK] it"})[0] == 200


def test_concurrent_requests_batch_alike_on_onnx(exported: Path, classifier: Path,
                                                 texts: list[str]) -> None:
    """Requests that arrive together go through onnxruntime as one padded batch and still get
    the answers they get alone."""
    with running(exported, "onnx") as server:
        alone = [request(server, "POST", "/v1/classify", {"texts": [t]})[1] for t in texts[:8]]
        before = request(server, "GET", "/health")[1]
        barrier, answers = threading.Barrier(8), {}

        def client(i: int) -> None:
            barrier.wait(timeout=30)
            answers[i] = request(server, "POST", "/v1/classify", {"texts": [texts[i]]})[1]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        after = request(server, "GET", "/health")[1]
    assert after["batches"] - before["batches"] < 8
    for i, one in enumerate(alone):
        assert answers[i]["labels"] == one["labels"]
        assert answers[i]["scores"][0] == pytest.approx(one["scores"][0], abs=LIMIT)


def test_minilm_same_embeddings_on_both_backends(minilm_dir: Path, tmp_path: Path,
                                                 texts: list[str]) -> None:
    """The real all-MiniLM-L6-v2: its sentence-transformers pooling (mean, unit length) by
    default from both, and the other poolings."""
    exported = tmp_path / "minilm"
    export_onnx(minilm_dir, exported)
    with side_by_side(minilm_dir, exported) as servers:
        assert_same_embeddings(servers, texts[:12], [None, "cls", "max"])
        ours, _ = both(servers, "/v1/embed", {"texts": texts[:2]})
        assert np.linalg.norm(ours["embeddings"], axis=-1) == pytest.approx(1, abs=1e-5)
        for server, why in zip(servers, ("the checkpoint has no masked-LM head weights",
                                         "an ONNX export has no masked-LM head"), strict=True):
            assert request(server, "GET", "/health")[1]["endpoints"] == ["embed"]
            status, out = request(server, "POST", "/v1/fill-mask", {"text": "a [MASK] day"})
            assert status == 422 and why in out["error"]  # not advertised, and says why


def test_serve_int8_on_both_backends(classifier: Path, exported: Path,
                                     texts: list[str]) -> None:
    """`--int8`: torch's quantised Linear layers and the export's int8 graph both serve, and
    agree with float32 on most labels."""
    with running(classifier) as fp32:
        want = request(fp32, "POST", "/v1/classify", {"texts": texts})[1]["labels"]
    for backend, directory in (("torch", classifier), ("onnx", exported)):
        with running(directory, backend, int8=True) as server:
            health = request(server, "GET", "/health")[1]
            got = request(server, "POST", "/v1/classify", {"texts": texts})[1]["labels"]
        assert health["model"]["int8"] and health["model"]["backend"] == backend
        assert sum(a == b for a, b in zip(want, got, strict=True)) >= 0.9 * len(texts)
    model = load(classifier, int8=True).model  # what `serve --int8` runs
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def test_predict_and_embed_commands_on_both_backends(classifier: Path, exported: Path,
                                                     texts: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
    outputs = {}
    for backend, directory in (("torch", classifier), ("onnx", exported)):
        predicted, vectors = tmp_path / f"{backend}.jsonl", tmp_path / f"{backend}.npy"
        assert main(["predict", "--model", str(directory), "--backend", backend,
                     "--input", str(source), "--output", str(predicted)]) == 0
        assert main(["embed", "--model", str(directory), "--backend", backend, "--input",
                     str(source), "--output", str(vectors), "--pooling", "mean"]) == 0
        outputs[backend] = ([json.loads(line) for line in predicted.read_text().splitlines()],
                            np.load(vectors))
    (ours, a), (theirs, b) = outputs["torch"], outputs["onnx"]
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    assert len(ours) == len(texts) and np.abs(a - b).max() < LIMIT
    for label in ours[0]["scores"]:
        assert ours[0]["scores"][label] == pytest.approx(theirs[0]["scores"][label], abs=LIMIT)
    capsys.readouterr()
    for directory, backend, needle in ((exported, "torch", "run it with --backend onnx"),
                                       (classifier, "onnx", "not an ONNX export")):
        assert main(["embed", "--model", str(directory), "--backend", backend, "--input",
                     str(source), "--output", str(tmp_path / "x.npy")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err
