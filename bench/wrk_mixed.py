"""Mixed HTTP workload against ``kato serve --workers N``, driven by wrk (C, cheap).

What runs: a fresh ``kato serve`` on 127.0.0.1 (embedded default, ``--workers N``)
whose learn log is pre-filled with ``--patterns`` seeded patterns on node
``bench-10k`` (bench/corpus.py); then wrk with ``bench/wrk_mixed.lua``: one thread
per connection, each connection creates its own session and repeats observe x4,
predictions, learn. A short warm-up run (not counted) makes every worker load the
knowledge base first. Prints what ran and the figures (req/s, p50, p99, errors),
and the CPU time per request of the server processes and of wrk, with the
throughput that CPU cost allows on this machine's cores when nothing else runs
(the machine this was written on is shared: req/s alone moves with the load of
others, CPU per request much less). Exits 1 when any response was not 200 or any
socket error happened.

    python3 -m bench.wrk_mixed --workers 2 --connections 8 --duration 20
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import prefill_store
from bench.http import cpu_seconds, listening_pids, serve

__all__ = ["main", "run_wrk"]

SCRIPT = Path(__file__).with_name("wrk_mixed.lua")
NODE = "bench-10k"


def run_wrk(port: int, connections: int, duration: float, node: str = NODE) -> dict[str, float]:
    """One wrk run of the mixed workload; returns the WRK_RESULT figures plus ``wrk_cpu_s``
    (raises if wrk failed)."""
    env = {**os.environ, "KATO_NODE": node}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout", "10s",
         "-s", str(SCRIPT), f"http://127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, check=True)
    match = re.search(r"^WRK_RESULT (.*)$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {k: float(v) for k, v in (item.split("=") for item in match.group(1).split())}
    figures["wrk_cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 1 when any request failed."""
    parser = argparse.ArgumentParser(prog="python3 -m bench.wrk_mixed", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="kato serve --workers (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections = threads (default 8)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted warm-up seconds (default 3)")
    parser.add_argument("--patterns", type=int, default=10_000, help="pre-learned patterns (default 10,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kato-wrk-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        prefill_store(data_dir, NODE, args.patterns)
        with serve(data_dir, workers=args.workers) as port:
            if args.warmup:
                run_wrk(port, args.connections, args.warmup)
            load = os.getloadavg()[0]
            pids = listening_pids(port)
            cpu = cpu_seconds(pids)
            start = time.perf_counter()
            r = run_wrk(port, args.connections, args.duration)
            elapsed = time.perf_counter() - start
            server_cpu = cpu_seconds(pids) - cpu
    rps = r["requests"] / (r["duration_us"] / 1e6)
    failed = int(r["non200"] + r["socket_errors"])
    print(f"wrk mixed: kato serve --workers {args.workers}, embedded storage, {args.patterns:,} patterns on "
          f"node {NODE}; wrk {args.connections} connections (1 per thread), {args.duration:g} s "
          f"(+{args.warmup:g} s warm-up); cycle per connection: own session, observe x4 (1-5 of "
          f"5,000 symbols), predictions, learn; load average before {load:.2f}; wall {elapsed:.1f} s")
    print(f"  {int(r['requests']):,} requests ({int(r['observes']):,} observe, {int(r['predictions']):,} "
          f"predictions, {int(r['learns']):,} learn, {int(r['creates'])} create): {rps:,.0f} req/s, "
          f"p50 {r['p50_us'] / 1e3:.2f} ms, p90 {r['p90_us'] / 1e3:.2f} ms, p99 {r['p99_us'] / 1e3:.2f} ms, "
          f"max {r['max_us'] / 1e3:.1f} ms; errors: {int(r['non200'])} non-200, "
          f"{int(r['socket_errors'])} socket")
    server_ms, wrk_ms = server_cpu / r["requests"] * 1e3, r["wrk_cpu_s"] / r["requests"] * 1e3
    cores = os.cpu_count() or 1
    print(f"  CPU per request: server {server_ms:.3f} ms ({len(pids)} processes), wrk {wrk_ms:.3f} ms; "
          f"ceiling on {cores} otherwise idle cores: {cores / (server_ms + wrk_ms) * 1e3:,.0f} req/s")
    if failed:
        print("wrk mixed: FAILED (requests that did not answer 200)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
