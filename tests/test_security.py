"""Security promises of SECURITY.md: rate limit, node isolation, key on every route, no secrets in logs."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import TestClient

from web.app import create_app
from web.ratelimit import RateLimiter
from web.settings import Settings, SettingsError

KEY = "rl-key-7f3a"


def _app(tmp_path, **overrides) -> TestClient:
    return TestClient(create_app(Settings(data_dir=str(tmp_path / "data"), log_level="WARNING", **overrides)))


# ----------------------------------------------------------------- rate limit


def test_rate_limit_is_off_by_default_and_read_from_the_environment(client):
    assert Settings().rate_limit == 0.0
    assert all(client.get("/status").status_code == 200 for _ in range(50))
    read = Settings.from_env({"KATO_RATE_LIMIT": "2.5", "KATO_RATE_LIMIT_BURST": "7"})
    assert (read.rate_limit, read.rate_limit_burst) == (2.5, 7)
    with pytest.raises(SettingsError, match="KATO_RATE_LIMIT"):
        Settings.from_env({"KATO_RATE_LIMIT": "-1"})


def test_token_bucket_refills_at_the_rate():
    now = [100.0]
    limiter = RateLimiter(None, rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)      # empty: one token back in 1/rate s
    assert limiter.take("b") == 0.0                     # another caller has its own bucket
    now[0] += 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    now[0] += 60
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # refills to the burst, never beyond
    assert RateLimiter(None, rate=0.5).burst == 1.0 and RateLimiter(None, rate=10).burst == 10.0


def test_over_the_rate_limit_is_429_with_retry_after_per_client(tmp_path):
    with _app(tmp_path, rate_limit=0.1, rate_limit_burst=3) as http:
        codes = [http.get("/status").status_code for _ in range(3)]
        resp = http.get("/sessions/count", headers={"X-Trace-ID": "t-9"})
        assert codes == [200, 200, 200] and resp.status_code == 429
        assert resp.headers["retry-after"] == "10" and resp.headers["x-trace-id"] == "t-9"
        assert resp.json() == {"detail": "Rate limit exceeded: 0.1 requests per second per client (KATO_RATE_LIMIT)"}
        assert http.post("/sessions", json={"node_id": "n"}).status_code == 429   # no work done
        assert http.app.state.kato.metrics.sessions_created == 0
        # Probes are never limited.
        assert all(http.get(p).status_code == 200 for p in ("/health", "/v2/health", "/kato-api/ping") * 3)


def test_rate_limit_is_per_api_key_and_after_the_key_check(tmp_path):
    with _app(tmp_path, rate_limit=0.1, rate_limit_burst=2, api_key=KEY) as http:
        assert [http.get("/status").status_code for _ in range(4)] == [401] * 4   # no key: 401, no token spent
        keyed = {"X-API-Key": KEY}
        assert [http.get("/status", headers=keyed).status_code for _ in range(3)] == [200, 200, 429]
        bearer = {"Authorization": f"Bearer {KEY}"}   # the same key by another header: the same bucket
        resp = http.get("/status", headers=bearer)
        assert resp.status_code == 429 and "per API key" in resp.json()["detail"]


# ------------------------------------------------------------------- API key


def test_every_route_but_liveness_needs_the_key(tmp_path):
    """Every route the app registers, not a list kept by hand: a new route cannot slip through."""
    with _app(tmp_path, api_key=KEY) as http:
        checked = 0
        for route in http.app.routes:
            path = route.path_format.replace("{", "").replace("}", "")   # /sessions/session_id/stm etc.
            for method in sorted(getattr(route, "methods", ())):
                if method in ("OPTIONS", "HEAD"):
                    continue
                if route.path_format.startswith("/ws"):
                    continue   # the WebSocket is refused with 1008 (tests/test_api_key.py)
                resp = http.request(method, path)
                if path in ("/health", "/v2/health", "/kato-api/ping", "/processor_id/ping"):
                    assert resp.status_code != 401, path
                else:
                    assert resp.status_code == 401, (method, path, resp.status_code)
                    checked += 1
        assert checked >= 30


# ------------------------------------------------------------ node isolation

A, B = "alice[1]", "alice1"   # distinct kb_ids (alice[1]_kato, alice1_kato) one glob apart (api.md S12)


def _learn(http, sid: str, events: list[list[str]], **extra) -> str:
    for strings in events:
        assert http.post(f"/sessions/{sid}/observe", json={"strings": strings, **extra}).status_code == 200
    resp = http.post(f"/sessions/{sid}/learn")
    assert resp.status_code == 200, resp.text
    return resp.json()["pattern_name"].removeprefix("PTRN|")


def _kb_view(http, node: str) -> dict:
    q = {"node_id": node}
    export = http.get("/kb/export", params=q).json()
    return {"export": {k: export[k] for k in ("patterns", "affinity", "vectors", "pattern_count")},
            "stats": http.get("/symbols/stats", params=q).json()["symbols"],
            "affinity": http.get("/symbols/affinity", params=q).json()["affinities"]}


def _isolation(http) -> None:
    sa = http.post("/sessions", json={"node_id": A}).json()["session_id"]
    sb = http.post("/sessions", json={"node_id": B}).json()["session_id"]
    pa = _learn(http, sa, [["a-x"], ["shared"]], emotives={"joy": 1.0}, metadata={"who": "a"})
    pb = _learn(http, sb, [["b-y"], ["shared"]], emotives={"fear": 2.0}, metadata={"who": "b"})
    assert _learn(http, sb, [["b-y"], ["shared"]]) == pb
    pc = _learn(http, sa, [["c1"], ["c2"]])
    assert _learn(http, sb, [["c1"], ["c2"]]) == pc
    for sid, vector in ((sa, [1.0, 0.0]), (sb, [0.0, 1.0])):
        http.post(f"/sessions/{sid}/observe", json={"strings": ["v"], "vectors": [vector]})
        http.post(f"/sessions/{sid}/learn")
    b_before = _kb_view(http, B)
    b_vector = b_before["export"]["vectors"][0]["name"]

    # /pattern, by every way of naming the node
    q = {"node_id": A}
    assert http.get(f"/pattern/{pb}", params=q).json()["pattern"]["status"] == "error"
    assert http.get(f"/pattern/{pb}", headers={"X-Node-ID": A}).json()["pattern"]["status"] == "error"
    assert http.get(f"/pattern/{pc}", params=q).json()["pattern"]["pattern"]["frequency"] == 1
    assert http.get(f"/pattern/{pc}", params={"node_id": B}).json()["pattern"]["pattern"]["frequency"] == 1
    assert http.get(f"/pattern/{pa}", params=q).json()["pattern"]["pattern"]["metadata"] == {"who": ["a"]}
    # /symbols/*
    a_view = _kb_view(http, A)
    assert "b-y" not in a_view["stats"] and a_view["stats"]["shared"]["frequency"] == 1
    assert "fear" not in str(a_view["affinity"]) and a_view["affinity"]["a-x"] == {"joy": 1.0}
    assert http.get("/symbols/b-y/affinity", params=q).json()["affinity"] == {}
    # /kb/export
    assert {p["name"] for p in a_view["export"]["patterns"]} >= {pa, pc} and pb not in str(a_view["export"])
    assert b_vector not in str(a_view["export"]["vectors"])
    # predictions, cognition-data, observe-time vector neighbours of a session of A
    for strings in (["b-y"], ["shared"]):
        http.post(f"/sessions/{sa}/observe", json={"strings": strings})
    names = {p["name"] for p in http.get(f"/sessions/{sa}/predictions").json()["predictions"]}
    assert names and pb not in names and names <= {p["name"] for p in a_view["export"]["patterns"]}
    cognition = http.get(f"/sessions/{sa}/cognition-data").json()["cognition_data"]
    assert pb not in str(cognition["predictions"])
    a_vector = a_view["export"]["vectors"][0]["name"]
    http.post(f"/sessions/{sa}/observe", json={"vectors": [[0.0, 0.9]]})   # B's vector is the nearest...
    event = http.get(f"/sessions/{sa}/stm").json()["stm"][-1]
    assert a_vector in event and b_vector not in event                      # ...but only A's are searched
    # observe-sequence with learning, finalize-training, import and clear-all of A leave B as it was
    seq = {"observations": [{"strings": ["b-y"]}, {"strings": ["shared"]}], "learn_at_end": True}
    http.post(f"/sessions/{sa}/clear-stm")
    assert http.post(f"/sessions/{sa}/observe-sequence", json=seq).json()["final_learned_pattern"] == f"PTRN|{pb}"
    assert http.get(f"/pattern/{pb}", params=q).json()["pattern"]["pattern"]["frequency"] == 1   # A's own now
    finalized = http.post(f"/sessions/{sa}/finalize-training").json()
    assert finalized["patterns_processed"] == _kb_view(http, A)["export"]["pattern_count"]
    backup = http.get("/kb/export", params=q).content
    assert http.post("/kb/import", params={"node_id": "carol", "replace": "true"}, content=backup).status_code == 200
    assert http.post(f"/sessions/{sa}/clear-all").status_code == 200
    assert _kb_view(http, A)["export"]["pattern_count"] == 0
    assert _kb_view(http, B) == b_before
    assert http.get(f"/pattern/{pb}", params={"node_id": B}).json()["pattern"]["pattern"]["frequency"] == 2
    # the deprecated processor-level stubs show nothing of anyone
    assert http.get("/percept-data", params={"node_id": B}).json()["percept_data"] == {}
    assert http.get("/cognition-data", params={"node_id": B}).json()["cognition_data"]["predictions"] == []


def test_nodes_cannot_read_each_other_through_any_endpoint(client):
    _isolation(client)


def test_nodes_cannot_read_each_other_on_redis_and_clickhouse(redis_server, chdb_path, tmp_path):
    redis_server.command("-n", "6", "FLUSHDB")
    settings = Settings(storage="external", data_dir=str(tmp_path / "data"), log_level="WARNING",
                        redis_url=redis_server.url.rsplit("/", 1)[0] + "/6", clickhouse_chdb_path=chdb_path,
                        clickhouse_db=f"iso_{uuid.uuid4().hex[:8]}", qdrant_path=str(tmp_path / "q"))
    with TestClient(create_app(settings)) as http:
        _isolation(http)


# ------------------------------------------------------------------ no secrets


def test_no_secret_reaches_the_logs_or_the_monitoring_routes(tmp_path, clickhouse_http):
    """A DEBUG-level server with every secret set, driven through successes, refusals and a
    Redis outage: none of the secrets (nor a wrong key a client tried) is in its log output."""
    from tests.conftest import ServerProcess
    from tests.servers.redis_server import RedisServer

    secrets = {"api": "sk-api-5b1d0c", "wrong": "sk-guess-77aa31", "redis": "rp-9e2c4f", "clickhouse": "cp-41d8aa",
               "qdrant": "qk-03f7b2"}
    redis = RedisServer(tmp_path / "redis")
    redis.command("CONFIG", "SET", "requirepass", secrets["redis"])
    url = f"redis://:{secrets['redis']}@127.0.0.1:{redis.port}/0"
    env = {"LOG_LEVEL": "DEBUG", "KATO_API_KEY": secrets["api"], "REDIS_URL": url, "CLICKHOUSE_HOST": "127.0.0.1",
           "CLICKHOUSE_PORT": str(clickhouse_http.port), "CLICKHOUSE_PASSWORD": secrets["clickhouse"],
           "CLICKHOUSE_DB": f"sec_{uuid.uuid4().hex[:8]}", "QDRANT_API_KEY": secrets["qdrant"],
           "KATO_QDRANT_PATH": str(tmp_path / "qdrant")}
    server = ServerProcess(tmp_path / "data", env)
    try:
        import httpx

        good, bad = {"X-API-Key": secrets["api"]}, {"Authorization": f"Bearer {secrets['wrong']}"}
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            sid = http.post("/sessions", json={"node_id": "sec"}, headers=good).json()["session_id"]
            for strings in (["a"], ["b"]):
                http.post(f"/sessions/{sid}/observe", json={"strings": strings}, headers=good)
            assert http.post(f"/sessions/{sid}/learn", headers=good).status_code == 200
            assert http.post(f"/sessions/{sid}/observe", json={"strings": [1]}, headers=good).status_code == 422
            assert http.get("/status", headers=bad).status_code == 401
            assert http.get(f"/sessions/{sid}/stm", params={"api_key": secrets["wrong"]}).status_code == 401
            redis.stop()
            assert http.post(f"/sessions/{sid}/learn", headers=good).status_code == 503
            assert http.post("/sessions", json={"node_id": "sec"}, headers=good).status_code == 503   # logged
            assert http.get("/health").status_code == 503
            redis.start()
            redis.command("CONFIG", "SET", "requirepass", secrets["redis"])
            pages = [http.get(path, headers=good).text for path in ("/status", "/metrics", "/health", "/prometheus")]
    finally:
        server.stop()
        redis.stop()
    log = server.log_path.read_text()
    assert '"msg":"kato started"' in log and '"msg":"store unavailable"' in log   # the log recorded things
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} secret is in the log"
        assert all(secret not in page for page in pages), f"the {name} secret is served"
