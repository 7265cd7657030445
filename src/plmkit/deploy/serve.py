"""`plmkit serve`: a small HTTP JSON service over one model, on the standard library; the
model runs on torch or, for an ONNX export, onnxruntime (`--backend`, `deploy.backend`), behind
the same routes, validation and batching.

    GET  /               the one-page HTML demo (static/index.html)
    GET  /health         {"status": "ok", "model", "endpoints", "requests", "batches"}
    GET  /openapi.json   the OpenAPI 3 description of the endpoints below
    POST /v1/embed       {"texts": [...], "pooling": "cls"|"pooler"|"mean"|"max",
                          "normalize": bool} -> {"embeddings": [[...]]}
    POST /v1/fill-mask   {"text": ..., "top_k": k} -> {"predictions": [[{"token", "score"}]]}
    POST /v1/classify    {"texts": [...]} -> {"labels": [...], "scores": [...]}
    POST /v1/qa          {"question": ..., "context": ...} -> {"answer", "score", "start", "end"}

A body over `MAX_BODY` bytes gets 413 (unread), malformed or too deeply nested JSON 400,
missing, unknown or ill-typed fields 422 (also a request the model cannot serve, e.g. no mask
token), an unknown path 404, a request not received within `REQUEST_TIMEOUT` seconds of its
first byte 408 (slowloris), an unexpected failure 500 and one log line; every error has a JSON
body and one request's failure never stops the service. Each connection has its own thread
(up to `BACKLOG` more wait to be accepted); all model work runs on one worker thread
(`Batcher`): requests of the same endpoint that arrive within `WINDOW` seconds of each other go
through the model as one batch. SIGINT or SIGTERM closes the socket and ends `serve`.
"""

from __future__ import annotations

import io
import json
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import torch

import plmkit
from plmkit.deploy.backend import describe, load
from plmkit.deploy.fill_mask import check_mlm, fill_mask
from plmkit.errors import Interrupted, UserError
from plmkit.interop.native import saved_options
from plmkit.tasks.base import resolve_options, task_of_model
from plmkit.tasks.embed import POOLINGS, embed

MAX_BODY = 1 << 20  # bytes
MAX_TEXTS = 64  # texts per request
MAX_CHARS = 20_000  # characters per text
MAX_TOP_K = 100
MAX_BATCH = 64  # requests per forward pass
WINDOW = 0.01  # seconds the batcher waits for more requests after the first
TIMEOUT = 30.0  # seconds a connection may idle, and a request may wait for its result
REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its body
BACKLOG = 1024  # connections the kernel queues before `accept` (the system's somaxconn caps it)


class Invalid(Exception):
    """A request with missing, unknown or ill-typed fields (422)."""


class RequestTimeout(Exception):
    """A request whose bytes did not all arrive in time (408)."""


# ---------------------------------------------------------------------------------------------
# Batching


@dataclass
class Job:
    """One request waiting for the worker: its endpoint, validated fields and outcome."""

    kind: str
    payload: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Batcher:
    """One worker thread that takes requests from a queue, groups those that arrive within
    `window` seconds (up to `max_batch`) by endpoint, and answers each group with one call of
    `run(kind, payloads) -> results`. A group that fails is retried one request at a time, so
    a bad request fails alone."""

    def __init__(self, run: Callable[[str, list[dict[str, Any]]], list[Any]],
                 max_batch: int = MAX_BATCH, window: float = WINDOW):
        self.run = run
        self.max_batch = max_batch
        self.window = window
        self.queue: queue.Queue[Job] = queue.Queue()
        self.requests = 0
        self.batches = 0
        threading.Thread(target=self._loop, name="plmkit-batcher", daemon=True).start()

    def submit(self, kind: str, payload: dict[str, Any], timeout: float = TIMEOUT) -> Any:
        """Queue a request and wait for its result (or its exception)."""
        job = Job(kind, payload)
        self.queue.put(job)
        if not job.done.wait(timeout):
            raise TimeoutError(f"no result within {timeout:.0f} s")
        if job.error is not None:
            raise job.error
        return job.result

    def _loop(self) -> None:
        while True:
            jobs = [self.queue.get()]
            deadline = time.monotonic() + self.window
            while len(jobs) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    jobs.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
            for kind in dict.fromkeys(j.kind for j in jobs):
                self._answer([j for j in jobs if j.kind == kind])

    def _answer(self, group: list[Job]) -> None:
        self.batches += 1
        self.requests += len(group)
        try:
            results = self.run(group[0].kind, [j.payload for j in group])
        except Exception as e:  # reported to each request; the worker goes on
            if len(group) > 1:
                self.batches -= 1
                self.requests -= len(group)
                for job in group:
                    self._answer([job])
                return
            group[0].error = e
        else:
            for job, result in zip(group, results, strict=True):
                job.result = result
        for job in group:
            job.done.set()


