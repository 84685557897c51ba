"""Through a real ``kato serve`` process on a loopback port: the README walk-through,
restart durability, concurrency and the WebSocket events."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx


def walkthrough(base_url: str) -> dict:
    """The README's curl walk-through: create -> observe x3 -> learn -> observe -> predictions."""
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        sid = http.post("/sessions", json={"node_id": "walkthrough"}).json()["session_id"]
        for strings in (["hello"], ["world"], ["foo", "bar"]):
            assert http.post(f"/sessions/{sid}/observe", json={"strings": strings}).status_code == 200
        learned = http.post(f"/sessions/{sid}/learn").json()
        assert http.post(f"/sessions/{sid}/observe", json={"strings": ["hello"]}).status_code == 200
        predictions = http.get(f"/sessions/{sid}/predictions").json()
        return {"session_id": sid, "learned": learned, "predictions": predictions}


def test_walkthrough_over_http(server):
    out = walkthrough(server.base_url)
    expected = hashlib.sha1(str([["hello"], ["world"], ["bar", "foo"]]).encode()).hexdigest()
    assert out["learned"]["pattern_name"] == f"PTRN|{expected}"
    preds = out["predictions"]["predictions"]
    assert out["predictions"]["count"] == 1
    assert preds[0]["present"] == ["hello"] and preds[0]["future"] == ["world", "bar", "foo"]


def test_walkthrough_through_test_client(client):
    sid = client.post("/sessions", json={"node_id": "walkthrough"}).json()["session_id"]
    for strings in (["hello"], ["world"], ["foo", "bar"]):
        client.post(f"/sessions/{sid}/observe", json={"strings": strings})
    client.post(f"/sessions/{sid}/learn")
    client.post(f"/sessions/{sid}/observe", json={"strings": ["hello"]})
    preds = client.get(f"/sessions/{sid}/predictions").json()["predictions"]
    assert preds[0]["future"] == ["world", "bar", "foo"]


def test_restart_keeps_every_pattern(start_server):
    first = start_server()
    with httpx.Client(base_url=first.base_url, timeout=10.0) as http:
        sid = http.post("/sessions", json={"node_id": "durable"}).json()["session_id"]
        names = []
        for i in range(5):
            for strings in (["a"], [f"b{i}"], ["c"]):
                http.post(f"/sessions/{sid}/observe", json={"strings": strings, "emotives": {"joy": float(i)}})
            names.append(http.post(f"/sessions/{sid}/learn").json()["pattern_name"])
        for strings in (["a"], ["b0"], ["c"]):  # re-learn: frequency 2
            http.post(f"/sessions/{sid}/observe", json={"strings": strings})
        http.post(f"/sessions/{sid}/learn")
        http.post(f"/sessions/{sid}/observe", json={"strings": ["a"]})
        http.post(f"/sessions/{sid}/observe", json={"strings": ["b3"]})
        before = http.get(f"/sessions/{sid}/predictions").json()["predictions"]
        patterns_before = [http.get(f"/pattern/{n[5:]}", params={"node_id": "durable"}).json() for n in names]
    first.stop()
    second = start_server()
    with httpx.Client(base_url=second.base_url, timeout=10.0) as http:
        assert http.get(f"/sessions/{sid}").status_code == 404  # sessions are in-process by design
        patterns_after = [http.get(f"/pattern/{n[5:]}", params={"node_id": "durable"}).json() for n in names]
        assert patterns_after == patterns_before
        assert patterns_after[0]["pattern"]["pattern"]["frequency"] == 2
        sid2 = http.post("/sessions", json={"node_id": "durable"}).json()["session_id"]
        http.post(f"/sessions/{sid2}/observe", json={"strings": ["a"]})
        http.post(f"/sessions/{sid2}/observe", json={"strings": ["b3"]})
        assert http.get(f"/sessions/{sid2}/predictions").json()["predictions"] == before


def test_100_concurrent_observes_lose_none_and_keep_order(server):
    async def run() -> tuple[list[dict], dict]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0,
                                     limits=httpx.Limits(max_connections=100)) as http:
            sid = (await http.post("/sessions", json={"node_id": "concurrent"})).json()["session_id"]
            replies = await asyncio.gather(*[
                http.post(f"/sessions/{sid}/observe", json={"strings": [f"s{i:03d}"]}) for i in range(100)])
            stm = (await http.get(f"/sessions/{sid}/stm")).json()
            return [r.json() | {"sent": f"s{i:03d}", "code": r.status_code} for i, r in enumerate(replies)], stm

    replies, stm = asyncio.run(run())
    assert all(r["code"] == 200 for r in replies)
    assert stm["length"] == 100
    assert sorted(r["time"] for r in replies) == list(range(1, 101))
    for r in replies:  # the n-th applied observe is the n-th event of STM
        assert stm["stm"][r["time"] - 1] == [r["sent"]]
        assert r["stm_length"] == r["time"]


def test_websocket_events(server):
    from websockets.sync.client import connect

    ws_url = server.base_url.replace("http", "ws") + "/ws/events"
    with connect(ws_url, open_timeout=5) as ws:
        snapshot = json.loads(ws.recv(timeout=5))
        assert snapshot["event_type"] == "state.snapshot" and "active_sessions" in snapshot["data"]
        ws.send("ping")
        assert ws.recv(timeout=5) == "pong"
        sid = httpx.post(f"{server.base_url}/sessions", json={"node_id": "events"}).json()["session_id"]
        created = json.loads(ws.recv(timeout=5))
        assert created["event_type"] == "session.created" and created["data"]["session_id"] == sid
        httpx.delete(f"{server.base_url}/sessions/{sid}")
        destroyed = json.loads(ws.recv(timeout=5))
        assert destroyed["event_type"] == "session.destroyed"
        assert destroyed["data"]["reason"] == "explicit_delete" and destroyed["data"]["session_id"] == sid
