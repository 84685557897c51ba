"""HTTP benchmarks of ``kato serve`` on the embedded default (one worker process).

What runs: a real server child process on 127.0.0.1 (fresh data directory), driven
by a minimal keep-alive HTTP/1.1 client over raw sockets so the client costs far
less than the server. Two workloads:

* **observe** — ``POST /sessions/{id}/observe`` with 1–3 random symbols on a node
  whose knowledge base is empty (default config: predictions are computed on
  every observe). Latency: one connection, sequential requests. Throughput: 8
  connections, one session each (observes of one session are serialised by design).
* **predictions at 10k patterns** — the server's SQLite learn log is pre-filled
  with 10,000 seeded patterns (bench/corpus.py: 5–20 events of 1–5 symbols over
  5,000 symbols), rebuilt on first use; sessions hold an STM of 3–5 random events;
  ``GET /sessions/{id}/predictions``. Also **observe at 10k patterns**.

Prints requests, req/s, p50 and p99 per workload (targets on the embedded default,
one worker: observe p50 <= 1 ms and >= 3,000 observe req/s). Run:

    python3 -m pytest bench/bench_api.py -s --benchmark-storage=file://bench/baselines
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.corpus import random_patterns, random_stm

ROOT = Path(__file__).resolve().parent.parent
KB_PATTERNS = 10_000
CONNECTIONS = 8
THROUGHPUT_REQUESTS = 20_000


class Connection:
    """Blocking keep-alive HTTP/1.1 connection (JSON in, JSON out)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        header, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buf = rest[length:]
        return int(header[9:12]), rest[:length]

    def json(self, method: str, path: str, payload=None):
        status, body = self.request(method, path, b"" if payload is None else json.dumps(payload).encode())
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def close(self) -> None:
        self.sock.close()


async def _async_request(reader, writer, request: bytes) -> int:
    writer.write(request)
    header = await reader.readuntil(b"\r\n\r\n")
    length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return int(header[9:12])


def throughput(port: int, requests_per_conn: list[list[bytes]]) -> tuple[float, list[float]]:
    """Run each connection's requests back to back, all connections at once.

    Returns (elapsed seconds, per-request latencies).
    """
    latencies: list[float] = []

    async def worker(requests: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in requests:
                start = time.perf_counter()
                status = await _async_request(reader, writer, req)
                latencies.append(time.perf_counter() - start)
                assert status == 200, status
        finally:
            writer.close()

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(worker(r) for r in requests_per_conn))
        return time.perf_counter() - start

    try:
        import uvloop
    except ImportError:  # the stdlib loop works too, with a costlier client
        return asyncio.run(run()), latencies
    return uvloop.run(run()), latencies


def _post(path: str, payload) -> bytes:
    body = json.dumps(payload).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(len(data) * q))]


