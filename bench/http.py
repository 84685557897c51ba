"""A minimal HTTP/1.1 client and a loopback ``kato serve`` for the HTTP benchmarks.

The client is deliberately tiny (raw keep-alive sockets, JSON in and out) so that
on a 2-core machine it costs far less CPU than the server it measures; httpx or
aiohttp would take as much time per request as the server does. It speaks only
what a KATO-compatible server needs: ``Content-Length`` bodies, no chunking.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Connection", "throughput", "post", "get", "percentile", "free_port", "serve", "split_url",
           "listeners", "listening_pids", "cpu_seconds"]

ROOT = Path(__file__).resolve().parent.parent


def split_url(url: str) -> tuple[str, int, str]:
    """``(host, port, path prefix)`` of an ``http://`` base URL."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// base URLs are supported, got {url!r}")
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")


class Connection:
    """Blocking keep-alive HTTP/1.1 connection (JSON in, JSON out)."""

    def __init__(self, port: int, host: str = "127.0.0.1", prefix: str = "") -> None:
        self.host = host
        self.prefix = prefix
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @classmethod
    def to(cls, base_url: str) -> Connection:
        """A connection to the server of ``base_url`` (paths are prefixed with its path)."""
        host, port, prefix = split_url(base_url)
        return cls(port, host, prefix)

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read the whole response: ``(status, body)``."""
        head = (f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        header, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            rest += chunk
        self.buf = rest[length:]
        return int(header[9:12]), rest[:length]

    def json(self, method: str, path: str, payload=None):
        """Request with a JSON body (or none); asserts 200 and returns the decoded body."""
        status, body = self.request(method, path, b"" if payload is None else json.dumps(payload).encode())
        if status != 200:
            raise AssertionError(f"{method} {path} -> {status}: {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.sock.close()


async def _async_request(reader, writer, request: bytes) -> int:
    writer.write(request)
    header = await reader.readuntil(b"\r\n\r\n")
    length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return int(header[9:12])


def throughput(port: int, requests_per_conn: list[list[bytes]],
               host: str = "127.0.0.1") -> tuple[float, list[float]]:
    """Run each connection's requests back to back, all connections at once.

    Returns (elapsed seconds, per-request latencies). A non-200 answer fails.
    """
    latencies: list[float] = []

    async def worker(requests: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
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


def post(path: str, payload) -> bytes:
    """A raw POST request with a JSON body."""
    body = json.dumps(payload).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    """A raw GET request."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by rank, no interpolation."""
    data = sorted(values)
    return data[min(len(data) - 1, int(len(data) * q))]


def listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:``port`` (Linux ``/proc``): one per ready worker.

    ``kato serve --workers N`` answers /health as soon as one worker is up; a client
    that connects before every worker listens would put all its connections on the
    first one.
    """
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as fh:
        return sum(1 for line in fh.readlines()[1:] if line.split()[1] == wanted and line.split()[3] == "0A")


def listening_pids(port: int) -> list[int]:
    """Processes holding a socket that listens on ``port`` (Linux ``/proc``): the server workers."""
    wanted = f":{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids`` (those still alive)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(data_dir: Path, port: int | None = None, env: dict[str, str] | None = None,
          timeout: float = 60.0, workers: int = 1) -> Iterator[int]:
    """Run ``kato serve`` on 127.0.0.1 (embedded storage in ``data_dir``, ``workers`` processes).

    Yields the port once ``/health`` answers; terminates the server on exit.
    """
    port = port or free_port()
    environ = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir)]
    if workers != 1:
        command += ["--workers", str(workers)]
    proc = subprocess.Popen(command, cwd=ROOT, env=environ)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = Connection(port)
                conn.json("GET", "/health")
                conn.close()
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        while listeners(port) < workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"only {listeners(port)} of {workers} workers listen on port {port}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
