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

import json
import random

import pytest

from bench.corpus import prefill_store, random_stm
from bench.http import Connection, get, percentile, post, serve, throughput

KB_PATTERNS = 10_000
CONNECTIONS = 8
THROUGHPUT_REQUESTS = 20_000
_post, _get, _percentile = post, get, percentile


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ``kato serve`` child process with a pre-filled 10k-pattern node ``bench-10k``."""
    data_dir = tmp_path_factory.mktemp("bench") / "data"
    data_dir.mkdir()
    prefill_store(data_dir, "bench-10k", KB_PATTERNS)
    with serve(data_dir) as port:
        yield port


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


def _mixed_cycle(rng: random.Random, sid: str, observes: int) -> list[bytes]:
    """One cycle of the mixed workload: observe x N, predictions, learn (which clears the STM)."""
    events = [ev for _ in range(observes) for ev in random_stm(rng)][:observes]
    return ([_post(f"/sessions/{sid}/observe", {"strings": ev}) for ev in events]
            + [_get(f"/sessions/{sid}/predictions"), _post(f"/sessions/{sid}/learn", {})])


def test_http_mixed_10k(benchmark, record, server):
    """The compare/loadtest workload: per session, observe x4 (corpus symbols), predictions, learn."""
    rng = random.Random(23)
    observes = 4
    (sid,) = _sessions(server, "bench-10k", 1)
    conn = Connection(server)
    stream = iter([r for _ in range(400) for r in _mixed_cycle(rng, sid, observes)])

    def one() -> None:
        raw = next(stream)
        head, _, body = raw.partition(b"\r\n\r\n")
        method, path = head.split(b" ")[:2]
        status, _ = conn.request(method.decode(), path.decode(), body)
        assert status == 200

    benchmark.pedantic(one, rounds=2000, iterations=1, warmup_rounds=100)
    conn.close()
    sids = _sessions(server, "bench-10k", CONNECTIONS)
    work = [[r for _ in range(THROUGHPUT_REQUESTS // CONNECTIONS // (observes + 2))
             for r in _mixed_cycle(rng, s, observes)] for s in sids]
    benchmark.extra_info.update(patterns=KB_PATTERNS, cycle=f"observe x{observes}, predictions, learn")
    elapsed, latencies = throughput(server, work)
    _report(benchmark, record, "http mixed", f"{KB_PATTERNS:,} pat",
            f"observe x{observes} (1-5 corpus symbols), predictions, learn; {KB_PATTERNS:,}-pattern node",
            elapsed, latencies)
