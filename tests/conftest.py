"""Shared fixtures: the app through Litestar's test client, and real servers on loopback.

``client`` builds ``create_app`` on a fresh embedded data directory. ``server``
starts ``kato serve`` (the console entry's code path) as a child process on a
free 127.0.0.1 port and always stops it; ``start_server`` does the same for tests
that restart a server on one data directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A ``kato serve`` child process on 127.0.0.1."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        environ = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), **(env or {})}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(data_dir)],
            cwd=ROOT, env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then kill after 10 s; idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def settings(tmp_path):
    """Embedded settings on a fresh data directory."""
    from web.settings import Settings

    return Settings(data_dir=str(tmp_path / "data"), log_level="WARNING")


@pytest.fixture
def client(settings):
    """Litestar TestClient over ``create_app(settings)`` (lifespan run)."""
    from litestar.testing import TestClient

    from web.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def session(client) -> Callable[..., str]:
    """Create a session on ``client``; returns its id."""

    def make(node_id: str = "node-a", **body) -> str:
        resp = client.post("/sessions", json={"node_id": node_id, **body})
        assert resp.status_code == 200, resp.text
        return resp.json()["session_id"]

    return make


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    """One real server for the module-independent HTTP tests."""
    proc = ServerProcess(tmp_path_factory.mktemp("server") / "data")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def start_server(tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers on demand (same data dir across calls); all stopped at teardown."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(tmp_path / "data", env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# --------------------------------------------------------------- server backends
# Real components started from the project's own scripts (tests/servers/): a
# missing binary or package is a test error, never a skip.


class _ShimServer:
    """A test server of ``tests/servers/`` as a child process on 127.0.0.1, up once ``ping`` answers 200."""

    module: str
    ping: str

    def __init__(self, path: Path, port: int | None = None, *args: str) -> None:
        from tests.servers.redis_server import free_port

        name = self.module.rsplit(".", 1)[-1]
        self.port = port or free_port()   # a port of its own, or the port of one stopped before (restart)
        self.log_path = path.parent / f"{name}-{self.port}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--path", str(path), "--port", str(self.port), *args],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} test server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{self.ping}", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} test server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class ClickHouseHttp(_ShimServer):
    """``tests/servers/clickhouse_http.py``: ClickHouse over HTTP on the real engine (chdb)."""

    module, ping = "tests.servers.clickhouse_http", "/ping"


class QdrantHttp(_ShimServer):
    """``tests/servers/qdrant_http.py``: Qdrant's REST API on qdrant-client's own engine."""

    module, ping = "tests.servers.qdrant_http", "/healthz"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the in-process storage tests (tests pick their own DB number)."""
    from tests.servers.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory) -> str:
    """The data path of the in-process ClickHouse engine (chdb allows one path per process)."""
    return str(tmp_path_factory.mktemp("chdb") / "data")


@pytest.fixture(scope="session")
def clickhouse_http(tmp_path_factory):
    """ClickHouse's HTTP interface over the real engine, shared by server processes."""
    server = ClickHouseHttp(tmp_path_factory.mktemp("clickhouse-http") / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def qdrant_http(tmp_path):
    """Qdrant's REST API, shared by server processes (one per test: collections are per kb_id)."""
    server = QdrantHttp(tmp_path / "qdrant-http")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aio():
    """One event loop for a whole test (stores bind their connection pools to it)."""
    import asyncio

    with asyncio.Runner() as runner:
        yield runner
