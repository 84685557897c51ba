"""Session endpoints through the test client: happy paths and every error (api.md §2.1)."""

from __future__ import annotations

import re
import time

import pytest


def test_create_session_shape(client):
    resp = client.post("/sessions", json={"node_id": "user-alice", "metadata": {"k": 1}})
    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == ["session_id", "node_id", "created_at", "expires_at", "ttl_seconds", "metadata",
                          "session_config"]
    assert re.fullmatch(r"session-[0-9a-f]{32}-\d{13}", body["session_id"])
    assert body["node_id"] == "user-alice" and body["metadata"] == {"k": 1} and body["ttl_seconds"] == 3600
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", body["created_at"])
    assert len(body["session_config"]) == 22
    assert "fuzzy_token_threshold" not in body["session_config"]
    assert resp.headers["x-trace-id"].startswith("kato-")


def test_trace_id_is_echoed(client):
    resp = client.get("/sessions/count", headers={"X-Trace-ID": "abc-123"})
    assert resp.headers["x-trace-id"] == "abc-123"


def test_create_with_config_and_ttl(client):
    resp = client.post("/sessions", json={"node_id": "n", "ttl_seconds": "120",
                                          "config": {"recall_threshold": 1, "stm_mode": "INVALID_MODE",
                                                     "unknown": 5}})
    assert resp.status_code == 200
    body = resp.json()
    assert body["ttl_seconds"] == 120
    assert body["session_config"]["recall_threshold"] == 1  # echoed as stored, not 1.0
    assert body["session_config"]["stm_mode"] == "CLEAR"
    assert "unknown" not in body["session_config"]


@pytest.mark.parametrize("body,loc", [
    ({}, ["body", "node_id"]),
    ({"node_id": 5}, ["body", "node_id"]),
    ({"node_id": ""}, ["body", "node_id"]),
    ({"node_id": "n", "ttl_seconds": -1}, ["body", "ttl_seconds"]),
    ({"node_id": "n", "ttl_seconds": 1.5}, ["body", "ttl_seconds"]),
    ({"node_id": "n", "metadata": []}, ["body", "metadata"]),
    ({"node_id": "n", "config": "x"}, ["body", "config"]),
])
def test_create_validation_errors_name_the_field(client, body, loc):
    resp = client.post("/sessions", json=body)
    assert resp.status_code == 422
    item = resp.json()["detail"][0]
    assert item["loc"] == loc and item["msg"] and "type" in item and "input" in item


def test_create_rejects_non_json_and_missing_body(client):
    assert client.post("/sessions", content=b"{nope").json()["detail"][0]["type"] == "json_invalid"
    resp = client.post("/sessions")
    assert resp.status_code == 422 and resp.json()["detail"][0]["type"] == "missing"


def test_create_invalid_config_is_400_naming_every_key(client):
    resp = client.post("/sessions", json={"node_id": "n", "config": {"persistence": 0, "max_predictions": True}})
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert detail["error"] == "Configuration validation failed"
    assert set(detail["validation_errors"]) == {"persistence", "max_predictions"}


