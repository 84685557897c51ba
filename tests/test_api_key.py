"""Optional API key (``KATO_API_KEY``): every endpoint but the liveness routes needs it."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from litestar.testing import TestClient
from litestar.exceptions import WebSocketDisconnect

from web.app import create_app
from web.auth import MESSAGE, is_exempt
from web.settings import Settings

KEY = "s3cret-key-äö"


@pytest.fixture
def keyed(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), log_level="WARNING", api_key=KEY)
    with TestClient(create_app(settings)) as client:
        yield client


def test_setting_is_read_from_the_environment():
    assert Settings.from_env({"KATO_API_KEY": "abc"}).api_key == "abc"
    assert Settings.from_env({"KATO_API_KEY": "  "}).api_key is None
    assert Settings.from_env({}).api_key is None


@pytest.mark.parametrize("method, path", [
    ("GET", "/status"), ("GET", "/metrics"), ("GET", "/"), ("POST", "/sessions"), ("GET", "/sessions/count"),
    ("GET", "/pattern/abc"), ("GET", "/symbols/stats"), ("GET", "/kb/export"), ("POST", "/kb/import"),
    ("GET", "/schema/openapi.json"), ("POST", "/sessions/no-such-session/observe"), ("GET", "/nowhere"),
])
def test_without_the_key_every_endpoint_is_401(keyed, method, path):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        resp = keyed.request(method, path, headers={**headers, "X-Trace-ID": "t-1"})
        assert resp.status_code == 401, (path, headers)
        assert resp.json() == {"detail": MESSAGE}
        assert resp.headers["www-authenticate"] == 'Bearer realm="kato"'
        assert resp.headers["x-trace-id"] == "t-1"
        assert "x-session-id" not in resp.headers  # the session guard never ran


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_with_the_key_the_api_works(keyed, header):
    value = KEY.encode() if header == "X-API-Key" else b"Bearer " + KEY.encode()
    headers = {header: value}
    sid = keyed.post("/sessions", json={"node_id": "n"}, headers=headers).json()["session_id"]
    for strings in (["a"], ["b"]):
        assert keyed.post(f"/sessions/{sid}/observe", json={"strings": strings}, headers=headers).status_code == 200
    assert keyed.post(f"/sessions/{sid}/learn", headers=headers).status_code == 200
    assert keyed.get("/status", headers=headers).status_code == 200
    assert keyed.get("/kb/export", params={"node_id": "n"}, headers=headers).json()["pattern_count"] == 1
    assert keyed.get("/sessions/nope/stm", headers=headers).status_code == 404  # guard runs after the key


@pytest.mark.parametrize("path", ["/health", "/v2/health", "/kato-api/ping", "/primary/ping", "/sentiment/ping"])
def test_liveness_routes_need_no_key(keyed, path):
    assert keyed.get(path).status_code == 200


def test_cors_preflight_needs_no_key(keyed):
    resp = keyed.options("/sessions", headers={"Origin": "http://example.test",
                                               "Access-Control-Request-Method": "POST",
                                               "Access-Control-Request-Headers": "x-api-key"})
    assert resp.status_code in (200, 204)


def test_exempt_rule():
    assert is_exempt("GET", "/health") and is_exempt("GET", "/abc/ping") and is_exempt("OPTIONS", "/sessions")
    for path in ("/health/x", "/ping", "//ping", "/a/b/ping", "/a/ping/", "/sessions/x", "/status"):
        assert not is_exempt("GET", path), path


def test_websocket_needs_the_key(keyed):
    with pytest.raises(WebSocketDisconnect) as info:
        with keyed.websocket_connect("/ws/events") as ws:
            ws.receive_text()
    assert info.value.code == 1008
    with keyed.websocket_connect("/ws/events", headers={"X-API-Key": KEY.encode()}) as ws:
        assert '"state.snapshot"' in ws.receive_text()
    with keyed.websocket_connect(f"/ws/events?token={quote(KEY)}") as ws:
        assert '"state.snapshot"' in ws.receive_text()


def test_no_key_configured_means_an_open_api(client):
    assert client.get("/status").status_code == 200
    assert client.get("/kb/export").status_code == 200
