"""`plmkit serve` over real HTTP on 127.0.0.1: answers equal to the library's, concurrent
requests batched, bad requests rejected with 4xx while the service stays up, the demo page in
a headless browser."""

from __future__ import annotations

import http.client
import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import plmkit
from plmkit.cli import main
from plmkit.deploy.fill_mask import fill_mask
from plmkit.deploy.serve import MAX_BODY, Server, make_server
from plmkit.interop.native import TOKENIZER_DIR, tokenizer_dir
from plmkit.tasks import build_task_model
from plmkit.tasks.embed import embed
from plmkit.tasks.squad import answer_question
from plmkit.tokenizers import Tokenizer
from plmkit.training.modeldir import save_model
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
    (json.dumps({"texts": ["ok"], "pooling": "sum"}).encode(), 422, "pooling"),
    (json.dumps({"texts": ["ok"], "normalize": 1}).encode(), 422, "normalize"),
    (json.dumps({"texts": ["x"] * 65}).encode(), 422, "at most 64"),
    (b"[" * 100_000, 400, "nested too deeply"),  # a RecursionError in the parser
    (b'{"texts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "nested too deeply"),
    (b'{"texts": [' + b"1" * 5000 + b"]}", 400, "malformed JSON"),  # a ValueError in the parser
    (b'{"texts": ["\\ud800 a lone surrogate"]}', 422, "unpaired surrogate at character 0"),
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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_plmkit_serve_command(classifier: Path, signum: signal.Signals) -> None:
    """`plmkit serve --port 0` listens on a free port of 127.0.0.1, says which, answers, and
    stops on SIGINT (Ctrl-C) or SIGTERM with one line and exit code 128 + the signal."""
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
        proc.send_signal(signum)
        try:
            assert proc.wait(timeout=60) == 128 + signum
        finally:
            proc.kill()  # no server left behind if it did not stop
    assert proc.stderr.read().splitlines()[-1] == (
        f"plmkit: interrupted: {signum.name}: stopped serving on http://127.0.0.1:{port}/")


def test_64_concurrent_clients_are_all_answered(server: Server) -> None:
    """64 clients that connect at once, a few requests each: no connection refused or reset
    (a listen backlog of 5 overflowed under 32)."""
    clients, rounds = 64, 3
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for r in range(rounds):
                if r % 2:
                    statuses.append(request(server, "GET", "/health")[0])
                else:
                    statuses.append(request(server, "POST", "/v1/embed",
                                            {"texts": [TEXTS[i % len(TEXTS)]]})[0])
        except Exception as e:  # every failure is reported below
            failures.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, f"{len(failures)} failed, e.g. {failures[0]!r}"
    assert statuses == [200] * (clients * rounds)


def raw_exchange(server: Server, data: bytes) -> bytes:
    """What the server answers to `data` sent on a fresh connection, until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /health two words HTTP/1.1\r\n", 400),
    (b"PUT /v1/embed HTTP/1.1\r\n\r\n", 501),
])
def test_requests_the_http_parser_refuses_get_json_errors(server: Server, data: bytes,
                                                          status: int) -> None:
    head, _, body = raw_exchange(server, data).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == str(status).encode()
    assert json.loads(body)["status"] == status
    assert request(server, "GET", "/health")[0] == 200


def test_a_trickling_request_is_dropped_while_others_are_served(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slowloris: a header sent a byte at a time is cut off `request_timeout` seconds after
    its first byte, however steadily it trickles, while other clients are answered."""
    monkeypatch.setattr(server, "request_timeout", 1.0)
    with socket.create_connection(server.server_address[:2], timeout=30) as slow:
        start = time.monotonic()  # before the server can see the first byte
        slow.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
        for i in range(100):  # a byte every 0.05 s or slower: 5 s or more
            if i % 10 == 0:
                assert request(server, "GET", "/health")[0] == 200
            try:
                slow.sendall(b"a")
                if select.select([slow], [], [], 0.05)[0]:
                    reply = slow.recv(65536)  # the 408, or the close itself
                    assert reply == b"" or reply.startswith(b"HTTP/1.1 408 ")
                    break
            except ConnectionError:  # closed while bytes were in flight: a reset
                break
        else:
            pytest.fail("a request trickling for 5 s was not cut off")
    assert time.monotonic() - start >= 1.0
    assert request(server, "GET", "/health")[0] == 200


def test_an_unexpected_failure_is_a_500_and_one_log_line(
        server: Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.service, "describe", broken)
    monkeypatch.setattr(server, "verbose", True)
    capsys.readouterr()
    status, out = request(server, "GET", "/health")
    assert (status, out) == (500, {"error": "internal error (RuntimeError)", "status": 500})
    logged = [line for line in capsys.readouterr().err.splitlines() if "a bug" in line]
    assert len(logged) == 1 and "500 on GET /health: RuntimeError: a bug" in logged[0]
    monkeypatch.undo()
    assert request(server, "GET", "/health")[0] == 200


def test_serve_refuses_a_bad_or_busy_port(classifier: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        for port, needle in [(-1, "must be from 1 to 65535"), (65536, "must be from 1 to 65535"),
                             (taken, "cannot listen on 127.0.0.1")]:
            capsys.readouterr()
            assert main(["serve", "--model", str(classifier), f"--port={port}"]) == 2
            err = capsys.readouterr().err.splitlines()
            assert len(err) == 1 and err[0].startswith(f"plmkit: error: --port {port}: ")
            assert needle in err[0]


def test_accepted_connections_send_without_nagle_delay() -> None:
    """Headers and body leave as two writes; with Nagle's algorithm on, the body of every
    keep-alive response would wait for the client's delayed ACK."""
    server = Server(("127.0.0.1", 0))
    try:
        with socket.create_connection(server.server_address[:2], timeout=10):
            connection, _ = server.get_request()
            with connection:
                assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.server_close()
