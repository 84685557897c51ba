"""``kato serve --workers N``: N uvicorn processes on one port, each with its own socket.

Why not uvicorn's own ``workers=N``: its workers share one listening socket, and an
idle worker accepts every connection that arrives while the other sleeps — all 64
connections of a test, or all 8 of a benchmark, landed on one worker. Here every
worker binds its own socket with ``SO_REUSEPORT`` and the kernel spreads new
connections over them by a hash of the address pair, so each worker gets its share
from the first connection on.

The parent only supervises: SIGTERM or SIGINT is passed to every worker (each
shuts down gracefully), and when one worker exits the others are stopped too, so a
broken worker is never silently left out; the exit status is 1 unless every worker
stopped cleanly on request.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from typing import Any

__all__ = ["run_workers"]


def _serve(host: str, port: int, options: dict[str, Any]) -> None:
    """One worker: its own SO_REUSEPORT socket, the app from ``web.cli.worker_app``."""
    import uvicorn

    from web.cli import worker_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    config = uvicorn.Config(worker_app, factory=True, host=host, port=port, **options)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:   # Server.run returns quietly when start-up (the lifespan) failed
        sys.exit(3)


def run_workers(workers: int, host: str, port: int, options: dict[str, Any]) -> int:
    """Run ``workers`` server processes on ``host:port`` until a signal or a worker exits."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_serve, args=(host, port, options), name=f"kato-worker-{i}")
             for i in range(workers)]
    stopping = False   # a signal asked for the stop (not a worker's exit)
    started: list[Any] = []

    def terminate() -> None:
        for proc in started:
            if proc.is_alive():
                proc.terminate()

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        terminate()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in procs:
            if stopping:   # a signal while starting: start no more
                break
            proc.start()
            started.append(proc)
        if started:
            multiprocessing.connection.wait([proc.sentinel for proc in started])
        terminate()
        for proc in started:
            proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping and all(proc.exitcode == 0 for proc in started) else 1
