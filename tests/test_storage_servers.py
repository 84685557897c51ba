"""Several real ``kato serve`` processes on one Redis + ClickHouse (KATO_STORAGE=external).

The components are real and started by the project's scripts: a redis-server per
test (so a test may stop it), and one ClickHouse HTTP server over the real engine
(tests/servers/clickhouse_http.py) with a fresh database per test. Each server
process has its own qdrant-client local-mode folder; vectors shared through one
Qdrant are tested in tests/test_vectors_shared.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import ServerProcess


@pytest.fixture
def cluster(tmp_path, clickhouse_http):
    from tests.servers.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis")
    database = f"kato_{uuid.uuid4().hex[:10]}"
    started: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        env = {"REDIS_URL": redis.url, "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(clickhouse_http.port),
               "CLICKHOUSE_DB": database, "KATO_QDRANT_PATH": str(tmp_path / f"qdrant-{name}")}
        proc = ServerProcess(tmp_path / f"data-{name}", env)
        started.append(proc)
        return proc

    try:
        yield SimpleNamespace(redis=redis, start=start)
    finally:
        for proc in started:
            proc.stop()
        redis.stop()


def _learn(http: httpx.Client, sid: str, events: list[list[str]], emotives: dict | None = None,
           metadata: dict | None = None) -> str:
    for strings in events:
        body: dict = {"strings": strings}
        if emotives:
            body["emotives"] = emotives
        if metadata:
            body["metadata"] = metadata
        assert http.post(f"/sessions/{sid}/observe", json=body).status_code == 200
    resp = http.post(f"/sessions/{sid}/learn")
    assert resp.status_code == 200, resp.text
    return resp.json()["pattern_name"]


def _session(http: httpx.Client, node: str) -> str:
    resp = http.post("/sessions", json={"node_id": node})
    assert resp.status_code == 200, resp.text
    return resp.json()["session_id"]


def _predict(http: httpx.Client, node: str, events: list[list[str]]) -> list[dict]:
    sid = _session(http, node)
    for strings in events:
        http.post(f"/sessions/{sid}/observe", json={"strings": strings})
    return http.get(f"/sessions/{sid}/predictions").json()["predictions"]


def test_a_pattern_learned_through_one_process_is_predicted_by_the_other_at_once(cluster):
    a, b = cluster.start("a"), cluster.start("b")
    with httpx.Client(base_url=a.base_url, timeout=30) as ha, httpx.Client(base_url=b.base_url, timeout=30) as hb:
        assert _predict(hb, "shared", [["hello"], ["world"]]) == []   # b holds the (empty) KB already
        name = _learn(ha, _session(ha, "shared"), [["hello"], ["world"], ["foo", "bar"]])
        # No wait: b applies a's learn before serving its next request (read-your-writes).
        preds = _predict(hb, "shared", [["hello"], ["world"]])
        assert [p["name"] for p in preds] == [name[len("PTRN|"):]]
        assert preds[0]["future"] == [["bar", "foo"]]
        # ... and a pattern learned through b is seen by a, counters included.
        assert _learn(hb, _session(hb, "shared"), [["hello"], ["world"], ["foo", "bar"]]) == name
        pattern = ha.get(f"/pattern/{name}", params={"node_id": "shared"}).json()
        assert pattern["pattern"]["pattern"]["frequency"] == 2


def test_frequencies_add_up_exactly_under_concurrent_relearning_from_both(cluster):
    a, b = cluster.start("a"), cluster.start("b")
    rounds, sessions = 6, 4   # per process: 4 sessions x 6 learns, all concurrent

    async def hammer(base_url: str, tag: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            async def one(k: int) -> None:
                sid = (await http.post("/sessions", json={"node_id": "hot"})).json()["session_id"]
                for r in range(rounds):
                    for strings in (["x"], ["y"], ["z"]):
                        resp = await http.post(f"/sessions/{sid}/observe", json={
                            "strings": strings, "emotives": {"joy": tag + k / 10 + r / 100},
                            "metadata": {"who": f"{tag}-{k}"}})
                        assert resp.status_code == 200, resp.text
                    resp = await http.post(f"/sessions/{sid}/learn")
                    assert resp.status_code == 200, resp.text

            await asyncio.gather(*(one(k) for k in range(sessions)))

    async def both() -> None:
        await asyncio.gather(hammer(a.base_url, 1), hammer(b.base_url, 2))

    asyncio.run(both())
    views = []
    for proc in (a, b):
        with httpx.Client(base_url=proc.base_url, timeout=30) as http:
            sid = _session(http, "hot")
            for strings in (["x"], ["y"], ["z"]):
                http.post(f"/sessions/{sid}/observe", json={"strings": strings})
            name = http.post(f"/sessions/{sid}/learn").json()["pattern_name"]  # one more learn each
            views.append(http.get(f"/pattern/{name}", params={"node_id": "hot"}).json())
    # b's learn came last: a sees it on its next request, so read both views again now.
    final = []
    for proc in (a, b):
        with httpx.Client(base_url=proc.base_url, timeout=30) as http:
            final.append({
                "pattern": http.get(f"/pattern/{name}", params={"node_id": "hot"}).json()["pattern"],
                "stats": http.get("/symbols/stats", params={"node_id": "hot"}).json()["symbols"],
                "affinity": http.get("/symbols/affinity", params={"node_id": "hot"}).json()["affinities"]})
    assert final[0]["pattern"]["pattern"]["frequency"] == 2 * rounds * sessions + 2
    assert final[0] == final[1]   # same frequency, emotive window (order too), metadata, affinity sums
    assert final[0]["stats"]["x"]["frequency"] == 2 * rounds * sessions + 2
    assert sorted(final[0]["pattern"]["pattern"]["metadata"]["who"]) == sorted(
        f"{t}-{k}" for t in (1, 2) for k in range(sessions))


def test_auto_learns_inside_observes_of_both_processes_add_up(cluster):
    """An observe that reaches max_pattern_length learns inside the request (engine.md
    §2.5); concurrent ones through both processes commit every learn exactly once, and
    the observe that learned answers with the pattern's name."""
    a, b = cluster.start("a"), cluster.start("b")
    sessions, rounds = 4, 5

    async def hammer(base_url: str) -> list[str]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            async def one() -> list[str]:
                resp = await http.post("/sessions", json={"node_id": "auto", "config": {"max_pattern_length": 2}})
                sid = resp.json()["session_id"]
                names = []
                for _ in range(rounds):
                    for strings in (["p"], ["q"]):
                        resp = await http.post(f"/sessions/{sid}/observe", json={"strings": strings})
                        assert resp.status_code == 200, resp.text
                    names.append(resp.json()["auto_learned_pattern"])
                return names

            return [name for names in await asyncio.gather(*(one() for _ in range(sessions))) for name in names]

    async def both() -> list[str]:
        return [name for names in await asyncio.gather(hammer(a.base_url), hammer(b.base_url)) for name in names]

    names = asyncio.run(both())
    assert len(set(names)) == 1 and names[0].startswith("PTRN|")
    for proc in (a, b):
        with httpx.Client(base_url=proc.base_url, timeout=30) as http:
            pattern = http.get(f"/pattern/{names[0]}", params={"node_id": "auto"}).json()["pattern"]["pattern"]
            assert pattern["frequency"] == 2 * sessions * rounds


