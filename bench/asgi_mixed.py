"""The mixed cycle through the app in process: CPU, system calls and GC per request, no sockets.

What runs: the Litestar app of ``web.app.create_app`` on a data directory whose
learn log is pre-filled with ``--patterns`` seeded patterns on node ``bench-10k``
(bench/corpus.py), driven by ASGI calls on one uvloop: ``--sessions`` sessions
concurrently, each repeating observe x4 (1-5 of 5,000 symbols, its own seeded
stream, as bench/wrk_mixed.lua), predictions, learn, every status checked. A
warm-up of 50 cycles per session is not counted. ``--processes 2`` runs two such
drivers at once on one data directory with the several-worker stores
(``KATO_WORKERS=2``: SQLite sessions, vectors in the learn log), as two workers
of ``kato serve --workers 2`` hold it.

Why next to bench/wrk_mixed.py: without HTTP, the kernel and a load generator on
the same two cores, the CPU per request of the app itself moves far less between
runs on a shared machine, so changes to the web layer and the stores can be
compared back to back. The system calls and bytes per request (``/proc/self/io``)
and the time in garbage collection (``gc.callbacks``) are exact counts.

    python3 -m bench.asgi_mixed                 # embedded default, one worker's stores
    python3 -m bench.asgi_mixed --processes 2   # two workers' stores on one data dir
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import prefill_store, random_event

__all__ = ["main"]

NODE = "bench-10k"
WARMUP_CYCLES = 50


class _Collections:
    """Time spent in garbage collection, from gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.count += 1


def _io() -> dict[str, int]:
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(": ") for line in fh.read().splitlines() if line)}


def _bodies(seed: int, n: int = 4096) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"strings": random_event(rng)}).encode() for _ in range(n)]


async def _drive(cycles: int, sessions: int, seed: int) -> dict[str, float]:
    from web.app import create_app
    from web.cli import freeze_startup_heap

    app = create_app()
    to_app: asyncio.Queue = asyncio.Queue()
    from_app: asyncio.Queue = asyncio.Queue()
    await to_app.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   to_app.get, from_app.put))
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"start-up failed: {started}")
    freeze_startup_heap(app)   # as kato serve does after start-up

    async def call(method: str, path: str, body: bytes = b"") -> bytes:
        sent: list[dict] = []
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()   # never disconnects

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{method} {path}: {sent[0]['status']} {sent[1].get('body', b'')[:300]!r}")
        return sent[1]["body"]

    streams = [_bodies(1000 + 100 * seed + i) for i in range(sessions)]
    ids = [json.loads(await call("POST", "/sessions", json.dumps({"node_id": NODE}).encode()))["session_id"]
           for _ in range(sessions)]

    async def cycle(i: int, first: int, n: int) -> None:
        sid, bodies = ids[i], streams[i]
        for k in range(first, first + n):
            for j in range(4):
                await call("POST", f"/sessions/{sid}/observe", bodies[(4 * k + j) % len(bodies)])
            await call("GET", f"/sessions/{sid}/predictions")
            await call("POST", f"/sessions/{sid}/learn", b"{}")

    await asyncio.gather(*(cycle(i, 0, WARMUP_CYCLES) for i in range(sessions)))
    collections = _Collections()
    gc.callbacks.append(collections)
    io0, cpu0, wall0 = _io(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(cycle(i, WARMUP_CYCLES, cycles) for i in range(sessions)))
    io1, cpu1, wall1 = _io(), time.process_time(), time.perf_counter()
    gc.callbacks.remove(collections)
    await to_app.put({"type": "lifespan.shutdown"})
    await from_app.get()
    await life
    n = cycles * 6 * sessions
    return {"requests": n, "cpu_ms": 1e3 * (cpu1 - cpu0) / n, "wall_ms": 1e3 * (wall1 - wall0) / n,
            "reads": (io1["syscr"] - io0["syscr"]) / n, "writes": (io1["syscw"] - io0["syscw"]) / n,
            "read_kb": (io1["rchar"] - io0["rchar"]) / n / 1024, "written_kb": (io1["wchar"] - io0["wchar"]) / n / 1024,
            "gc_us": 1e6 * collections.seconds / n, "collections": collections.count}


def _child(data_dir: str, cycles: int, sessions: int, seed: int) -> None:
    """One driver process (``--processes`` > 1): prints its figures as one JSON line."""
    import uvloop

    os.environ["KATO_DATA_DIR"] = data_dir
    print(json.dumps(uvloop.run(_drive(cycles, sessions, seed))), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print what ran and the figures."""
    parser = argparse.ArgumentParser(prog="python3 -m bench.asgi_mixed", description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=1,
                        help="drivers on one data dir; 2 or more use the several-worker stores (default 1)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions per process (default 8)")
    parser.add_argument("--cycles", type=int, default=250, help="measured cycles per session (default 250)")
    parser.add_argument("--patterns", type=int, default=10_000, help="pre-learned patterns (default 10,000)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], *map(int, args.child[1:]))
        return 0
    workers = args.processes
    env = {**os.environ, "LOG_LEVEL": "WARNING", "KATO_WORKERS": str(workers)}
    with tempfile.TemporaryDirectory(prefix="kato-asgi-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        prefill_store(data_dir, NODE, args.patterns)
        root = Path(__file__).resolve().parent.parent
        children = [subprocess.Popen([sys.executable, "-m", "bench.asgi_mixed", "--child", str(data_dir),
                                      str(args.cycles), str(args.sessions), str(seed)],
                                     cwd=root, env=env, stdout=subprocess.PIPE, text=True)
                    for seed in range(args.processes)]
        outputs = [child.communicate()[0] for child in children]
        if any(child.returncode for child in children):
            print("asgi mixed: a driver failed", file=sys.stderr)
            return 1
    figures = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    print(f"asgi mixed: {args.processes} process(es) on one data dir (KATO_WORKERS={workers}), "
          f"{args.patterns:,} patterns on node {NODE}; {args.sessions} sessions per process, {args.cycles} "
          f"cycles each (+{WARMUP_CYCLES} warm-up) of observe x4 (1-5 of 5,000 symbols), predictions, learn")
    for i, f in enumerate(figures):
        print(f"  process {i}: {f['requests']:,} requests, CPU {f['cpu_ms']:.3f} ms/request "
              f"(wall {f['wall_ms']:.3f}); per request {f['reads']:.1f} reads / {f['writes']:.1f} writes "
              f"({f['read_kb']:.1f} / {f['written_kb']:.1f} KB), GC {f['gc_us']:.1f} us ({f['collections']} "
              f"collections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
