"""Scale report: build a seeded knowledge base of N patterns, then predict against it.

    python3 -m bench.scale --patterns 1000000
    python3 -m bench.scale --patterns 100000 200000 --seconds 10

For each size, in this one process: the build time (patterns learned through
``KnowledgeBase.apply``, progress bar on stderr), the resident memory it added
(and per 100k patterns), the time and memory of a full garbage collection, then
predictions for 256 seeded STMs of 3-5 events (default configuration) cycled
for ``--seconds``: median, p99 and mean CPU time per call. Sizes are built in
the order given, each after the previous one was dropped.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import sys
import time

from bench.corpus import build_kb, random_stm, rss_bytes
from bench.http import percentile
from engine import EngineConfig

__all__ = ["main"]


def measure(n: int, seconds: float) -> dict:
    """Build ``n`` patterns and time predictions; returns the figures."""
    gc.collect()
    rss0 = rss_bytes()
    started = time.perf_counter()
    kb = build_kb(n)
    build_s = time.perf_counter() - started
    gc.collect()
    rss = rss_bytes() - rss0
    t = time.perf_counter()
    gc.collect()
    gc_ms = (time.perf_counter() - t) * 1e3
    config = EngineConfig()
    rng = random.Random(11)
    stms = [random_stm(rng) for _ in range(256)]
    counts = [len(kb.predict(stm, config).predictions) for stm in stms]
    wall: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + seconds
    for stm in itertools.cycle(stms):
        c0, w0 = time.thread_time(), time.perf_counter()
        kb.predict(stm, config)
        w1 = time.perf_counter()
        cpu.append(time.thread_time() - c0)
        wall.append(w1 - w0)
        if w1 > deadline:
            break
    return {"patterns": n, "build_s": build_s, "rss_mb": rss / 2**20, "rss_mb_per_100k": rss / 2**20 * 1e5 / n,
            "full_gc_ms": gc_ms, "predictions_mean": sum(counts) / len(counts), "calls": len(wall),
            "median_ms": percentile(wall, 0.5) * 1e3, "p99_ms": percentile(wall, 0.99) * 1e3,
            "cpu_mean_ms": sum(cpu) / len(cpu) * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patterns", type=int, nargs="+", default=[1_000_000], help="sizes (default 1000000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="prediction time per size (default 20)")
    args = parser.parse_args(argv)
    print(f"{'patterns':>10}{'build':>9}{'RSS':>10}{'/100k':>9}{'full GC':>10}{'preds':>7}"
          f"{'calls':>8}{'median':>10}{'p99':>10}{'cpu mean':>10}")
    for n in args.patterns:
        r = measure(n, args.seconds)
        print(f"{r['patterns']:>10,}{r['build_s']:>8.1f}s{r['rss_mb']:>8.0f}MB{r['rss_mb_per_100k']:>7.1f}MB"
              f"{r['full_gc_ms']:>8.1f}ms{r['predictions_mean']:>7.1f}{r['calls']:>8}{r['median_ms']:>8.3f}ms"
              f"{r['p99_ms']:>8.3f}ms{r['cpu_mean_ms']:>8.3f}ms", flush=True)
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