# ---------------------------------------------------------------------------------------------
# The model behind the endpoints


class Service:
    """A loaded model directory and what each endpoint computes with it, batched; the model
    runs on either backend (`deploy.backend.load`), everything else is shared."""

    def __init__(self, model_dir: Path, batch_size: int = 32, backend: str = "torch",
                 int8: bool = False):
        self.model_dir = Path(model_dir)
        self.loaded = load(model_dir, backend, int8)
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.embedding = self.loaded.embedding
        self.batch_size = batch_size
        self.max_seq_len = min(512, getattr(self.model.config, "max_positions", None) or 512)
        self.task = task_of_model(self.model) if getattr(self.model, "task", None) else None
        self.endpoints = ["embed"]
        self.no_fill_mask = self.fill_mask_refusal()
        if self.no_fill_mask is None:
            self.endpoints.append("fill-mask")
        if self.task is not None and self.task.name in ("classify", "squad"):
            self.endpoints.append("classify" if self.task.name == "classify" else "qa")
        self.batcher = Batcher(self.run)

    def describe(self) -> dict[str, Any]:
        return describe(self.loaded)

    def fill_mask_refusal(self) -> str | None:
        """Why this model cannot fill masks (None: it can): an ONNX export has no masked-LM
        head, and a transformers encoder without its pretraining head has an untrained one."""
        if self.loaded.backend == "onnx":
            return ("an ONNX export has no masked-LM head; serve the model directory with "
                    "--backend torch")
        try:
            check_mlm(self.model, self.model_dir)
        except UserError as e:
            return str(e)
        return None

    def run(self, kind: str, payloads: list[dict[str, Any]]) -> list[Any]:
        """The responses to a group of validated requests of endpoint `kind`."""
        if kind not in self.endpoints:
            why = f" ({self.no_fill_mask})" if kind == "fill-mask" and self.no_fill_mask else ""
            raise UserError(f"this model does not serve /v1/{kind}{why}; it serves "
                            f"{', '.join('/v1/' + e for e in self.endpoints)}")
        with torch.inference_mode():
            return getattr(self, "_" + kind.replace("-", "_"))(payloads)

    def _embed(self, payloads: list[dict[str, Any]]) -> list[Any]:
        """Vectors by `self.embedding`, with each request's pooling and normalize if given."""
        out = []
        for pooling, normalize in dict.fromkeys((p["pooling"], p["normalize"]) for p in payloads):
            group = [p for p in payloads
                     if (p["pooling"], p["normalize"]) == (pooling, normalize)]
            vectors = embed(self.model, self.tokenizer, _flat(group, "texts"),
                            self.embedding.given(pooling, normalize), self.batch_size).tolist()
            out += [(p, {"embeddings": rows}) for p, rows in zip(group, _split(vectors, group),
                                                                  strict=True)]
        return _in_order(payloads, out)

    def _fill_mask(self, payloads: list[dict[str, Any]]) -> list[Any]:
        k = max(p["top_k"] for p in payloads)
        found = fill_mask(self.model, self.tokenizer, [p["text"] for p in payloads], k,
                          self.max_seq_len, self.batch_size)
        return [{"predictions": [[{"token": x["token"], "score": x["score"]}
                                  for x in mask[:p["top_k"]]] for mask in masks]}
                for p, masks in zip(payloads, found, strict=True)]

    def _classify(self, payloads: list[dict[str, Any]]) -> list[Any]:
        from plmkit.tasks.classify import Example

        task: Any = self.task
        options = resolve_options(task, saved_options(self.model_dir))
        examples = [Example(0, t, None, None) for t in _flat(payloads, "texts")]
        rows = task.scores(self.model, self.tokenizer, examples, options).tolist()
        results = []
        for chunk in _split(rows, payloads):
            if task.labels is None:  # regression: the predicted value
                results.append({"labels": [None] * len(chunk), "scores": [r[0] for r in chunk]})
                continue
            best = [max(range(len(r)), key=r.__getitem__) for r in chunk]
            results.append({"labels": [task.labels[b] for b in best],
                            "scores": [r[b] for r, b in zip(chunk, best, strict=True)]})
        return results

    def _qa(self, payloads: list[dict[str, Any]]) -> list[Any]:
        from plmkit.tasks.squad import Question

        task: Any = self.task
        options = resolve_options(task, saved_options(self.model_dir))
        questions = [Question(str(i), p["question"], p["context"]) for i, p in enumerate(payloads)]
        return [{"answer": a.text, "score": a.score, "start": a.char_start, "end": a.char_end}
                for a in task.answer(self.model, self.tokenizer, questions, options)]


