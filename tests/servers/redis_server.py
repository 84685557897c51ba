"""Run a real ``redis-server`` (Debian's package) on a free 127.0.0.1 port.

The server keeps an append-only file in its own directory (``appendfsync
always`` by default), so stopping and starting it again on the same directory —
what the outage tests do — keeps every write acknowledged before the stop. The
benchmarks pass ``fsync="everysec"``, the setting of docker-compose.yml. A missing
``redis-server`` binary is an error (scripts/test.sh installs it), never a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server child process; ``url`` is its ``redis://`` address."""

    def __init__(self, directory: Path, port: int | None = None, fsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)")
        self.binary = binary
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.fsync = fsync
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 15.0) -> None:
        """Start (again) on the same port and directory; returns once it answers PING."""
        log = open(self.directory / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "", "--protected-mode", "yes",
             "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        """True when the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Run one command through redis-cli (test helper); returns its raw output."""
        return subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), *args],
                              check=True, capture_output=True, timeout=10).stdout

    def stop(self) -> None:
        """Graceful stop (SIGTERM: the AOF is complete), kill after 10 s; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