def test_session_info_count_delete(client, session):
    sid = session()
    assert client.get("/sessions/count").json() == {"active_session_count": 1}
    info = client.get(f"/sessions/{sid}").json()
    assert info["session_id"] == sid and 3598 <= info["ttl_seconds"] <= 3600
    resp = client.delete(f"/sessions/{sid}")
    assert resp.status_code == 200 and resp.json() == {"status": "deleted", "session_id": sid}
    assert client.get("/sessions/count").json() == {"active_session_count": 0}
    again = client.delete(f"/sessions/{sid}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "SESSION_NOT_FOUND"
    missing = client.get(f"/sessions/{sid}")
    assert missing.status_code == 404 and missing.json() == {"detail": f"Session {sid} not found or expired"}


def test_exists_never_404(client, session):
    sid = session()
    assert client.get(f"/sessions/{sid}/exists").json() == {"exists": True, "expired": False, "session_id": sid}
    assert client.get("/sessions/nope/exists").json() == {"exists": False, "expired": False, "session_id": "nope"}


def test_expired_session_is_404_saying_so(client, session):
    sid = session(ttl_seconds=1)
    time.sleep(1.2)
    resp = client.post(f"/sessions/{sid}/observe", json={"strings": ["a"]})
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == f"Session {sid} not found or expired"
    assert resp.json()["detail"] == f"Session {sid} not found or expired"
    assert client.get(f"/sessions/{sid}/exists").json() == {"exists": False, "expired": True, "session_id": sid}
    assert client.get("/sessions/count").json()["active_session_count"] == 0


def test_access_slides_the_ttl(client, session):
    sid = session(ttl_seconds=2)
    for _ in range(3):
        time.sleep(0.8)
        assert client.post(f"/sessions/{sid}/observe", json={"strings": ["a"]}).status_code == 200
    assert client.get(f"/sessions/{sid}/stm").status_code == 200


def test_extend(client, session):
    sid = session(ttl_seconds=60)
    resp = client.post(f"/sessions/{sid}/extend?ttl_seconds=600", json={"ttl_seconds": 5})
    assert resp.json() == {"status": "extended", "session_id": sid, "ttl_seconds": 600}
    assert client.get(f"/sessions/{sid}").json()["ttl_seconds"] >= 598
    assert client.post(f"/sessions/{sid}/extend").json()["ttl_seconds"] == 3600
    for bad in ("abc", "1.5", "0"):
        resp = client.post(f"/sessions/{sid}/extend?ttl_seconds={bad}")
        assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", "ttl_seconds"]
    assert client.post("/sessions/nope/extend?ttl_seconds=10").status_code == 404


def test_config_get_and_update(client, session):
    sid = session()
    resp = client.post(f"/sessions/{sid}/config", json={"config": {"use_token_matching": False,
                                                                   "fuzzy_token_threshold": 0.5}})
    assert resp.json() == {"status": "okay", "message": "Configuration updated", "session_id": sid}
    config = client.get(f"/sessions/{sid}/config").json()["config"]
    assert config["use_token_matching"] is False and config["sort_symbols"] is False
    assert config["fuzzy_token_threshold"] == 0.5
    # flat form; null removes an override
    assert client.post(f"/sessions/{sid}/config", json={"fuzzy_token_threshold": None}).status_code == 200
    assert "fuzzy_token_threshold" not in client.get(f"/sessions/{sid}/config").json()["config"]


def test_config_update_errors(client, session):
    sid = session()
    bad = client.post(f"/sessions/{sid}/config", json={"config": {"recall_threshold": 2, "max_predictions": 5}})
    assert bad.status_code == 400
    assert bad.json()["detail"]["validation_errors"] == {"recall_threshold": "Must be a number between 0.0 and 1.0"}
    assert client.get(f"/sessions/{sid}/config").json()["config"]["max_predictions"] == 100  # nothing applied
    assert client.post(f"/sessions/{sid}/config", json=[1]).status_code == 422
    assert client.post(f"/sessions/{sid}/config", json={"config": 3}).status_code == 422


def test_guard_answers_before_routing_and_validation(client):
    for method, path, body in [("POST", "/sessions/missing/observe", b"{not json"),
                               ("GET", "/sessions/missing/no-such-route", None),
                               ("POST", "/sessions/count", None),
                               ("DELETE", "/sessions/missing", None)]:
        resp = client.request(method, path, content=body)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "SESSION_NOT_FOUND"
        assert resp.headers["x-session-id"] == path.split("/")[2]


def test_max_sessions_cap(tmp_path):
    from litestar.testing import TestClient

    from web.app import create_app
    from web.settings import Settings

    app = create_app(Settings(data_dir=str(tmp_path / "d"), max_sessions=1, log_level="WARNING"))
    with TestClient(app) as c:
        assert c.post("/sessions", json={"node_id": "a"}).status_code == 200
        resp = c.post("/sessions", json={"node_id": "a"})
        assert resp.status_code == 429 and "limit" in resp.json()["detail"]


def test_unknown_route_and_method(client):
    assert client.get("/observe").json() == {"detail": "Not Found"}
    resp = client.put("/sessions/count")
    assert resp.status_code in (404, 405) and "detail" in resp.json() or "error" in resp.json()
