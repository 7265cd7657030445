"""`plmkit serve` over real HTTP on 127.0.0.1: answers equal to the library's, concurrent
requests batched, bad requests rejected with 4xx while the service stays up, the demo page in
a headless browser."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import plmkit
from plmkit.fill_mask import fill_mask
from plmkit.io import save_model
from plmkit.serve import MAX_BODY, Server, make_server
from plmkit.tasks import build_task_model
from plmkit.tasks.embed import embed
from plmkit.tasks.finetune import TOKENIZER_DIR, tokenizer_dir
from plmkit.tasks.squad import answer_question
from plmkit.tokenizers import Tokenizer
from pretrained_tiny import pretrained_bert_dir

TEXTS = ["i love this song", "worst day ever", "good morning everyone", "so tired today",
         "the weather is nice", "can't wait for the weekend", "happy birthday to you",
         "this is not fair"]



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def pretrained_bert(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> Path:
    return pretrained_bert_dir(tmp_path_factory, tweets)


def with_head(pretrained: Path, out: Path, task: dict[str, Any]) -> Path:
    """The pretrained model under a fresh (seeded, untrained) task head, saved as a fine-tuned
    model directory: what the endpoints compute is checked against the library, not quality."""
    model = build_task_model(plmkit.load(pretrained), task)
    save_model(model, out)
    shutil.copytree(pretrained / TOKENIZER_DIR, out / TOKENIZER_DIR)
    return out


@pytest.fixture(scope="module")
def classifier(pretrained_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_head(pretrained_bert, tmp_path_factory.mktemp("cls") / "m",
                     {"name": "classify", "labels": ["negative", "neutral", "positive"],
                      "pooling": "cls"})


@pytest.fixture(scope="module")
def reader(pretrained_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_head(pretrained_bert, tmp_path_factory.mktemp("qa") / "m",
                     {"name": "squad", "version_2": False})


def running(model_dir: Path) -> Iterator[Server]:
    server = make_server(model_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(classifier: Path) -> Iterator[Server]:
    yield from running(classifier)


def request(server: Server, method: str, path: str, body: Any = None,
            raw: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, Any]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(payload) if "json" in kind else payload
    finally:
        conn.close()


def test_endpoints_answer_as_the_library_does(server: Server, classifier: Path) -> None:
    model = plmkit.load(classifier)
    tok = Tokenizer.load(tokenizer_dir(classifier))
    status, out = request(server, "POST", "/v1/embed", {"texts": TEXTS[:3], "pooling": "mean"})
    assert status == 200
    np.testing.assert_allclose(out["embeddings"], embed(model, tok, TEXTS[:3], "mean"),
                               atol=1e-5)
    status, out = request(server, "POST", "/v1/fill-mask",
                          {"text": "i [MASK] you so [MASK]", "top_k": 3})
    assert status == 200
    expected = fill_mask(model, tok, ["i [MASK] you so [MASK]"], 3)[0]
    assert [[p["token"] for p in m] for m in out["predictions"]] == [
        [p["token"] for p in m] for m in expected]
    assert out["predictions"][0][0]["score"] == pytest.approx(expected[0][0]["score"], abs=1e-5)
    status, out = request(server, "POST", "/v1/classify", {"texts": TEXTS[:2]})
    assert status == 200 and len(out["labels"]) == 2
    assert set(out["labels"]) <= {"negative", "neutral", "positive"}
    assert all(1 / 3 <= s <= 1 for s in out["scores"])
    status, health = request(server, "GET", "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["endpoints"] == ["embed", "fill-mask", "classify"]
    status, out = request(server, "POST", "/v1/qa", {"question": "who?", "context": "me"})
    assert status == 422 and "/v1/qa" in out["error"]


def test_qa_endpoint(reader: Path) -> None:
    model = plmkit.load(reader)
    tok = Tokenizer.load(tokenizer_dir(reader))
    question, context = "what did she love?", "she said she loved the new song a lot"
    expected = answer_question(model, tok, question, context)
    for server in running(reader):
        status, out = request(server, "POST", "/v1/qa", {"question": question,
                                                          "context": context})
        assert status == 200
        assert out["answer"] == expected.text == context[out["start"]:out["end"]]
        assert out["score"] == pytest.approx(expected.score, abs=1e-5)


def test_concurrent_requests_are_batched_and_answered_correctly(server: Server,
                                                                 classifier: Path) -> None:
    model = plmkit.load(classifier)
    tok = Tokenizer.load(tokenizer_dir(classifier))
    expected = embed(model, tok, TEXTS, "cls")
    before = request(server, "GET", "/health")[1]
    barrier = threading.Barrier(len(TEXTS))
    answers: dict[int, Any] = {}

    def client(i: int) -> None:
        barrier.wait(timeout=30)
        answers[i] = request(server, "POST", "/v1/embed", {"texts": [TEXTS[i]]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(TEXTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == list(range(len(TEXTS)))
    for i, (status, out) in answers.items():
        assert status == 200
        np.testing.assert_allclose(out["embeddings"][0], expected[i], atol=1e-4)
    after = request(server, "GET", "/health")[1]
    assert after["requests"] - before["requests"] == len(TEXTS)
    assert after["batches"] - before["batches"] < len(TEXTS)  # some went through together


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (json.dumps(["a list"]).encode(), 422, "JSON object"),
    (json.dumps({"texts": "not a list"}).encode(), 422, "'texts'"),
    (json.dumps({"texts": []}).encode(), 422, "'texts'"),
    (json.dumps({"texts": ["ok"], "extra": 1}).encode(), 422, "unknown field"),
    (json.dumps({"texts": ["ok"], "pooling": "max"}).encode(), 422, "pooling"),
    (json.dumps({"texts": ["x"] * 65}).encode(), 422, "at most 64"),
])
def test_bad_embed_requests_get_4xx(server: Server, body: bytes, status: int,
                                    needle: str) -> None:
    got, out = request(server, "POST", "/v1/embed", raw=body,
                       headers={"Content-Type": "application/json"})
    assert got == status and needle in out["error"]
    assert request(server, "GET", "/health")[0] == 200


def test_bad_requests_leave_the_service_up(server: Server) -> None:
    # an oversized body is refused from its Content-Length, before it is read (sending the
    # whole body first would race the server's close: a broken pipe on a busy machine)
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)  # claims a huge body, sends none
    conn.putrequest("POST", "/v1/embed")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "at most" in json.loads(response.read())["error"]
    conn.close()
    assert request(server, "POST", "/v1/fill-mask", {"text": "no mask here"})[0] == 422
    assert request(server, "POST", "/v1/fill-mask", {"text": "a [MASK]", "top_k": 0})[0] == 422
    assert request(server, "POST", "/v1/nope", {"text": "x"})[0] == 404
    assert request(server, "GET", "/nope")[0] == 404
    status, out = request(server, "POST", "/v1/fill-mask", {"text": "i love [MASK]"})
    assert status == 200 and len(out["predictions"][0]) == 5


def test_openapi_lists_every_endpoint(server: Server) -> None:
    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/health", "/v1/embed", "/v1/fill-mask", "/v1/classify",
                                  "/v1/qa"}
    schema = spec["paths"]["/v1/embed"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["required"] == ["texts"]


def test_demo_page_in_a_headless_browser(server: Server) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make system-deps` installs it"
    status, page = request(server, "GET", "/")
    assert status == 200 and b"<title>plmkit serve</title>" in page
    host, port = server.server_address[:2]
    query = urllib.parse.urlencode({"run": "fill-mask", "text": "i love this [MASK]"})
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--dump-dom", f"http://{host}:{port}/?{query}"],
            capture_output=True, text=True, timeout=120).stdout
    assert "bert model, 2 layers" in dom  # the script read /health
    assert "fine-tuned for classify" in dom
    assert 'class="off"' in dom  # the qa section: not served by this model
    assert dom.count('<li class="mask">') == 1  # the demo request ran in the browser


def test_plmkit_serve_command(classifier: Path) -> None:
    """`plmkit serve --port 0` listens on a free port of 127.0.0.1, says which, answers, and
    stops on SIGINT."""
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    # through exec; a handler does not: the server gets Python's own, as from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "plmkit.cli", "serve", "--model",
                                 str(classifier), "--port", "0"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        line = proc.stdout.readline()  # "serving DIR on http://127.0.0.1:PORT/ ..."
        assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() else line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/classify", body=json.dumps({"texts": ["so happy"]}))
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["labels"]) == 1
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=60) == 130
        finally:
            proc.kill()  # no server left behind if it did not stop