def _prefill(data_dir: Path, node_id: str, n: int) -> None:
    """Write ``n`` seeded patterns into the embedded learn log of ``node_id``."""
    from engine import LearnedPattern
    from engine.observation import pattern_hash
    from storage.sqlite import SqlitePatternStore
    from web.nodes import kb_id_for

    store = SqlitePatternStore(data_dir / "patterns.sqlite3")
    records = [LearnedPattern(name=pattern_hash(ev), events=ev, emotives=[], metadata=[], persistence=5,
                              frequency=0) for ev in random_patterns(n, seed=1)]
    asyncio.run(store.append(kb_id_for(node_id), records))
    asyncio.run(store.close())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ``kato serve`` child process with a pre-filled 10k-pattern node ``bench-10k``."""
    data_dir = tmp_path_factory.mktemp("bench") / "data"
    data_dir.mkdir()
    _prefill(data_dir, "bench-10k", KB_PATTERNS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--data-dir", str(data_dir)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = Connection(port)
                conn.json("GET", "/health")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        conn.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


def _sessions(port: int, node: str, k: int) -> list[str]:
    conn = Connection(port)
    try:
        return [conn.json("POST", "/sessions", {"node_id": node})["session_id"] for _ in range(k)]
    finally:
        conn.close()


def _report(benchmark, record, label: str, size: str, what: str, elapsed: float, latencies: list[float]) -> None:
    rps = len(latencies) / elapsed
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    benchmark.extra_info.update(workload=what, throughput_requests=len(latencies), connections=CONNECTIONS,
                                throughput_req_per_s=round(rps, 1), throughput_p50_ms=round(p50 * 1e3, 3),
                                throughput_p99_ms=round(p99 * 1e3, 3))
    stats = benchmark.stats.stats
    print(f"\n{label}: {what}\n  sequential (1 connection): {stats.rounds} requests, "
          f"p50 {stats.median * 1e3:.3f} ms, p99 {_percentile(stats.data, 0.99) * 1e3:.3f} ms, "
          f"{1 / stats.mean:,.0f} req/s\n  concurrent ({CONNECTIONS} connections): {len(latencies)} requests, "
          f"{rps:,.0f} req/s, p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")
    record(label, size)


def _observe_bench(benchmark, record, port: int, node: str, label: str, size: str, what: str) -> None:
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(500)]
    (sid,) = _sessions(port, node, 1)
    conn = Connection(port)
    path = f"/sessions/{sid}/observe"
    bodies = [json.dumps({"strings": rng.sample(vocab, rng.randint(1, 3))}).encode() for _ in range(512)]
    counter = iter(range(10 ** 9))

    def one() -> None:
        status, _ = conn.request("POST", path, bodies[next(counter) % 512])
        assert status == 200

    benchmark.pedantic(one, rounds=3000, iterations=1, warmup_rounds=200)
    conn.close()
    sids = _sessions(port, node, CONNECTIONS)
    per_conn = THROUGHPUT_REQUESTS // CONNECTIONS
    work = [[_post(f"/sessions/{s}/observe", {"strings": rng.sample(vocab, rng.randint(1, 3))})
             for _ in range(per_conn)] for s in sids]
    elapsed, latencies = throughput(port, work)
    _report(benchmark, record, label, size, what, elapsed, latencies)


def test_http_observe(benchmark, record, server):
    _observe_bench(benchmark, record, server, "bench-empty", "http observe", "empty KB",
                   "POST observe, 1-3 symbols, empty knowledge base, default config")


def test_http_observe_10k(benchmark, record, server):
    _observe_bench(benchmark, record, server, "bench-10k", "http observe", f"{KB_PATTERNS:,} pat",
                   f"POST observe, 1-3 symbols of another vocabulary, {KB_PATTERNS:,}-pattern knowledge base")


def test_http_predictions_10k(benchmark, record, server):
    rng = random.Random(11)
    sids = _sessions(server, "bench-10k", CONNECTIONS)
    conn = Connection(server)
    for sid in sids:  # every session gets an STM of 3-5 random events from the corpus vocabulary
        conn.json("POST", f"/sessions/{sid}/observe-sequence",
                  {"observations": [{"strings": ev} for ev in random_stm(rng)]})
    counts = [conn.json("GET", f"/sessions/{sid}/predictions")["count"] for sid in sids]
    path = f"/sessions/{sids[0]}/predictions"

    def one() -> None:
        status, _ = conn.request("GET", path)
        assert status == 200

    benchmark.pedantic(one, rounds=1000, iterations=1, warmup_rounds=50)
    conn.close()
    benchmark.extra_info.update(patterns=KB_PATTERNS, predictions_per_call=counts)
    work = [[_get(f"/sessions/{s}/predictions")] * 500 for s in sids]
    elapsed, latencies = throughput(server, work)
    _report(benchmark, record, "http predictions", f"{KB_PATTERNS:,} pat",
            f"GET predictions, STM 3-5 events, {KB_PATTERNS:,} patterns, "
            f"predictions per call {counts}", elapsed, latencies)
