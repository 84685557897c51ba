"""Side-by-side HTTP numbers: one workload against KATO-compatible servers, in one run.

    python3 -m bench.compare http://127.0.0.1:8000 http://127.0.0.1:9000
    python3 -m bench.compare --serve http://127.0.0.1:9000   # our server started here as the first URL

The workload uses only the core routes every KATO server has. Each round, per
URL: ``POST /sessions`` (a node of this run), ``POST .../observe`` x N (seeded
events of 1-5 symbols), ``POST .../learn``, ``POST .../observe`` x 2, ``GET
.../predictions``. Rounds alternate between the URLs (A, B, A, B, ...) so both
see the same machine state, and every request is timed on one keep-alive
connection per URL. The run is bounded by ``--rounds`` and ``--max-seconds``.

Prints per route and URL the request count, median and p99, and for every URL
after the first the ratio of its median to the first URL's (``2.00x`` = twice
as slow). Exit status 1 when any request answered something other than 200.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench.corpus import random_stm
from bench.http import Connection, percentile, serve

__all__ = ["main", "run_workload"]

ROUTES = ["POST /sessions", "POST observe", "POST learn", "GET predictions"]


class _Failure(Exception):
    pass


def _timed(conn: Connection, method: str, path: str, payload, samples: list[float]) -> dict:
    body = b"" if payload is None else json.dumps(payload).encode()
    start = time.perf_counter()
    status, raw = conn.request(method, path, body)
    samples.append(time.perf_counter() - start)
    if status != 200:
        raise _Failure(f"{method} {path} -> {status}: {raw[:200]!r}")
    return json.loads(raw)


def _round(conn: Connection, node: str, events: list[list[str]], probe: list[list[str]],
           samples: dict[str, list[float]]) -> None:
    sid = _timed(conn, "POST", "/sessions", {"node_id": node}, samples["POST /sessions"])["session_id"]
    for event in events:
        _timed(conn, "POST", f"/sessions/{sid}/observe", {"strings": event}, samples["POST observe"])
    _timed(conn, "POST", f"/sessions/{sid}/learn", None, samples["POST learn"])
    for event in probe:
        _timed(conn, "POST", f"/sessions/{sid}/observe", {"strings": event}, samples["POST observe"])
    _timed(conn, "GET", f"/sessions/{sid}/predictions", None, samples["GET predictions"])
    conn.request("DELETE", f"/sessions/{sid}")


def run_workload(urls: list[str], rounds: int, observations: int, seed: int = 1,
                 max_seconds: float = 60.0) -> tuple[dict[str, dict[str, list[float]]], int, list[str]]:
    """Run the workload; returns (samples[url][route], rounds completed, errors)."""
    node = f"compare-{uuid.uuid4().hex[:12]}"
    conns = [Connection.to(url) for url in urls]
    samples = {url: {route: [] for route in ROUTES} for url in urls}
    rng = random.Random(seed)
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds
    done = 0
    try:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            events = [ev for _ in range(observations) for ev in random_stm(rng)][:observations]
            probe = events[:2]  # the start of what was just learned: predictions have a future
            for url, conn in zip(urls, conns):
                try:
                    _round(conn, node, events, probe, samples[url])
                except _Failure as exc:
                    errors.append(f"{url}: {exc}")
            done += 1
    finally:
        for conn in conns:
            conn.close()
    return samples, done, errors


def report(samples: dict[str, dict[str, list[float]]], out=sys.stdout) -> None:
    """Print the per-route table (medians, p99 and the ratio to the first URL)."""
    urls = list(samples)
    base = samples[urls[0]]
    for i, url in enumerate(urls):
        print(f"  [{chr(65 + i)}] {url}", file=out)
    header = f"{'route':<18}{'url':>4}{'requests':>10}{'median':>12}{'p99':>12}{'ratio':>9}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for route in ROUTES:
        for i, url in enumerate(urls):
            data = samples[url][route]
            if not data:
                continue
            median = percentile(data, 0.5)
            ratio = ""
            if i and base[route]:
                ratio = f"{median / percentile(base[route], 0.5):.2f}x"
            print(f"{route if i == 0 else '':<18}{chr(65 + i):>4}{len(data):>10}{median * 1e3:>10.3f}ms"
                  f"{percentile(data, 0.99) * 1e3:>10.3f}ms{ratio:>9}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="*", help="base URLs of KATO-compatible servers (http://host:port)")
    parser.add_argument("--serve", action="store_true",
                        help="start our `kato serve` on a free 127.0.0.1 port (fresh data dir) as the first URL")
    parser.add_argument("--rounds", type=int, default=200, help="rounds per URL (default 200)")
    parser.add_argument("--observations", type=int, default=10, help="observes before each learn (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop after this long (default 60)")
    parser.add_argument("--json", type=Path, help="also write the raw latencies (seconds) here")
    args = parser.parse_args(argv)
    if not args.urls and not args.serve:
        parser.error("give at least one URL, or --serve")
    with ExitStack() as stack:
        urls = list(args.urls)
        if args.serve:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kato-compare-")))
            port = stack.enter_context(serve(data_dir))
            urls.insert(0, f"http://127.0.0.1:{port}")
        print(f"compare: {len(urls)} server(s); rounds of create session, observe x{args.observations}, "
              f"learn, observe x2, predictions; up to {args.rounds} rounds / {args.max_seconds:g}s",
              flush=True)
        started = time.perf_counter()
        samples, done, errors = run_workload(urls, args.rounds, args.observations, args.seed, args.max_seconds)
        print(f"{done} rounds per URL in {time.perf_counter() - started:.1f}s")
        report(samples)
        if args.json:
            args.json.write_text(json.dumps({"rounds": done, "samples": samples, "errors": errors}))
    for line in errors[:10]:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} failed round(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