def _flat(payloads: list[dict[str, Any]], key: str) -> list[Any]:
    return [x for p in payloads for x in p[key]]


def _split(rows: list[Any], payloads: list[dict[str, Any]]) -> list[list[Any]]:
    """`rows` of the flattened texts back into one list per request."""
    out, start = [], 0
    for p in payloads:
        out.append(rows[start:start + len(p["texts"])])
        start += len(p["texts"])
    return out


def _in_order(payloads: list[dict[str, Any]], answered: list[tuple[dict, Any]]) -> list[Any]:
    by_id = {id(p): r for p, r in answered}
    return [by_id[id(p)] for p in payloads]


# ---------------------------------------------------------------------------------------------
# Request validation


def _texts(body: dict[str, Any], name: str = "texts") -> list[str]:
    texts = body.get(name)
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise Invalid(f"{name!r} must be a non-empty list of strings")
    if len(texts) > MAX_TEXTS:
        raise Invalid(f"{name!r} has {len(texts)} texts; at most {MAX_TEXTS} per request")
    for t in texts:
        _check_text(t, name)
    return texts


def _text(body: dict[str, Any], name: str) -> str:
    text = body.get(name)
    if not isinstance(text, str):
        raise Invalid(f"{name!r} must be a string")
    _check_text(text, name)
    return text


def _check_text(text: str, name: str) -> None:
    if not text.strip():
        raise Invalid(f"{name!r} has an empty text")
    if len(text) > MAX_CHARS:
        raise Invalid(f"{name!r} has a text of {len(text)} characters; at most {MAX_CHARS}")
    try:
        text.encode()
    except UnicodeEncodeError as e:  # JSON's "\ud800" escape; the tokenizer takes UTF-8
        raise Invalid(f"{name!r} has an unpaired surrogate at character {e.start}") from None


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{name!r} must be an integer from {low} to {high}")
    return value


def _embed_fields(body: dict[str, Any]) -> dict[str, Any]:
    pooling, normalize = body.get("pooling"), body.get("normalize")
    if pooling is not None and pooling not in POOLINGS:
        raise Invalid(f"'pooling' must be one of {', '.join(POOLINGS)}")
    if normalize is not None and not isinstance(normalize, bool):
        raise Invalid("'normalize' must be true or false")
    return {"texts": _texts(body), "pooling": pooling, "normalize": normalize}


