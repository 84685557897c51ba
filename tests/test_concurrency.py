"""Load on a real ``kato serve`` over loopback: nothing lost, nothing reordered, nothing leaked.

200 concurrent clients share 50 sessions (4 per session) of one node, so every
session sees interleaved writers and every learn lands in one shared knowledge
base. Checked afterwards, exactly: per session the STM is the observations in
the order the server numbered them (``time``), each client's own observations
in the order it sent them, and nothing of another session; every session's
learned pattern is its own STM; the re-learned patterns have frequency, symbol
counts and affinity sums equal to the number of learns. Then session lifetime
under use: a session in use never expires — not between requests (sliding TTL)
and not during an operation longer than its TTL (the lock holder keeps it
alive) — while an idle one does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict

import httpx
import pytest

from tests.conftest import ServerProcess

CLIENTS, SESSIONS, OBSERVES, ROUNDS = 200, 50, 5, 2


@pytest.fixture(params=["embedded", "external"])
def any_server(request, tmp_path):
    """``kato serve`` on the embedded default, or on Redis + ClickHouse (sessions in Redis)."""
    if request.param == "embedded":
        yield request.getfixturevalue("server")
        return
    from tests.servers.redis_server import RedisServer

    clickhouse = request.getfixturevalue("clickhouse_http")
    redis = RedisServer(tmp_path / "redis")
    try:
        proc = ServerProcess(tmp_path / "data", {
            "REDIS_URL": redis.url, "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(clickhouse.port),
            "CLICKHOUSE_DB": f"kato_{uuid.uuid4().hex[:10]}", "KATO_QDRANT_PATH": str(tmp_path / "qdrant")})
        try:
            yield proc
        finally:
            proc.stop()
    finally:
        redis.stop()


def test_200_clients_over_50_sessions_lose_nothing_and_count_exactly(any_server, request):
    server = any_server
    # Every write on Redis takes the cross-process session lock: fewer rounds keep it quick.
    observes, rounds = (OBSERVES, ROUNDS) if request.node.callspec.params["any_server"] == "embedded" else (2, 1)
    node = f"load-{uuid.uuid4().hex[:8]}"
    hot = [[["hot-a"], ["hot-b"], [f"hot-v{v}"]] for v in (0, 1)]

    async def run() -> dict:
        # Idle connections are dropped by the client (1 s) well before uvicorn drops them (5 s):
        # reusing one the server is closing at that instant would fail a POST with ReadError.
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS, keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as http:
            async def create(_: int) -> str:
                resp = await http.post("/sessions", json={"node_id": node})
                assert resp.status_code == 200, resp.text
                return resp.json()["session_id"]

            sids = await asyncio.gather(*(create(i) for i in range(SESSIONS)))

            # Phase 1: 4 clients per session observe concurrently, each its own numbered symbols.
            async def observer(c: int) -> list[tuple[str, str, int]]:
                sid, seen = sids[c % SESSIONS], []
                for i in range(observes):
                    symbol = f"c{c:03d}-{i}"
                    resp = await http.post(f"/sessions/{sid}/observe", json={"strings": [symbol]})
                    assert resp.status_code == 200, resp.text
                    seen.append((sid, symbol, resp.json()["time"]))
                return seen

            sent = await asyncio.gather(*(observer(c) for c in range(CLIENTS)))
            stms = {sid: (await http.get(f"/sessions/{sid}/stm")).json()["stm"] for sid in sids}

            # Phase 2: every session learns its STM at once.
            async def learn(sid: str) -> str:
                resp = await http.post(f"/sessions/{sid}/learn")
                assert resp.status_code == 200, resp.text
                return resp.json()["pattern_name"]

            own = dict(zip(sids, await asyncio.gather(*(learn(sid) for sid in sids))))

            # Phase 3: every client re-learns one of two shared patterns, ROUNDS times, as
            # atomic batches (observe-sequence + learn_at_end) on its shared session.
            async def relearner(c: int) -> list[str]:
                sid, names = sids[c % SESSIONS], []
                for _ in range(rounds):
                    items = [{"strings": ev, "emotives": {"joy": 1.0}} for ev in hot[c % 2]]
                    resp = await http.post(f"/sessions/{sid}/observe-sequence",
                                           json={"observations": items, "learn_at_end": True})
                    assert resp.status_code == 200, resp.text
                    names.append(resp.json()["final_learned_pattern"])
                return names

            relearned = await asyncio.gather(*(relearner(c) for c in range(CLIENTS)))
            params = {"node_id": node}
            names = {n.removeprefix("PTRN|") for n in (*own.values(), *(n for ns in relearned for n in ns if n))}
            patterns = {name: (await http.get(f"/pattern/{name}", params=params)).json()["pattern"]
                        for name in names}
            stats = (await http.get("/symbols/stats", params=params)).json()["symbols"]
            affinity = (await http.get("/symbols/affinity", params=params)).json()["affinities"]
            return {"sent": sent, "stms": stms, "own": own, "relearned": relearned, "patterns": patterns,
                    "stats": stats, "affinity": affinity}

    out = asyncio.run(run())

    by_session: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for client_sent in out["sent"]:
        times = [t for _, _, t in client_sent]
        assert times == sorted(times)                         # a client's own order is kept
        for sid, symbol, t in client_sent:
            by_session[sid].append((symbol, t))
    assert len(by_session) == SESSIONS
    for sid, items in by_session.items():
        per_session = CLIENTS // SESSIONS * observes
        assert sorted(t for _, t in items) == list(range(1, per_session + 1))   # none lost, none doubled
        stm = out["stms"][sid]
        assert stm == [[symbol] for symbol, _ in sorted(items, key=lambda it: it[1])]   # server order, no leak
        learned = out["patterns"][out["own"][sid].removeprefix("PTRN|")]
        assert learned["status"] == "okay" and learned["pattern"]["pattern_data"] == stm
        assert learned["pattern"]["frequency"] == 1
    for c, names in enumerate(out["relearned"]):
        assert len(set(names)) == 1 and names[0] is not None
    hot_names = {out["relearned"][v][0].removeprefix("PTRN|") for v in (0, 1)}
    assert len(hot_names) == 2
    for name in hot_names:
        assert out["patterns"][name]["pattern"]["frequency"] == CLIENTS // 2 * rounds
    learns = CLIENTS * rounds
    assert out["stats"]["hot-a"]["frequency"] == learns and out["stats"]["hot-v1"]["frequency"] == learns // 2
    assert out["stats"]["hot-a"]["pattern_member_frequency"] == 2
    assert out["affinity"]["hot-a"] == {"joy": float(learns)}
    assert out["stats"]["c000-0"]["frequency"] == 1          # each observed symbol in exactly one pattern


def test_a_session_in_use_never_expires_and_an_idle_one_does(any_server):
    """TTL 1 s: a client observing every 0.3 s for 3 s keeps its session; an idle one is gone."""
    server = any_server
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        busy = http.post("/sessions", json={"node_id": "ttl", "ttl_seconds": 1}).json()["session_id"]
        idle = http.post("/sessions", json={"node_id": "ttl", "ttl_seconds": 1}).json()["session_id"]
        deadline = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < deadline:
            n += 1
            resp = http.post(f"/sessions/{busy}/observe", json={"strings": [f"s{n}"]})
            assert resp.status_code == 200, resp.text
            time.sleep(0.3)
        assert http.get(f"/sessions/{busy}/stm").json()["length"] == n
        assert http.post(f"/sessions/{idle}/observe", json={"strings": ["x"]}).status_code == 404
        assert http.get(f"/sessions/{idle}/exists").json() == {"exists": False, "expired": True, "session_id": idle}
        time.sleep(1.3)
        assert http.get(f"/sessions/{busy}/exists").json()["expired"] is True   # idle now: it expires too


def test_an_operation_longer_than_the_ttl_keeps_its_session_alive(any_server):
    """A batch running past the session's TTL, and a request queued behind it, both succeed.

    (Redis expires the session's key at its ``expires_at``; without the keep-alive the
    batch's final save found no key and was dropped: a 200 whose observations were lost.)
    """
    server = any_server
    node = f"long-{uuid.uuid4().hex[:8]}"

    def batch(n: int, offset: int) -> dict:
        # Constant work per item: a vector search each (a one-event STM, nothing learned).
        return {"observations": [{"strings": [f"s{offset + i}"], "vectors": [[float(offset + i), 1.0]]}
                                 for i in range(n)], "clear_stm_between": True}

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as http:
            probe = (await http.post("/sessions", json={"node_id": node})).json()["session_id"]
            seed = {"observations": [{"vectors": [[0.0, 1.0]]}, {"strings": ["seed"]}], "learn_at_end": True}
            assert (await http.post(f"/sessions/{probe}/observe-sequence", json=seed)).status_code == 200
            start = time.perf_counter()
            assert (await http.post(f"/sessions/{probe}/observe-sequence", json=batch(300, 0))).status_code == 200
            per_item = (time.perf_counter() - start) / 300
            n = min(10_000, int(2.5 / per_item))      # about 2.5 s of work against a 1 s TTL

            head_start = 0.3
            for _ in range(5):   # the probe is only an estimate: grow the batch until it outlives the TTL
                sid = (await http.post("/sessions", json={"node_id": node, "ttl_seconds": 1})).json()["session_id"]
                start = time.perf_counter()
                long = asyncio.create_task(http.post(f"/sessions/{sid}/observe-sequence", json=batch(n, 1000)))
                await asyncio.sleep(head_start)   # the batch holds the session lock now
                queued = await http.post(f"/sessions/{sid}/observe", json={"strings": ["after"]})
                done = await long
                elapsed = time.perf_counter() - start
                if queued.status_code == 200 and queued.json()["time"] == 1:
                    head_start *= 2   # a loaded machine: the batch had not reached the server yet
                    continue
                if elapsed > 1.3 or n == 10_000:
                    break
                n = min(10_000, n * 2)
            assert elapsed > 1.3   # the batch did outlive the TTL
            assert done.status_code == 200, done.text
            assert done.json()["observations_processed"] == n
            assert queued.status_code == 200, queued.text        # waited behind the batch, session still live
            assert queued.json()["time"] == n + 1
            stm = (await http.get(f"/sessions/{sid}/stm")).json()["stm"]
            assert len(stm) == 2 and f"s{1000 + n - 1}" in stm[0] and stm[1] == ["after"]

    asyncio.run(run())
