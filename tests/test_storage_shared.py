"""The shared pattern store's own promises, in one process with two store instances.

Two ``SharedPatternStore`` objects with their own Redis pools stand for two
server processes (they share the in-process ClickHouse engine and a real
redis-server). Learns run on worker threads as in the service. The knowledge
bases of both, and a fresh rebuild, must be bit-identical after concurrent
learning with emotives and metadata — emotive-window order and affinity sums
included — and stay so across clear-all, finalize-training and a gap in the
change stream. Also: the MinHash columns match datasketch's, and session
documents round-trip.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import anyio.to_thread
import msgspec
import pytest

from engine import EngineConfig, KnowledgeBase, Observation, SessionState
from engine.observation import pattern_hash
from storage.clickhouse import lsh_bands, minhash_signature

SHARED_REDIS_DB = 2


@pytest.fixture
def two_stores(request, redis_server, chdb_path, aio):
    import clickhouse_connect

    from storage.clickhouse import ClickHouseRows
    from storage.redis import RedisConnector
    from storage.shared import SharedPatternStore

    redis_server.command("-n", str(SHARED_REDIS_DB), "FLUSHDB")
    url = redis_server.url.rsplit("/", 1)[0] + f"/{SHARED_REDIS_DB}"
    database = f"shared_{uuid.uuid4().hex[:8]}"
    stores = [SharedPatternStore(ClickHouseRows(lambda: clickhouse_connect.get_client(interface="chdb", path=chdb_path),
                                                database), RedisConnector(url)) for _ in range(2)]
    yield stores
    for store in stores:
        aio.run(store.close())


def _state(kb: KnowledgeBase) -> bytes:
    index = kb.index
    records = [kb.pattern(n) for n in sorted(index.iter_names())]
    finalized = [index.finalized_metrics(n) for n in sorted(index.iter_names())]
    preds = kb.predict([["s1"], ["s2"]], EngineConfig(recall_threshold=0.0))
    return msgspec.json.encode([records, finalized, sorted(index.symbol_stats()), index.affinity_table(),
                                [index.total_unique_patterns, index.total_pattern_frequencies,
                                 index.total_symbols_in_patterns_frequencies], preds])


def _learner(kb: KnowledgeBase, tag: int, rounds: int):
    config = EngineConfig(persistence=3)

    def run() -> list[str]:
        names = []
        for r in range(rounds):
            state = SessionState()
            # A few hot patterns every learner re-learns, plus some of its own.
            events = [["s1"], ["s2"], [f"s{3 + r % 3}"]] if r % 2 else [["s1"], [f"own{tag}-{r}"]]
            for i, strings in enumerate(events):
                kb.observe(state, Observation(strings=strings, emotives={"joy": tag + r / 7 + i / 3, "fear": -r / 11},
                                              metadata={"who": tag, "r": r}), config)
            names.append(kb.learn(state, config)[0])
        return names

    return run


def test_two_processes_hold_bit_identical_knowledge_bases_after_concurrent_learning(two_stores, aio):
    one, two = two_stores

    async def main() -> None:
        kb1, kb2 = one.knowledge_base("kbx"), two.knowledge_base("kbx")
        await one.rebuild(kb1)
        await two.rebuild(kb2)
        await asyncio.gather(*(anyio.to_thread.run_sync(_learner(kb, tag, 12))
                               for tag, kb in enumerate((kb1, kb2, kb1, kb2))))
        await one.sync(kb1)
        await two.sync(kb2)
        fresh = KnowledgeBase("kbx")
        assert await one.rebuild(fresh) == kb1.attached.gen == kb2.attached.gen
        assert _state(kb1) == _state(kb2) == _state(fresh)
        hot = kb1.pattern(pattern_hash([["s1"], ["s2"], ["s4"]]))
        assert hot["frequency"] == 8 and len(hot["emotives"]) == 3

        # finalize-training through one process reaches the other and a rebuild.
        assert await anyio.to_thread.run_sync(kb2.finalize) == len(kb2)
        await one.sync(kb1)
        again = KnowledgeBase("kbx")
        await two.rebuild(again)
        assert _state(kb1) == _state(kb2) == _state(again)
        assert kb1.index.finalized_metrics(next(kb1.index.iter_names())) is not None

        # clear-all through one process empties the other.
        await one.clear("kbx")
        await two.sync(kb2)
        assert len(kb1) == len(kb2) == 0
        await asyncio.gather(anyio.to_thread.run_sync(_learner(kb2, 5, 2)))
        await one.sync(kb1)
        assert _state(kb1) == _state(kb2) and len(kb1) == 2

    aio.run(main())


def test_a_gap_in_the_change_stream_rebuilds_from_the_stores(two_stores, redis_server, aio):
    one, two = two_stores

    async def main() -> None:
        kb1, kb2 = one.knowledge_base("kbg"), two.knowledge_base("kbg")
        await one.rebuild(kb1)
        await two.rebuild(kb2)
        del two._attached["kbg"]   # its follower no longer applies kbg: a process that fell behind
        await asyncio.gather(anyio.to_thread.run_sync(_learner(kb1, 1, 6)))
        # The capped stream lost the entries the laggard still needs.
        redis_server.command("-n", str(SHARED_REDIS_DB), "XTRIM", "kato:kblog:kbg", "MAXLEN", "0")
        reloads = two.reloads
        await two.sync(kb2)
        assert two.reloads == reloads + 1
        assert _state(kb2) == _state(kb1)

    aio.run(main())


def test_minhash_columns_match_datasketch():
    # datasketch MinHash(num_perm=100, seed=1) (its legacy permutations, as the reference uses)
    # updated with b"a", b"hello".
    signature = minhash_signature(["a", "hello"])
    assert signature[:6] == [228630785, 2290196162, 1010295474, 1974455217, 447328345, 1389563710]
    assert len(signature) == 100 and len(lsh_bands(signature)) == 20
    assert lsh_bands(signature)[0] == abs(hash(tuple(signature[:5])))


def test_session_documents_round_trip_with_both_prediction_kinds():
    from storage.records import SessionRecord
    from storage.redis import record_from_document, session_document

    kb = KnowledgeBase("doc")
    config = EngineConfig()
    state = SessionState()
    for strings in (["a"], ["b"], ["c"]):
        kb.observe(state, Observation(strings=strings), config)
    kb.learn(state, config)
    kb.observe(state, Observation(strings=["a"]), config)
    single = list(state.predictions)
    kb.observe(state, Observation(strings=["b"], emotives={"joy": 0.5}, vectors=[[1.0, 2.0]]), config)
    assert single and state.predictions and type(single[0]) is not type(state.predictions[0])
    state.predictions = single + list(state.predictions)
    now = time.time()
    rec = SessionRecord(session_id="s", node_id="n", kb_id="n_kato", created_at=now, last_accessed=now + 1,
                        expires_at=now + 61.5, ttl_seconds=60, metadata={"m": [1]}, access_count=3,
                        overrides={"recall_threshold": 0.3}, config_version=2, config_updated_at=now + 0.5,
                        state=state, percept_data={"strings": ["b"]})
    doc = msgspec.json.decode(msgspec.json.encode(session_document(rec)))
    assert doc["session_config"]["recall_threshold"] == 0.3 and doc["session_config"]["persistence"] is None
    assert doc["expires_at"].endswith("+00:00")
    assert msgspec.json.encode(record_from_document(doc)) == msgspec.json.encode(rec)


def test_bulk_append_keeps_the_order_of_relearns(two_stores, aio):
    one, _ = two_stores
    config = EngineConfig(persistence=4)
    reference = KnowledgeBase("kba")
    learned = []
    for i in range(120):   # 6 patterns re-learned 20 times each, emotives (no metadata): pipelined path
        state = SessionState()
        for strings in (["p"], [f"q{i % 6}"]):
            reference.observe(state, Observation(strings=strings, emotives={"e": i / 3}), config)
        learned.append(reference.learn(state, config)[1])

    async def main() -> None:
        await one.append("kba", learned)
        rebuilt = KnowledgeBase("kba")
        await one.rebuild(rebuilt)
        assert _state(rebuilt) == _state(reference)

    aio.run(main())