VALIDATORS: dict[str, tuple[set[str], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "embed": ({"texts", "pooling", "normalize"}, _embed_fields),
    "fill-mask": ({"text", "top_k"}, lambda b: {"text": _text(b, "text"),
                                               "top_k": _int(b, "top_k", 5, 1, MAX_TOP_K)}),
    "classify": ({"texts"}, lambda b: {"texts": _texts(b)}),
    "qa": ({"question", "context"}, lambda b: {"question": _text(b, "question"),
                                               "context": _text(b, "context")}),
}


def validate(kind: str, body: Any) -> dict[str, Any]:
    """The fields of a request body for endpoint `kind`, or `Invalid`."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    allowed, fields = VALIDATORS[kind]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)}; /v1/{kind} takes "
                      f"{', '.join(sorted(allowed))}")
    return fields(body)


# ---------------------------------------------------------------------------------------------
# HTTP


class DeadlineReader(io.RawIOBase):
    """A connection's bytes, where each request must arrive within `limit` seconds of its first
    byte (`RequestTimeout`), however slowly it trickles; between requests the connection may
    idle `idle` seconds (`TimeoutError`). `start()` begins the next request."""

    def __init__(self, sock: socket.socket, idle: float, limit: float):
        self.sock, self.idle, self.limit = sock, idle, limit
        self.deadline: float | None = None

    def start(self) -> None:
        self.deadline = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeout
            self.sock.settimeout(left)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            if self.deadline is None:
                raise
            raise RequestTimeout from None
        finally:
            self.sock.settimeout(self.idle)  # also the limit on each write
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self.limit
        return n


class Handler(BaseHTTPRequestHandler):
    """The routes; `server.service` is the `Service`."""

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "plmkit"
    timeout = TIMEOUT  # a client that stops sending is dropped

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket stays open; its bytes come through a DeadlineReader
        self.reader = DeadlineReader(self.connection, self.timeout, self.server.request_timeout)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.start()
        self.responding = False
        # what parse_request sets, for a 408 before it ran
        self.requestline, self.command, self.request_version = "", "", self.protocol_version
        try:
            super().handle_one_request()
        except RequestTimeout:
            self.close_connection = True
            self.log_error("request not received within %.0f s", self.reader.limit)
            self._error(HTTPStatus.REQUEST_TIMEOUT,
                        f"the request did not arrive within {self.reader.limit:.0f} s")

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _guarded(self, route: Callable[[], None]) -> None:
        """`route()`, any unexpected failure answered with 500 and logged in one line."""
        try:
            route()
        except (RequestTimeout, ConnectionError):
            raise  # answered in handle_one_request / nobody to answer
        except Exception as e:
            self.close_connection = True
            if self.responding:  # too late for a status: the client sees the connection close
                raise
            self.log_error("500 on %s %s: %s: %s", self.command, self.path,
                           type(e).__name__, e)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(e).__name__})")

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        service = self.server.service
        if path == "/":
            self._send(HTTPStatus.OK, index_html(), "text/html; charset=utf-8")
        elif path == "/health":
            self._json(HTTPStatus.OK, {"status": "ok", "model": service.describe(),
                                       "endpoints": service.endpoints,
                                       "requests": service.batcher.requests,
                                       "batches": service.batcher.batches})
        elif path == "/openapi.json":
            self._json(HTTPStatus.OK, openapi(service))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page {path}")

    def _post(self) -> None:
        kind = self.path.removeprefix("/v1/") if self.path.startswith("/v1/") else None
        if kind not in VALIDATORS:
            self.close_connection = True  # the body stays unread
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {self.path}")
            return
        body = self._body()
        if body is None:
            return
        try:
            result = self.server.service.batcher.submit(kind, validate(kind, body))
        except (Invalid, UserError) as e:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
        else:
            self._json(HTTPStatus.OK, result)

    def _body(self) -> Any:
        """The parsed JSON body, or None after answering 400 / 411 / 413."""
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return None
        if not length.isdigit():
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length[:20]!r}")
            return None
        if int(length) > MAX_BODY:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the body has {length} bytes; at most {MAX_BODY}")
            return None
        try:
            return json.loads(self.rfile.read(int(length)))
        except ValueError as e:  # not UTF-8, not JSON, an integer of over 4300 digits
            self._error(HTTPStatus.BAD_REQUEST, f"malformed JSON: {e}")
        except RecursionError:
            self._error(HTTPStatus.BAD_REQUEST, "malformed JSON: nested too deeply")
        return None

    def _json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message, "status": status.value})

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """What the HTTP parser refuses (bad request line, long headers, unknown method), as
        JSON like every other error."""
        self.close_connection = True
        self._error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.responding = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    """A daemon thread per connection, the `Service` (set once bound) shared."""

    service: Service
    daemon_threads = True
    request_queue_size = BACKLOG
    request_timeout = REQUEST_TIMEOUT

    def __init__(self, address: tuple[str, int], verbose: bool = False):
        self.verbose = verbose
        super().__init__(address, Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """An accepted connection with Nagle's algorithm off: a response goes out as headers
        then body, and with it on, the body waits for the client's delayed ACK of the headers
        (~40 ms on Linux) on every keep-alive request."""
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """A connection that failed outside the routes (e.g. the client left): one line."""
        error = sys.exc_info()[1]
        if self.verbose and not isinstance(error, ConnectionError):
            print(f"{client_address[0]} - connection closed: {type(error).__name__}: {error}",
                  file=sys.stderr)


def make_server(model_dir: Path, host: str = "127.0.0.1", port: int = 8000,
                verbose: bool = False, backend: str = "torch", int8: bool = False) -> Server:
    """A server bound to `host:port` (0: any free port; see `server_address`), then serving
    `model_dir` on `backend` (`deploy.backend.load`): a busy port is refused before the model
    loads."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: must be from 1 to 65535 (or 0: any free port)")
    try:
        server = Server((host, port), verbose)
    except OSError as e:
        raise UserError(f"--port {port}: cannot listen on {host}:{port} "
                        f"({e.strerror or e})") from None
    try:
        server.service = Service(model_dir, backend=backend, int8=int8)
    except BaseException:
        server.server_close()
        raise
    return server


