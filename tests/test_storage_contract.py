"""Contract of the storage interfaces, run against every implementation we have.

Pattern stores must rebuild a knowledge base exactly (same predictions, counters,
emotive windows, affinities) and keep knowledge bases isolated by kb_id. Session
stores must expire, slide, probe, count exactly and serialise writers. Vector
indexes follow api.md §4.5.4 (dimension mismatch: skipped, never an error).

Backends: the embedded ones (SQLite, in-process sessions, qdrant-client local
mode) and the server ones — ClickHouse (the real engine, in process through chdb)
with Redis (a real redis-server, tests/servers/) for patterns, Redis for sessions,
and Qdrant in both modes: local, and server over HTTP (tests/servers/qdrant_http.py).
Each test runs on one event loop (``aio``), as a server does.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import numpy
import pytest

from engine import EngineConfig, KnowledgeBase, Observation, SessionState
from storage.base import PatternStore, SessionBusy, SessionStore, VectorStore
from storage.memory import MemorySessionStore
from storage.qdrant import QdrantStore, point_id
from storage.records import SessionRecord
from storage.sqlite import SqlitePatternStore


CONTRACT_REDIS_DB = 1  # flushed before every test that uses it


def _redis_url(request) -> str:
    server = request.getfixturevalue("redis_server")
    server.command("-n", str(CONTRACT_REDIS_DB), "FLUSHDB")
    return server.url.rsplit("/", 1)[0] + f"/{CONTRACT_REDIS_DB}"


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "clickhouse"])
def pattern_store(request, tmp_path, aio):
    if request.param == "clickhouse":
        import clickhouse_connect

        from storage.clickhouse import ClickHouseRows
        from storage.redis import RedisConnector
        from storage.shared import SharedPatternStore

        path = request.getfixturevalue("chdb_path")
        rows = ClickHouseRows(lambda: clickhouse_connect.get_client(interface="chdb", path=path),
                              f"contract_{uuid.uuid4().hex[:8]}")
        store = SharedPatternStore(rows, RedisConnector(_redis_url(request)))
    else:
        store = SqlitePatternStore(tmp_path / "p.sqlite3" if request.param == "sqlite-file" else ":memory:")
    yield store
    aio.run(store.close())


@pytest.fixture(params=["memory", "redis"])
def session_store(request, aio):
    if request.param == "redis":
        from storage.redis import RedisConnector, RedisSessionStore

        store = RedisSessionStore(RedisConnector(_redis_url(request)))
        yield store
        aio.run(store.close())
    else:
        yield MemorySessionStore()


@pytest.fixture(params=["qdrant-local-file", "qdrant-local-memory", "qdrant-server"])
def vector_store(request, tmp_path, aio):
    server = None
    if request.param == "qdrant-server":
        from tests.conftest import QdrantHttp

        server = QdrantHttp(tmp_path / "qdrant-http")
        store = QdrantStore(host="127.0.0.1", port=server.port)
    else:
        store = QdrantStore(path=tmp_path / "q" if request.param == "qdrant-local-file" else None)
    yield store
    aio.run(store.close())
    if server is not None:
        server.stop()


def _train(kb: KnowledgeBase, config: EngineConfig) -> list:
    learned = []
    state = SessionState()
    episodes = [(["a"], ["b"], ["c"]), (["a"], ["b"], ["d"]), (["x", "y"], ["z"]), (["a"], ["b"], ["c"])]
    for i, episode in enumerate(episodes):
        for j, strings in enumerate(episode):
            kb.observe(state, Observation(strings=list(strings), emotives={"joy": float(i + j)},
                                          metadata={"ep": i}), config)
        name, record = kb.learn(state, config)
        learned.append(record)
        state.clear()
    return learned


def _snapshot(kb: KnowledgeBase, config: EngineConfig) -> bytes:
    preds = kb.predict([["a"], ["b"]], config)
    records = sorted((kb.pattern(n) for n in kb.index.iter_names()), key=lambda r: r["name"])
    return msgspec.json.encode([preds, records, sorted(kb.index.symbol_stats()), kb.index.affinity_table()])


def test_protocols_are_implemented(pattern_store, session_store, vector_store, aio):
    assert isinstance(pattern_store, PatternStore)
    assert isinstance(session_store, SessionStore)
    assert isinstance(vector_store, VectorStore)


def test_rebuild_reproduces_the_knowledge_base_exactly(pattern_store, aio):
    config = EngineConfig()
    original = KnowledgeBase("kb1")
    learned = _train(original, config)
    aio.run(pattern_store.append("kb1", learned))
    rebuilt = KnowledgeBase("kb1")
    generation = aio.run(pattern_store.rebuild(rebuilt))
    assert generation == aio.run(pattern_store.generation("kb1")) > 0
    assert _snapshot(rebuilt, config) == _snapshot(original, config)
    assert rebuilt.pattern(learned[0].name)["frequency"] == 2


def test_finalize_marker_replays_at_its_point(pattern_store, aio):
    config = EngineConfig()
    original = KnowledgeBase("kb1")
    learned = _train(original, config)
    aio.run(pattern_store.append("kb1", learned[:2]))
    aio.run(pattern_store.mark_finalized("kb1"))
    aio.run(pattern_store.append("kb1", learned[2:]))
    reference = KnowledgeBase("kb1")
    for rec in learned[:2]:
        reference.apply(rec)
    reference.finalize()
    for rec in learned[2:]:
        reference.apply(rec)
    rebuilt = KnowledgeBase("kb1")
    aio.run(pattern_store.rebuild(rebuilt))
    assert _snapshot(rebuilt, config) == _snapshot(reference, config)


def test_knowledge_bases_are_isolated_and_clear_is_scoped(pattern_store, aio):
    config = EngineConfig()
    learned = _train(KnowledgeBase("x"), config)
    aio.run(pattern_store.append("kb1", learned))
    aio.run(pattern_store.append("kb2", learned[:1]))
    aio.run(pattern_store.clear("kb1"))
    kb1, kb2 = KnowledgeBase("kb1"), KnowledgeBase("kb2")
    aio.run(pattern_store.rebuild(kb1))
    aio.run(pattern_store.rebuild(kb2))
    assert len(kb1) == 0 and len(kb2) == 1


def test_restore_replaces_the_knowledge_base_exactly(pattern_store, aio):
    from storage.snapshot import take_snapshot

    config = EngineConfig()
    original = KnowledgeBase("source")
    _train(original, config)
    original.finalize()
    aio.run(pattern_store.append("kb1", _train(KnowledgeBase("other"), config)[:1]))
    before = aio.run(pattern_store.generation("kb1"))
    aio.run(pattern_store.restore("kb1", take_snapshot(original)))
    assert aio.run(pattern_store.generation("kb1")) != before
    restored = KnowledgeBase("kb1")
    aio.run(pattern_store.rebuild(restored))
    assert _snapshot(restored, config) == _snapshot(original, config)
    name = next(original.index.iter_names())
    assert restored.index.finalized_metrics(name) == original.index.finalized_metrics(name)
    # Learns after a restore apply on top of it.
    state = SessionState()
    for strings in (["a"], ["b"], ["c"]):
        original.observe(state, Observation(strings=strings, emotives={"joy": 0.25}), config)
    _, record = original.learn(state, config)
    aio.run(pattern_store.append("kb1", [record]))
    again = KnowledgeBase("kb1")
    aio.run(pattern_store.rebuild(again))
    assert _snapshot(again, config) == _snapshot(original, config)


def test_pattern_store_ping(pattern_store, aio):
    health = aio.run(pattern_store.ping())
    assert health.ok and health.error is None


def _record(sid: str, ttl: int = 60, now: float | None = None) -> SessionRecord:
    import time

    now = time.time() if now is None else now
    return SessionRecord(session_id=sid, node_id="n", kb_id="n_kato", created_at=now, last_accessed=now,
                         expires_at=now + ttl, ttl_seconds=ttl)


def test_session_store_lifecycle(session_store, aio):
    async def run():
        import time

        await session_store.create(_record("s1"))
        await session_store.create(_record("old", now=time.time() - 120))
        assert await session_store.count() == 1
        assert (await session_store.get("s1")).session_id == "s1"
        assert await session_store.get("old") is None
        assert await session_store.probe("old") == (False, True)
        assert await session_store.probe("old") == (False, False)
        touched = await session_store.touch("s1", time.time() + 30, extend=True)
        assert touched.access_count == 1 and touched.expires_at > time.time() + 80
        assert await session_store.delete("s1") and not await session_store.delete("s1")
        assert await session_store.count() == 0

    aio.run(run())


def test_session_lock_serialises_and_times_out(session_store, aio):
    async def run():
        order = []

        async def writer(tag: str):
            async with session_store.lock("s", timeout=5):
                order.append(f"{tag}-in")
                await asyncio.sleep(0.01)
                order.append(f"{tag}-out")

        await asyncio.gather(*(writer(str(i)) for i in range(5)))
        assert order == [f"{i}-{p}" for i in range(5) for p in ("in", "out")]
        async with session_store.lock("s", timeout=1):
            with pytest.raises(SessionBusy):
                async with session_store.lock("s", timeout=0.05):
                    pass

    aio.run(run())


def test_vector_index_search_and_dimension_mismatch(vector_store, aio):
    index = vector_store.index("kbv")
    assert index.search(numpy.array([1.0, 0.0]), 3) == []
    index.upsert([("VCTR|a", [0.0, 0.0]), ("VCTR|b", [1.0, 0.0]), ("VCTR|c", [5.0, 5.0]), ("VCTR|e", [])])
    assert index.search(numpy.array([0.9, 0.0]), 2) == ["VCTR|b", "VCTR|a"]
    index.upsert([("VCTR|long", [1.0, 2.0, 3.0])])
    assert vector_store.unindexed() == 1
    assert index.search(numpy.array([1.0, 2.0, 3.0]), 3) == []
    aio.run(vector_store.drop("kbv"))
    assert index.search(numpy.array([0.9, 0.0]), 2) == []
    assert vector_store.index("other").search(numpy.array([0.0, 0.0]), 1) == []


def test_vectors_persist_across_reopen(tmp_path):
    store = QdrantStore(path=tmp_path / "q")
    store.index("kbp").upsert([("VCTR|a", [1.0, 2.0])])
    asyncio.run(store.close())
    reopened = QdrantStore(path=tmp_path / "q")
    try:
        assert reopened.index("kbp").search(numpy.array([1.0, 2.0]), 1) == ["VCTR|a"]
    finally:
        asyncio.run(reopened.close())


def test_point_id_matches_the_reference():
    assert point_id("VCTR|7729f0ed56a13a9373fc1b1c17e34f61d4512ab4") == "d7f998c2-99c5-50a0-85a7-630b0b8881ac"
