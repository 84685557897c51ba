"""Faults of the real backends mid-run: 503 naming the backend, /health says so, nothing
half-written, recovery without a restart; and a graceful stop keeps every acknowledged write.

The backends are the real ones the fixtures start: redis-server is killed with
SIGKILL while learns run and started again on its directory; the ClickHouse HTTP
server (the real engine, tests/servers/clickhouse_http.py) is stopped while learns
run and started again on its data; the vector store's client is closed and its
folder locked by another client, then let go. No store is mocked.

"Never half-written" is checked on the stores themselves: every learn a client
attempted has a name known in advance; afterwards each is either absent
everywhere or present with frequency 1 and its symbols counted, a learn answered
200 is always present, the shared symbol's count equals the number of present
patterns, and a fresh process rebuilt from the stores sees exactly the same.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from litestar.testing import TestClient
from qdrant_client import QdrantClient

from engine.observation import pattern_hash
from tests.conftest import ClickHouseHttp, ServerProcess
from tests.servers.redis_server import RedisServer
from web.app import create_app
from web.settings import Settings

LEARNERS = 12


@pytest.fixture
def stack(tmp_path):
    """Redis and a ClickHouse HTTP server of this test's own (so the test may break them), and
    ``start()`` for ``kato serve`` processes on them (KATO_STORAGE=external)."""
    redis = RedisServer(tmp_path / "redis")
    state = SimpleNamespace(redis=redis, clickhouse=None, started=[])
    (tmp_path / "clickhouse").mkdir()
    try:
        state.clickhouse = ClickHouseHttp(tmp_path / "clickhouse" / "data")
        database = f"kato_{uuid.uuid4().hex[:10]}"

        def start(name: str, **extra: str) -> ServerProcess:
            env = {"REDIS_URL": redis.url, "CLICKHOUSE_HOST": "127.0.0.1",
                   "CLICKHOUSE_PORT": str(state.clickhouse.port), "CLICKHOUSE_DB": database,
                   "KATO_QDRANT_PATH": str(tmp_path / f"qdrant-{name}"), **extra}
            proc = ServerProcess(tmp_path / f"data-{name}", env)
            state.started.append(proc)
            return proc

        def restart_clickhouse() -> None:
            port = state.clickhouse.port
            state.clickhouse = ClickHouseHttp(tmp_path / "clickhouse" / "data", port=port)

        state.start = start
        state.restart_clickhouse = restart_clickhouse
        yield state
    finally:
        for proc in state.started:
            proc.stop()
        if state.clickhouse is not None:
            state.clickhouse.stop()
        redis.stop()


def _events(tag: int, i: int) -> list[list[str]]:
    return [[f"u{tag}-{i}"], ["common"]]


async def _learn_until(base_url: str, stop: asyncio.Event, attempts: list) -> None:
    """LEARNERS clients, each learning patterns of its own (one atomic request each) until ``stop``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        async def learner(tag: int) -> None:
            sid = (await http.post("/sessions", json={"node_id": "faults"})).json()["session_id"]
            i = 0
            while not stop.is_set():
                events = _events(tag, i)
                body = {"observations": [{"strings": ev} for ev in events], "learn_at_end": True}
                try:
                    resp = await http.post(f"/sessions/{sid}/observe-sequence", json=body)
                    attempts.append((events, resp.status_code, resp.text))
                except httpx.TransportError as exc:
                    attempts.append((events, 0, repr(exc)))
                i += 1
                await asyncio.sleep(0.01)

        await asyncio.gather(*(learner(tag) for tag in range(LEARNERS)))


def _run_with_fault(base_url: str, fault: Callable[[], None], repair: Callable[[], None],
                    during: Callable[[], None]) -> list:
    """Learners run; ``fault`` breaks a backend, ``during`` checks the outage, ``repair`` ends it."""
    attempts: list = []

    async def main() -> None:
        stop = asyncio.Event()
        learning = asyncio.create_task(_learn_until(base_url, stop, attempts))
        await asyncio.sleep(0.6)
        fault()
        await asyncio.sleep(0.4)
        await asyncio.to_thread(during)
        repair()
        await asyncio.to_thread(_wait_healthy, base_url)
        await asyncio.sleep(0.5)   # learns succeed again
        stop.set()
        await learning

    asyncio.run(main())
    return attempts


