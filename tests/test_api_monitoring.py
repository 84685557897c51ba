"""Health, status, metrics, Prometheus, ping and OpenAPI; backend outages (api.md §2.5, §1.3)."""

from __future__ import annotations

import sqlite3
import time

from storage.base import BackendHealth, StoreUnavailable


def test_health_reports_every_backend(client):
    resp = client.get("/health")
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "healthy" and body["processor_status"] == "healthy"
    assert list(body)[:9] == ["status", "processor_status", "service_name", "uptime_seconds", "issues",
                              "metrics_collected", "last_collection", "active_sessions", "timestamp"]
    assert set(body["backends"]) == {"memory", "sqlite", "qdrant_local"}
    assert all(b["ok"] for b in body["backends"].values())
    assert body["timestamp"].endswith("+00:00") and body["uptime_seconds"] > 0
    assert client.get("/v2/health").json()["status"] == "healthy"


def _failing(name: str):
    async def ping() -> BackendHealth:
        return BackendHealth(ok=False, latency_ms=0.1, error=f"{name} is down")
    return ping


def test_health_unhealthy_when_pattern_store_down(client, monkeypatch):
    monkeypatch.setattr(client.app.state.kato.stores.patterns, "ping", _failing("sqlite"))
    resp = client.get("/health")
    assert resp.status_code == 503 and resp.json()["status"] == "unhealthy"
    assert any("sqlite" in issue for issue in resp.json()["issues"])
    assert resp.json()["backends"]["sqlite"] == {"ok": False, "latency_ms": 0.1, "error": "sqlite is down"}


def test_health_degraded_when_vectors_down(client, monkeypatch):
    monkeypatch.setattr(client.app.state.kato.stores.vectors, "ping", _failing("qdrant_local"))
    resp = client.get("/health")
    assert resp.status_code == 200 and resp.json()["status"] == "degraded"


def test_store_outage_is_503_naming_the_backend_and_loses_nothing(client, session, monkeypatch):
    sid = session("outage")
    for s in ("a", "b"):
        client.post(f"/sessions/{sid}/observe", json={"strings": [s]})

    class FailingWrites:
        """The learn log's connection, failing every insert as a broken disk would."""

        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("disk I/O error")
            return self.db.execute(sql, *args)

    patterns = client.app.state.kato.stores.patterns
    monkeypatch.setattr(patterns, "_db", FailingWrites(patterns._db))
    resp = client.post(f"/sessions/{sid}/learn")
    assert resp.status_code == 503 and resp.json() == {"detail": "sqlite unavailable: disk I/O error"}
    monkeypatch.undo()
    # The failed learn is not visible anywhere, and the session still has its STM.
    assert client.get(f"/sessions/{sid}/stm").json()["length"] == 2
    assert client.get("/symbols/stats", params={"node_id": "outage"}).json()["symbols"] == {}
    assert client.post(f"/sessions/{sid}/learn").json()["pattern_name"].startswith("PTRN|")


def test_status(client, session):
    session("stat")
    body = client.get("/status").json()
    assert body["status"] == "healthy" and body["base_processor_id"] == "kato"
    assert body["sessions"]["active_sessions"] == 1
    assert client.get("/v2/status").status_code == 200


def test_metrics_json_moves(client):
    first = client.get("/metrics").json()
    assert set(first) == {"timestamp", "sessions", "performance", "resources", "databases", "rates",
                          "processor_manager", "uptime_seconds", "active_sessions", "error"}
    assert all(0 <= v <= 100 for v in first["resources"].values())
    assert set(first["databases"]) == {"clickhouse", "qdrant", "redis"}
    second = client.get("/metrics").json()
    assert second["performance"]["total_requests"] > first["performance"]["total_requests"]
    assert second["performance"]["average_response_time"] > 0


def test_stats_and_metric_history(client):
    body = client.get("/stats?minutes=5").json()
    assert body["time_range_minutes"] == 5 and "kato_cpu_usage_percent" in body["time_series"]
    assert set(body["summary"]) == {"sessions", "performance", "resources", "databases"}
    one = client.get("/metrics/kato_requests_total").json()  # sampled at start-up
    assert one["statistics"]["count"] >= 1
    missing = client.get("/metrics/no_such_metric")
    assert missing.status_code == 404 and "No data available" in missing.json()["detail"]


def test_prometheus_exposition(client, session):
    session()
    resp = client.get("/prometheus")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "# TYPE kato_requests_total counter" in text
    assert "kato_sessions_active 1" in text and 'kato_backend_up{backend="sqlite"} 1' in text


def test_ping_routes_and_banner(client):
    ping = client.get("/kato-api/ping").json()
    assert ping["status"] == "okay" and ping["id"] == "kato" and ping["time_stamp"] <= time.time()
    assert client.get("/node-7/ping").json()["id"] == "node-7"
    assert client.get("/").json()["service"] == "KATO API"


def test_openapi_schema_is_served(client):
    schema = client.get("/schema/openapi.json").json()
    assert "/sessions/{session_id}/observe" in schema["paths"]
    assert "/health" in schema["paths"]
    body = schema["paths"]["/sessions/{session_id}/observe"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ObservationData"}
    assert "strings" in schema["components"]["schemas"]["ObservationData"]["properties"]


def test_session_store_outage_is_503_not_404(client, session, monkeypatch):
    sid = session()

    async def down(*args, **kwargs):
        raise StoreUnavailable("memory", "gone")

    monkeypatch.setattr(client.app.state.kato.stores.sessions, "touch", down)
    resp = client.get(f"/sessions/{sid}/stm")
    assert resp.status_code == 503 and resp.json() == {"detail": "memory unavailable: gone"}


def test_cors_allows_any_origin(client):
    resp = client.get("/health", headers={"Origin": "http://example.test"})
    assert resp.headers.get("access-control-allow-origin") in ("*", "http://example.test")