def serve(model_dir: Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch",
          int8: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then close the socket and raise `Interrupted`
    (`plmkit serve`; main thread only)."""
    server = make_server(model_dir, host, port, verbose=True, backend=backend, int8=int8)
    caught: list[int] = []

    def stop(signum: int, frame: Any) -> None:  # serve_forever ends at its next poll
        caught.append(signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    host, port = server.server_address[:2]
    runs = backend + (", int8" if int8 else "")
    print(f"serving {model_dir} ({runs}) on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for s, h in previous.items():
            signal.signal(s, h)
    name = signal.Signals(caught[0]).name
    raise Interrupted(128 + caught[0], f"{name}: stopped serving on http://{host}:{port}/")


def index_html() -> bytes:
    return resources.files("plmkit.deploy").joinpath("static/index.html").read_bytes()


def openapi(service: Service) -> dict[str, Any]:
    """The OpenAPI 3.0 description of the JSON endpoints."""
    string = {"type": "string"}
    strings = {"type": "array", "items": string, "minItems": 1, "maxItems": MAX_TEXTS}
    number = {"type": "number"}
    prediction = {"type": "object", "properties": {"token": string, "score": number}}
    endpoints = {
        "embed": ("Sentence vectors (default pooling and normalize: the model directory's "
                  "sentence-transformers files, else cls, not normalised)", {
            "texts": strings, "pooling": {"type": "string", "enum": list(POOLINGS)},
            "normalize": {"type": "boolean"}}, ["texts"],
            {"embeddings": {"type": "array", "items": {"type": "array", "items": number}}}),
        "fill-mask": ("Top-k tokens for each mask token", {"text": string, "top_k": {
            "type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5}}, ["text"],
            {"predictions": {"type": "array", "items": {"type": "array", "items": prediction}}}),
        "classify": ("Label and its probability for each text", {"texts": strings}, ["texts"],
                     {"labels": {"type": "array", "items": string},
                      "scores": {"type": "array", "items": number}}),
        "qa": ("Answer span in the context", {"question": string, "context": string},
               ["question", "context"], {"answer": string, "score": number,
                                         "start": {"type": "integer"},
                                         "end": {"type": "integer"}}),
    }
    error = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": string, "status": {"type": "integer"}}}}}}
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Status, model and batching counters",
                            "responses": {"200": {"description": "ok"}}}},
    }
    for kind, (summary, fields, required, out) in endpoints.items():
        request = {"type": "object", "properties": fields, "required": required,
                   "additionalProperties": False}
        paths[f"/v1/{kind}"] = {"post": {
            "summary": summary + ("" if kind in service.endpoints
                                  else " (not served by this model)"),
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {
                    "type": "object", "properties": out}}}},
                "400": error, "413": error, "422": error,
            },
        }}
    return {"openapi": "3.0.3",
            "info": {"title": "plmkit serve", "version": plmkit.__version__},
            "paths": paths}