def test_restart_keeps_patterns_statistics_and_live_sessions(cluster):
    a = cluster.start("a")
    with httpx.Client(base_url=a.base_url, timeout=30) as http:
        sid = _session(http, "durable")
        names = [_learn(http, sid, [["a"], [f"b{i}"], ["c"]], emotives={"joy": float(i)}, metadata={"i": i})
                 for i in range(4)]
        names.append(_learn(http, sid, [["a"], ["b0"], ["c"]], emotives={"joy": 9.0}))   # re-learn
        assert http.post(f"/sessions/{sid}/finalize-training").status_code == 200
        http.post(f"/sessions/{sid}/observe", json={"strings": ["a"]})
        http.post(f"/sessions/{sid}/observe", json={"strings": ["b3"]})
        before = http.get(f"/sessions/{sid}/predictions").json()["predictions"]
        patterns = [http.get(f"/pattern/{n}", params={"node_id": "durable"}).json() for n in names]
        affinity = http.get("/symbols/affinity", params={"node_id": "durable"}).json()
        stm = http.get(f"/sessions/{sid}/stm").json()
    a.stop()
    b = cluster.start("b")
    with httpx.Client(base_url=b.base_url, timeout=30) as http:
        assert http.get(f"/sessions/{sid}/stm").json() == stm   # the session survived the restart
        assert http.get(f"/sessions/{sid}/predictions").json()["predictions"] == before
        assert [http.get(f"/pattern/{n}", params={"node_id": "durable"}).json() for n in names] == patterns
        assert patterns[0]["pattern"]["pattern"]["frequency"] == 2
        assert http.get("/symbols/affinity", params={"node_id": "durable"}).json() == affinity
        assert _learn(http, _session(http, "durable"), [["a"], ["b1"], ["c"]]) == names[1]
        assert http.get(f"/pattern/{names[1]}", params={"node_id": "durable"}).json()["pattern"]["pattern"][
            "frequency"] == 2


def test_redis_outage_answers_503_naming_redis_and_recovers_without_losing_a_learn(cluster):
    a = cluster.start("a")
    with httpx.Client(base_url=a.base_url, timeout=30) as http:
        sid = _session(http, "outage")
        first = _learn(http, sid, [["p"], ["q"]])
        http.post(f"/sessions/{sid}/observe", json={"strings": ["p"]})
        cluster.redis.stop()
        for resp in (http.post(f"/sessions/{sid}/observe", json={"strings": ["q"]}),
                     http.post(f"/sessions/{sid}/learn"),
                     http.post("/sessions", json={"node_id": "outage"}),
                     http.get(f"/sessions/{sid}/predictions")):
            assert resp.status_code == 503, resp.text
            assert "redis" in resp.text.lower()
        health = http.get("/health")
        assert health.status_code == 503 and "redis" in health.text
        assert a.proc.poll() is None   # no crash
        cluster.redis.start()
        deadline = time.monotonic() + 15
        while http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "service did not recover after Redis returned"
            time.sleep(0.1)
        # The session (STM included) and the learned pattern are intact; learning resumes.
        assert http.get(f"/sessions/{sid}/stm").json()["stm"] == [["p"]]
        second = _learn(http, sid, [["r"]])
        assert http.get(f"/pattern/{first}", params={"node_id": "outage"}).json()["pattern"]["pattern"][
            "frequency"] == 1
        assert http.get(f"/pattern/{second}", params={"node_id": "outage"}).json()["pattern"]["status"] == "okay"
    a.stop()
    b = cluster.start("b")   # and a fresh process rebuilds both from the stores
    with httpx.Client(base_url=b.base_url, timeout=30) as http:
        for name in (first, second):
            assert http.get(f"/pattern/{name}", params={"node_id": "outage"}).json()["pattern"]["status"] == "okay"
