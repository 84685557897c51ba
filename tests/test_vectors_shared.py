"""Vectors shared by several ``kato serve`` processes through one Qdrant (KATO_STORAGE=external).

Real components from the project's scripts: a redis-server, ClickHouse's HTTP
interface over the real engine, and Qdrant's REST API over qdrant-client's own
engine (tests/servers/qdrant_http.py), so the server mode of storage/qdrant.py
talks HTTP exactly as to a Qdrant server.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import ServerProcess


@pytest.fixture
def pair(tmp_path, clickhouse_http, qdrant_http):
    from tests.servers.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis")
    env = {"REDIS_URL": redis.url, "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(clickhouse_http.port),
           "CLICKHOUSE_DB": f"kato_{uuid.uuid4().hex[:10]}", "QDRANT_HOST": "127.0.0.1",
           "QDRANT_PORT": str(qdrant_http.port)}
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            started.append(ServerProcess(tmp_path / f"data-{name}", env))
        yield started
    finally:
        for proc in started:
            proc.stop()
        redis.stop()


def _session(http: httpx.Client) -> str:
    resp = http.post("/sessions", json={"node_id": "vec"})
    assert resp.status_code == 200, resp.text
    return resp.json()["session_id"]


def _observe(http: httpx.Client, sid: str, body: dict) -> None:
    resp = http.post(f"/sessions/{sid}/observe", json=body)
    assert resp.status_code == 200, resp.text


def test_a_vector_learned_through_one_process_is_a_neighbour_in_the_other(pair):
    a, b = pair
    with httpx.Client(base_url=a.base_url, timeout=30) as ha, httpx.Client(base_url=b.base_url, timeout=30) as hb:
        sid = _session(ha)
        _observe(ha, sid, {"strings": ["start"], "vectors": [[1.0, 0.0, 0.0]]})
        _observe(ha, sid, {"strings": ["end"]})
        learned = ha.post(f"/sessions/{sid}/learn").json()["pattern_name"]
        stored = ha.get(f"/pattern/{learned}", params={"node_id": "vec"}).json()["pattern"]["pattern"]
        vector_symbol = next(s for s in stored["pattern_data"][0] if s.startswith("VCTR|"))

        other = _session(hb)
        _observe(hb, other, {"vectors": [[0.9, 0.0, 0.0]]})
        event = hb.get(f"/sessions/{other}/stm").json()["stm"][-1]
        assert vector_symbol in event   # a's vector found by b's nearest-neighbour search
        preds = hb.get(f"/sessions/{other}/predictions").json()["predictions"]
        assert [p["name"] for p in preds] == [learned[len("PTRN|"):]]
        assert preds[0]["future"] == [["end"]]

        # clear-all through b drops the shared collection; a recreates it on its next vector.
        node = hb.get(f"/sessions/{other}").json()["node_id"]
        assert node == "vec"
        assert hb.post(f"/sessions/{other}/clear-all").status_code == 200
        again = _session(ha)
        _observe(ha, again, {"vectors": [[0.0, 1.0]]})   # a new dimension after the clear
        _observe(ha, again, {"strings": ["next"]})
        assert ha.post(f"/sessions/{again}/learn").status_code == 200   # learning indexes the vector
        _observe(hb, other, {"vectors": [[0.0, 0.9]]})
        event = hb.get(f"/sessions/{other}/stm").json()["stm"][-1]
        assert len(event) == 2 and event[0] != event[1]   # its own symbol plus a's vector