def _wait_healthy(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{base_url}/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover without a restart"
        time.sleep(0.1)


def _view(base_url: str, attempts: list) -> dict:
    """What a server shows of every attempted pattern, and the symbol counts."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        params = {"node_id": "faults"}
        patterns = {}
        for events, _, _ in attempts:
            name = pattern_hash(events)
            patterns[name] = http.get(f"/pattern/{name}", params=params).json()["pattern"]
        return {"patterns": patterns, "stats": http.get("/symbols/stats", params=params).json()["symbols"]}


def _assert_whole(attempts: list, view: dict, backend: str) -> None:
    codes = {code for _, code, _ in attempts}
    assert codes <= {200, 503}, [a for a in attempts if a[1] not in (200, 503)][:3]
    assert 503 in codes and 200 in codes, "the outage was not seen, or nothing succeeded"
    for _, code, text in attempts:
        if code == 503:
            assert backend in text.lower(), text
    present = 0
    for events, code, _ in attempts:
        found = view["patterns"][pattern_hash(events)]
        if code == 200:
            assert found["status"] == "okay", events   # acknowledged: it landed
        if found["status"] == "okay":                    # landed (even if the answer was lost): fully
            present += 1
            assert found["pattern"]["frequency"] == 1 and found["pattern"]["pattern_data"] == events
            assert view["stats"][events[0][0]]["frequency"] == 1
        else:
            assert events[0][0] not in view["stats"]   # absent: not even its symbol was counted
    assert view["stats"]["common"]["frequency"] == present


def test_redis_killed_mid_run_answers_503_and_nothing_is_half_written(stack):
    a = stack.start("a")

    def during() -> None:
        health = httpx.get(f"{a.base_url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert any("redis" in issue for issue in health.json()["issues"])
        resp = httpx.post(f"{a.base_url}/sessions", json={"node_id": "faults"}, timeout=10)
        assert resp.status_code == 503 and resp.json() == {"detail": resp.json()["detail"]}
        assert resp.json()["detail"].startswith("redis unavailable")

    attempts = _run_with_fault(a.base_url, fault=lambda: (stack.redis.proc.kill(), stack.redis.proc.wait()),
                               repair=stack.redis.start, during=during)
    assert a.proc.poll() is None   # the server never went down
    view = _view(a.base_url, attempts)
    _assert_whole(attempts, view, "redis")
    assert _view(stack.start("b").base_url, attempts) == view   # the stores hold exactly that


def test_clickhouse_stopped_mid_run_answers_503_and_nothing_is_half_written(stack):
    a = stack.start("a")

    def during() -> None:
        health = httpx.get(f"{a.base_url}/health", timeout=30)
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert health.json()["backends"]["clickhouse"]["ok"] is False
        with httpx.Client(base_url=a.base_url, timeout=30) as http:   # strings of known patterns still work
            sid = http.post("/sessions", json={"node_id": "faults"}).json()["session_id"]
            assert http.post(f"/sessions/{sid}/observe", json={"strings": ["u0-0"]}).status_code == 200
            assert http.get(f"/sessions/{sid}/predictions").status_code == 200

    attempts = _run_with_fault(a.base_url, fault=stack.clickhouse.stop, repair=stack.restart_clickhouse,
                               during=during)
    assert a.proc.poll() is None
    view = _view(a.base_url, attempts)
    _assert_whole(attempts, view, "clickhouse")
    assert _view(stack.start("b").base_url, attempts) == view


def test_vector_store_failure_is_503_naming_it_and_recovers(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), log_level="WARNING")
    with TestClient(create_app(settings)) as http:
        store = http.app.state.kato.stores.vectors
        sid = http.post("/sessions", json={"node_id": "vec"}).json()["session_id"]
        for body in ({"strings": ["a"], "vectors": [[1.0, 0.0]]}, {"strings": ["b"]}):
            assert http.post(f"/sessions/{sid}/observe", json=body).status_code == 200
        assert http.post(f"/sessions/{sid}/learn").status_code == 200

        # The fault: the client is closed and another client takes the folder, so it cannot reopen.
        store.client.close()
        intruder = QdrantClient(path=str(tmp_path / "data" / "qdrant"))
        try:
            for body in ({"strings": ["c"], "vectors": [[1.0, 0.1]]}, {"strings": ["d"]}):
                resp = http.post(f"/sessions/{sid}/observe", json=body)
                if "vectors" in body:
                    assert resp.status_code == 503 and resp.json()["detail"].startswith("qdrant_local unavailable")
                else:
                    assert resp.status_code == 200   # strings keep working (api.md §2.5.2: degraded)
            health = http.get("/health").json()
            assert health["status"] == "degraded" and health["backends"]["qdrant_local"]["ok"] is False
            assert any(issue.startswith("qdrant_local (vectors) unavailable") for issue in health["issues"])
            sid2 = http.post("/sessions", json={"node_id": "vec"}).json()["session_id"]
            for body in ({"strings": ["e"], "vectors": []}, {"strings": ["f"]}):
                http.post(f"/sessions/{sid2}/observe", json=body)
            assert http.post(f"/sessions/{sid2}/learn").status_code == 200   # a learn without vectors lands
        finally:
            intruder.close()

        # Recovered without a restart: the folder opens again, vectors are searched and learned.
        assert http.get("/health").json()["status"] == "healthy"
        resp = http.post(f"/sessions/{sid}/observe", json={"strings": ["c"], "vectors": [[1.0, 0.1]]})
        assert resp.status_code == 200
        assert http.post(f"/sessions/{sid}/learn").status_code == 200
        stm = http.post(f"/sessions/{sid}/observe", json={"vectors": [[1.0, 0.05]]})
        assert stm.status_code == 200
        event = http.get(f"/sessions/{sid}/stm").json()["stm"][-1]
        assert len(event) == 1 + 2   # its own vector symbol plus both stored vectors as neighbours


def test_a_vector_server_that_cannot_be_reached_is_503_naming_qdrant(redis_server, chdb_path, tmp_path):
    from tests.servers.redis_server import free_port

    redis_server.command("-n", "7", "FLUSHDB")
    settings = Settings(storage="external", data_dir=str(tmp_path / "data"), log_level="WARNING",
                        redis_url=redis_server.url.rsplit("/", 1)[0] + "/7", clickhouse_chdb_path=chdb_path,
                        clickhouse_db=f"kato_{uuid.uuid4().hex[:8]}", qdrant_host="127.0.0.1", qdrant_port=free_port())
    with TestClient(create_app(settings)) as http:
        sid = http.post("/sessions", json={"node_id": "q"}).json()["session_id"]
        assert http.post(f"/sessions/{sid}/observe", json={"strings": ["a", "b"]}).status_code == 200
        assert http.post(f"/sessions/{sid}/learn").status_code == 200
        resp = http.post(f"/sessions/{sid}/observe", json={"vectors": [[1.0, 2.0]]})
        assert resp.status_code == 503 and resp.json()["detail"].startswith("qdrant unavailable"), resp.text
        assert http.get(f"/sessions/{sid}/stm").json()["length"] == 0   # refused whole
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["backends"]["qdrant"]["ok"] is False


def test_sigterm_finishes_in_flight_learns_and_every_acknowledged_one_survives(stack):
    a = stack.start("a", LOG_LEVEL="INFO")
    results: list = []
    signalled: list[float] = []

    async def main() -> None:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=a.base_url, timeout=60, limits=limits) as http:
            sids = [(await http.post("/sessions", json={"node_id": "faults"})).json()["session_id"]
                    for _ in range(64)]

            async def one(k: int) -> None:
                events = _events(100 + k, 0)
                body = {"observations": [{"strings": ev} for ev in events], "learn_at_end": True}
                try:
                    resp = await http.post(f"/sessions/{sids[k]}/observe-sequence", json=body)
                    results.append((events, resp.status_code, resp.text, time.monotonic()))
                except httpx.TransportError as exc:
                    results.append((events, 0, repr(exc), time.monotonic()))

            async def terminate() -> None:
                while not results:           # the first learn answered: the others are in flight
                    await asyncio.sleep(0.001)
                signalled.append(time.monotonic())
                os.kill(a.proc.pid, signal.SIGTERM)

            await asyncio.gather(terminate(), *(one(k) for k in range(64)))

    asyncio.run(main())
    # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean exit here;
    # "kato stopped" is logged once the lifespan flushed and closed every store.
    assert a.proc.wait(30) in (0, -signal.SIGTERM)
    assert b'"msg":"kato stopped"' in a.log_path.read_bytes()
    codes = [code for _, code, _, _ in results]
    assert set(codes) <= {200, 0}, [r for r in results if r[1] not in (200, 0)][:3]
    assert any(code == 200 and at > signalled[0] for _, code, _, at in results), "no learn was in flight"
    b = stack.start("b")
    view = _view(b.base_url, [(events, code, text) for events, code, text, _ in results])
    for events, code, _, _ in results:
        found = view["patterns"][pattern_hash(events)]
        if code == 200:
            assert found["status"] == "okay" and found["pattern"]["frequency"] == 1, events
    present = sum(1 for found in view["patterns"].values() if found["status"] == "okay")
    assert view["stats"]["common"]["frequency"] == present


def test_clickhouse_over_http_serves_concurrent_calls(redis_server, clickhouse_http):
    """Inserts, reads and /health pings reach one client at once (found as spurious 503s under load)."""
    from storage.factory import open_external_stores

    settings = Settings(storage="external", redis_url=redis_server.url, clickhouse_host="127.0.0.1",
                        clickhouse_port=clickhouse_http.port, clickhouse_db=f"conc_{uuid.uuid4().hex[:8]}",
                        qdrant_path=None, qdrant_host="127.0.0.1")
    stores = open_external_stores(settings)
    rows = stores.patterns.rows

    async def main() -> list:
        await rows.open()
        calls = [rows.count("kb") for _ in range(12)] + [rows.ping() for _ in range(12)]
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await stores.close()

    results = asyncio.run(main())
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert all(r.ok for r in results[12:]) and results[:12] == [0] * 12
