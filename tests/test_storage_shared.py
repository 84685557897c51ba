"""The shared pattern store's own promises, in one process with two store instances.

Two ``SharedPatternStore`` objects with their own Redis pools stand for two
server processes (they share the in-process ClickHouse engine and a real
redis-server). Learns run on worker threads (``apply``, as observe-sequence's in
the service) or on the event loop (``commit``, as POST /learn and observe). The knowledge
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

from engine import EngineConfig, KnowledgeBase, LearnedPattern, Observation, SessionState
from engine.observation import pattern_hash
from storage.clickhouse import lsh_bands, minhash_signature, pattern_rows

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


async def _learn_through_both(stores, kb_id: str, rounds: int) -> tuple[KnowledgeBase, KnowledgeBase]:
    """Open ``kb_id`` on both stores, run four concurrent learners (two on each) for
    ``rounds`` learns each, and bring both up to date: the two knowledge bases."""
    kbs = [store.knowledge_base(kb_id) for store in stores]
    for store, kb in zip(stores, kbs):
        await store.rebuild(kb)
    await asyncio.gather(*(anyio.to_thread.run_sync(_learner(kb, tag, rounds))
                           for tag, kb in enumerate(kbs + kbs)))
    for store, kb in zip(stores, kbs):
        await store.sync(kb)
    return kbs[0], kbs[1]


def test_two_processes_hold_bit_identical_knowledge_bases_after_concurrent_learning(two_stores, aio):
    one, two = two_stores

    async def main() -> None:
        kb1, kb2 = await _learn_through_both(two_stores, "kbx", 12)
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


def test_the_symbol_keys_in_redis_follow_the_learns(two_stores, redis_server, aio):
    """api.md §4.4: after concurrent learns and re-learns through two processes,
    ``symbols:freq`` counts every occurrence of every learn, ``symbols:pmf`` the patterns
    holding the symbol, ``symbol_to_patterns:{symbol}`` names exactly those patterns, and
    the global totals add up."""
    import redis

    kb = aio.run(_learn_through_both(two_stores, "kbs", 10))[0]
    freq: dict[str, int] = {}
    holders: dict[str, set[str]] = {}
    total_length = 0
    for name in kb.index.iter_names():
        record = kb.pattern(name)
        symbols = [sym for event in record["pattern_data"] for sym in event]
        total_length += len(symbols) * record["frequency"]
        for sym in symbols:
            freq[sym] = freq.get(sym, 0) + record["frequency"]
            holders.setdefault(sym, set()).add(name)
    assert any(kb.pattern(name)["frequency"] > 1 for name in kb.index.iter_names())   # re-learns happened
    r = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{SHARED_REDIS_DB}", decode_responses=True)
    assert {k: int(v) for k, v in r.hgetall("kbs:symbols:freq").items()} == freq
    assert {k: int(v) for k, v in r.hgetall("kbs:symbols:pmf").items()} == {k: len(v) for k, v in holders.items()}
    for sym, names in holders.items():
        assert r.smembers(f"kbs:symbol_to_patterns:{sym}") == names
    assert len(list(r.scan_iter("kbs:symbol_to_patterns:*"))) == len(holders)
    assert int(r.get("kbs:global:total_symbols_in_patterns_frequencies")) == total_length
    assert int(r.get("kbs:global:total_unique_patterns")) == int(r.get("kbs:global:total_pattern_frequencies")) \
        == len(kb)


def _learn_a_b(kb: KnowledgeBase) -> int:
    """Learn the pattern a, b through ``kb`` (worker thread); its frequency."""
    config = EngineConfig()
    state = SessionState()
    for strings in (["a"], ["b"]):
        kb.observe(state, Observation(strings=strings), config)
    return kb.learn(state, config)[1].frequency


def test_a_relearn_waits_out_a_running_clear_all(two_stores, redis_server, aio):
    """A learn script refused because a clear-all runs (its {'clearing'} reply) is sent
    again once the clear-all ended; the learn neither fails nor is lost."""
    import redis

    one, _ = two_stores
    r = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{SHARED_REDIS_DB}")

    async def main() -> None:
        kb = one.knowledge_base("kcl")
        await one.rebuild(kb)
        assert await anyio.to_thread.run_sync(_learn_a_b, kb) == 1
        r.set("kato:kbclear:kcl", "another-process", px=5000)    # a clear-all runs elsewhere...
        learning = asyncio.ensure_future(anyio.to_thread.run_sync(_learn_a_b, kb))
        await asyncio.sleep(0.1)
        assert not learning.done()
        r.delete("kato:kbclear:kcl")                              # ...and ends without a change
        assert await learning == 2

    aio.run(main())


_BUSY = """local s = redis.call('TIME'); local t0 = s[1] * 1000000 + s[2]
while true do local n = redis.call('TIME'); if n[1] * 1000000 + n[2] - t0 > tonumber(ARGV[1]) then break end end
return 1"""


def test_a_learn_script_resent_after_a_reply_timeout_commits_once(redis_server, chdb_path, aio):
    """The Redis client resends a command whose reply timed out. Redis, busy for longer
    than the client's socket timeout, then runs the learn script twice: the second run
    must answer the first one's reply, not count the learn again."""
    import threading

    import clickhouse_connect
    import redis

    from storage.clickhouse import ClickHouseRows
    from storage.redis import RedisConnector
    from storage.shared import SharedPatternStore

    redis_server.command("-n", str(SHARED_REDIS_DB), "FLUSHDB")
    url = redis_server.url.rsplit("/", 1)[0] + f"/{SHARED_REDIS_DB}"
    store = SharedPatternStore(ClickHouseRows(lambda: clickhouse_connect.get_client(interface="chdb", path=chdb_path),
                                              f"retry_{uuid.uuid4().hex[:8]}"), RedisConnector(url, socket_timeout=0.5))
    r = redis.Redis.from_url(url)

    async def main() -> None:
        kb = store.knowledge_base("kre")
        await store.rebuild(kb)
        assert await anyio.to_thread.run_sync(_learn_a_b, kb) == 1
        busy = threading.Thread(target=lambda: r.eval(_BUSY, 0, 800_000))   # Redis busy for 0.8 s
        busy.start()
        await asyncio.sleep(0.05)
        try:
            assert await anyio.to_thread.run_sync(_learn_a_b, kb) == 2
        finally:
            busy.join()
        await asyncio.sleep(0.3)   # any second run has happened by now
        (name,) = kb.index.iter_names()
        assert int(r.get(f"kre:frequency:{name}")) == 2 and int(r.get("kato:kbgen:kre")) == 2
        await store.close()

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


def _reference_signature(symbols: list[str]) -> list[int]:
    """datasketch's MinHash update, one symbol at a time: the independent reference for
    the signatures that storage/clickhouse.py computes for many symbols at once."""
    import hashlib
    import struct

    import numpy

    import storage.clickhouse as clickhouse

    signature = numpy.full(100, clickhouse._MAX_HASH, dtype=numpy.uint64)
    for sym in symbols:
        hv = numpy.uint64(struct.unpack("<I", hashlib.sha1(sym.encode("utf-8")).digest()[:4])[0])
        with numpy.errstate(over="ignore"):  # uint64 products wrap, exactly as datasketch's do
            permuted = numpy.bitwise_and((clickhouse._PERM_A * hv + clickhouse._PERM_B) % clickhouse._MERSENNE,
                                         clickhouse._MAX_HASH)
        signature = numpy.minimum(signature, permuted)
    return signature.tolist()


def test_rows_built_together_match_the_one_row_reference(monkeypatch):
    # pattern_rows computes MinHash signatures and LSH bands of many rows with numpy;
    # each row must equal the one-symbol-at-a-time reference / lsh_bands (CPython's own
    # tuple hash), and so must minhash_signature.
    import random

    import numpy

    import storage.clickhouse as clickhouse

    rng = random.Random(5)
    alphabet = ["a", "hello", "é", "日本", "", "x" * 300] + [f"s{i}" for i in range(400)]

    def check(n: int) -> None:
        patterns = [(f"p{i}", [[rng.choice(alphabet) for _ in range(rng.randint(0, 4))]
                               for _ in range(rng.randint(0, 6))]) for i in range(n)]
        for (name, events), row in zip(patterns, pattern_rows("kb", patterns), strict=True):
            symbols = [s for event in events for s in event]
            tokens = sorted(set(symbols))
            signature = _reference_signature(symbols)
            assert minhash_signature(symbols) == signature
            assert row == ("kb", name, events, len(symbols), tokens, len(tokens), signature, lsh_bands(signature),
                           events[0][0] if events and events[0] else "",
                           events[-1][-1] if events and events[-1] else "")
            assert all(type(v) is int for v in row[6] + row[7])   # plain ints: JSON numbers

    check(500)
    monkeypatch.setattr(clickhouse, "_PERMUTED_MAX", 40)   # the symbol cache resets between and within batches
    for _ in range(10):
        check(30)
    assert pattern_rows("kb", []) == []
    # Band hashes over the whole 32-bit range (signatures of real symbols are spread there too).
    values = numpy.array([[rng.randrange(2**32) for _ in range(100)] for _ in range(300)], dtype=numpy.uint64)
    assert clickhouse._band_hashes(values).tolist() == [lsh_bands(row) for row in values.tolist()]


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


def _shared_store(url: str, chdb_path: str, database: str):
    import clickhouse_connect

    from storage.clickhouse import ClickHouseRows
    from storage.redis import RedisConnector
    from storage.shared import SharedPatternStore

    return SharedPatternStore(ClickHouseRows(lambda: clickhouse_connect.get_client(interface="chdb", path=chdb_path),
                                             database), RedisConnector(url))


def test_concurrent_learns_of_the_same_new_patterns_batch_into_exact_frequencies(two_stores, aio):
    """Many threads of two processes learn the same few new patterns at once: they are
    coalesced into batches (one pattern several times in one batch, its row claimed by one
    caller), yet every frequency is exact, each row is written once, and both processes and
    a rebuild agree."""
    one, two = two_stores
    hot = [[["h1"], [f"h{k}"]] for k in range(2, 6)]     # 4 patterns, new to the knowledge base
    threads, rounds = 24, 10

    def learner(kb: KnowledgeBase, tag: int):
        def run() -> None:
            for r in range(rounds):
                kb.apply(LearnedPattern(name=pattern_hash(hot[(tag + r) % 4]), events=hot[(tag + r) % 4],
                                        emotives=[{"e": tag / 7}], metadata=[{"who": str(tag % 3)}],
                                        persistence=3, frequency=0))
        return run

    async def main() -> None:
        kb1, kb2 = one.knowledge_base("kbh"), two.knowledge_base("kbh")
        await one.rebuild(kb1)
        await two.rebuild(kb2)
        await asyncio.gather(*(anyio.to_thread.run_sync(learner(kb1 if tag % 2 else kb2, tag))
                               for tag in range(threads)))
        await one.sync(kb1)
        await two.sync(kb2)
        fresh = KnowledgeBase("kbh")
        await one.rebuild(fresh)
        assert _state(kb1) == _state(kb2) == _state(fresh)
        assert sorted(kb1.pattern(pattern_hash(events))["frequency"] for events in hot) == [60] * 4
        assert kb1.pattern(pattern_hash(hot[0]))["metadata"] == {"who": ["0", "1", "2"]}
        assert await one.rows.count("kbh") == 4
        assert kb1.index.total_unique_patterns == 4
        assert kb1.index.total_symbols_in_patterns_frequencies == threads * rounds * 2

    aio.run(main())


def test_learns_awaited_on_the_event_loop_batch_with_learns_from_worker_threads(two_stores, aio):
    """``SharedKnowledgeBase.commit`` (the web layer's /learn and observe) and ``apply``
    (worker threads: observe-sequence) learn the same new patterns at once through two
    processes: frequencies are exact and both processes and a rebuild agree. A commit
    whose caller is cancelled still commits, and its caller waits for it; a commit from
    another thread, or into a knowledge base not open, is refused; a store that closed
    answers learns queued late with a 503."""
    from storage.base import StoreUnavailable
    from storage.shared import _Learn

    one, two = two_stores
    hot = [[["c1"], [f"c{k}"]] for k in range(2, 6)]
    rounds = 10

    def record(tag: int, r: int) -> LearnedPattern:
        events = hot[(tag + r) % 4]
        return LearnedPattern(name=pattern_hash(events), events=events, emotives=[{"e": tag / 7}],
                              metadata=[{"who": str(tag % 3)}], persistence=3, frequency=0)

    def threaded(kb: KnowledgeBase, tag: int):
        def run() -> None:
            for r in range(rounds):
                kb.apply(record(tag, r))
        return run

    async def awaited(kb, tag: int) -> list[int]:
        return [await kb.commit(record(tag, r)) for r in range(rounds)]

    async def main() -> None:
        kb1, kb2 = one.knowledge_base("kbc"), two.knowledge_base("kbc")
        with pytest.raises(RuntimeError, match="not open"):
            await kb1.commit(record(0, 0))
        await one.rebuild(kb1)
        await two.rebuild(kb2)
        results = await asyncio.gather(*(awaited(kb1 if tag % 2 else kb2, tag) for tag in range(16)),
                                       *(anyio.to_thread.run_sync(threaded(kb1 if tag % 2 else kb2, tag))
                                         for tag in range(16, 24)))
        assert all(1 <= freq <= 240 for freqs in results[:16] for freq in freqs)
        # Each awaiting learner saw its own pattern's frequency grow.
        assert all(freqs[r] < freqs[r + 4] for freqs in results[:16] for r in range(rounds - 4))

        # A cancelled caller still waits for its learn (its locks cover the commit), and
        # the learn queued in the same batch beside it is answered.
        before = kb1.pattern(record(0, 0).name)["frequency"]
        first = asyncio.ensure_future(kb1.commit(record(0, 0)))
        second = asyncio.ensure_future(kb1.commit(record(1, 0)))
        await asyncio.sleep(0)           # both queued before the drain runs: one batch
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert kb1.pattern(record(0, 0).name)["frequency"] == before + 1
        assert await asyncio.wait_for(second, 10) >= 1

        with pytest.raises(RuntimeError, match="event loop"):
            await anyio.to_thread.run_sync(lambda: asyncio.run(kb1.commit(record(0, 0))))

        await one.sync(kb1)
        await two.sync(kb2)
        fresh = KnowledgeBase("kbc")
        await one.rebuild(fresh)
        assert _state(kb1) == _state(kb2) == _state(fresh)
        assert sorted(kb1.pattern(pattern_hash(events))["frequency"] for events in hot) == [60, 60, 61, 61]
        assert await one.rows.count("kbc") == 4

        # A learn queued once the store closed (a claim wait's retry firing late) is
        # answered with a 503 at once; a commit after close is refused.
        att = kb2.attached
        await two.close()
        late = _Learn("kbc", record(0, 0), needs_row=False, waker=asyncio.get_running_loop().create_future())
        two._enqueue(att, [late])
        assert late.waker.done() and isinstance(late.error, StoreUnavailable) and not att.queue
        with pytest.raises(RuntimeError, match="not open"):
            await kb2.commit(record(0, 0))

    aio.run(main())


def test_redis_dying_under_a_batch_loses_no_acknowledged_learn(redis_server, chdb_path, tmp_path, aio):
    """Learner threads run while redis-server is killed and started again: every learn that
    returned is in Redis and in a rebuild; every other one is wholly there or wholly absent."""
    from storage.base import StoreUnavailable
    from tests.servers.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis")          # its own server: this one gets killed
    store = _shared_store(redis.url, chdb_path, f"outage_{uuid.uuid4().hex[:8]}")
    outcomes: list[tuple[str, bool]] = []
    stop = time.monotonic() + 2.0

    def learner(kb: KnowledgeBase, tag: int):
        def run() -> None:
            i = 0
            while time.monotonic() < stop:
                events = [[f"u{tag}-{i}"], ["common"]]
                try:
                    kb.apply(LearnedPattern(name=pattern_hash(events), events=events, emotives=[], metadata=[],
                                            persistence=5, frequency=0))
                    outcomes.append((pattern_hash(events), True))
                except StoreUnavailable:
                    outcomes.append((pattern_hash(events), False))
                    time.sleep(0.02)
                i += 1
        return run

    async def main() -> None:
        kb = store.knowledge_base("kbo")
        await store.rebuild(kb)
        learning = asyncio.gather(*(anyio.to_thread.run_sync(learner(kb, tag)) for tag in range(32)))
        await asyncio.sleep(0.5)
        redis.proc.kill()
        redis.proc.wait()
        await asyncio.sleep(0.4)
        redis.start()
        await learning
        fresh = KnowledgeBase("kbo")
        await store.rebuild(fresh)
        await store.sync(kb)
        assert _state(kb) == _state(fresh)
        acknowledged = {name for name, ok in outcomes if ok}
        failed = {name for name, ok in outcomes if not ok}
        assert acknowledged and failed, "the outage was not seen, or nothing succeeded"
        present = set(fresh.index.iter_names())
        assert acknowledged <= present and present <= acknowledged | failed
        assert all(fresh.pattern(name)["frequency"] == 1 for name in present)
        assert {sym: freq for sym, freq, _ in fresh.index.symbol_stats()}["common"] == len(present)

    try:
        aio.run(main())
    finally:
        aio.run(store.close())
        redis.stop()


def test_a_claim_whose_release_met_an_outage_is_released_when_redis_returns(redis_server, chdb_path, tmp_path, aio):
    """A learn of a new pattern whose row was written but whose commit and claim release met a
    Redis outage: once Redis is back, the claim goes within moments, not after its 30 s lease,
    so another process learning the same pattern is not held up."""
    from storage.base import StoreUnavailable
    from tests.servers.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis")
    database = f"claims_{uuid.uuid4().hex[:8]}"
    one, two = (_shared_store(redis.url, chdb_path, database) for _ in range(2))
    events = [["claimed"], ["pattern"]]
    record = LearnedPattern(name=pattern_hash(events), events=events, emotives=[], metadata=[], persistence=5,
                            frequency=0)
    write = one.rows.writer.write

    async def write_then_lose_redis(rows) -> None:
        await write(rows)
        redis.stop()            # the row is in ClickHouse; the commit and the release now fail

    one.rows.writer.write = write_then_lose_redis

    async def main() -> None:
        kb1, kb2 = one.knowledge_base("kbc"), two.knowledge_base("kbc")
        await one.rebuild(kb1)
        await two.rebuild(kb2)
        with pytest.raises(StoreUnavailable):
            await anyio.to_thread.run_sync(kb1.apply, record)
        redis.start()
        started = time.monotonic()
        assert await anyio.to_thread.run_sync(kb2.apply, record) == 1
        assert time.monotonic() - started < 5.0

    try:
        aio.run(main())
    finally:
        for store in (one, two):
            aio.run(store.close())
        redis.stop()


def test_an_import_keeps_learns_parked_behind_a_claim_when_a_clear_forces_a_second_pass(two_stores, aio,
                                                                                       monkeypatch):
    """append() of [a, b]: b's new row is being written by another caller (its claim is held),
    so b is parked; a's learn script then answers need_row (a clear-all raced it), which takes
    a second pass. b must still be committed once its claim is free, not dropped."""
    from storage.shared import _Keys

    one, _ = two_stores
    reference = KnowledgeBase("kbp")
    learned = []
    for name in ("a", "b"):
        state = SessionState()
        for strings in ([name], ["end"]):
            reference.observe(state, Observation(strings=strings), EngineConfig())
        learned.append(reference.learn(state, EngineConfig())[1])
    claim = _Keys("kbp").of("claim", learned[1].name)
    real = one._run_learns
    first = [True]

    async def clear_raced_once(keys, learns, token, ordered):
        if first[0]:   # the script's answer when a clear-all dropped the row since the claim
            first[0] = False
            assert [learn.record.name for learn in learns] == [learned[0].name]   # b is parked
            return [[b"need_row"]] + [[b"skip"]] * (len(learns) - 1)
        return await real(keys, learns, token, ordered)

    monkeypatch.setattr(one, "_run_learns", clear_raced_once)

    async def main() -> None:
        r = one.redis.client
        await r.set(claim, "another-caller", px=30_000)
        asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(r.delete(claim)))
        await one.append("kbp", learned)
        rebuilt = KnowledgeBase("kbp")
        await one.rebuild(rebuilt)
        assert rebuilt.pattern(learned[0].name)["frequency"] == 1
        assert rebuilt.pattern(learned[1].name) is not None and rebuilt.pattern(learned[1].name)["frequency"] == 1

    aio.run(main())


def test_a_learn_script_failing_in_one_chunk_fails_only_that_chunks_learns(two_stores, aio, monkeypatch):
    """Concurrent learns go out as several learn-script calls (chunks). When one call
    fails on its own, the learns of the other chunks committed: they must be reported
    as committed, not as failed (a client retrying those would count them twice)."""
    import storage.shared as shared
    from redis.exceptions import ResponseError
    from storage.base import StoreUnavailable

    one, _ = two_stores
    monkeypatch.setattr(shared, "LEARN_CHUNK", 2)
    events = [[["c0"], [f"c{k}"]] for k in range(1, 13)]   # 12 new patterns
    poisoned = pattern_hash(events[5])
    real = one._eval

    async def failing_eval(source, keys, args):
        if source == shared._LEARN and any(poisoned.encode() in arg for arg in args if isinstance(arg, bytes)):
            raise ResponseError("ERR simulated failure of one learn script")
        return await real(source, keys, args)

    monkeypatch.setattr(one, "_eval", failing_eval)
    kb = one.knowledge_base("kbc")
    outcome: dict[str, object] = {}

    def learner(ev):
        def run() -> None:
            try:
                outcome[pattern_hash(ev)] = kb.apply(LearnedPattern(name=pattern_hash(ev), events=ev, emotives=[],
                                                                    metadata=[], persistence=5, frequency=0))
            except StoreUnavailable as exc:
                outcome[pattern_hash(ev)] = exc
        return run

    async def main() -> None:
        await one.rebuild(kb)
        await asyncio.gather(*(anyio.to_thread.run_sync(learner(ev)) for ev in events))
        fresh = KnowledgeBase("kbc")
        await one.rebuild(fresh)
        assert isinstance(outcome[poisoned], StoreUnavailable)
        for name, result in outcome.items():
            if isinstance(result, StoreUnavailable):
                assert fresh.pattern(name) is None, f"{name} failed but was committed"
            else:
                assert result == 1 and fresh.pattern(name)["frequency"] == 1

    aio.run(main())


class _FakeKb:
    """Stands for a knowledge base in the batching tests, which read only its id."""

    def __init__(self, kb_id: str) -> None:
        self.kb_id = kb_id


async def _settle() -> None:
    """Let the event loop run what is ready now, a few rounds deep."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_freed_batch_slot_gathers_the_last_batchs_learners_but_a_light_load_never_waits(aio, monkeypatch):
    """Group commit's gathering (SharedPatternStore._drain): after a batch of GATHER_AFTER
    or more learns, the next batch starts once GATHER_SHARE of that many are queued again,
    or when learns stopped coming for GATHER_QUIET, or after GATHER_SECONDS; after a small
    batch it starts at once."""
    import storage.shared as shared

    monkeypatch.setattr(shared, "MAX_BATCHES", 1)
    monkeypatch.setattr(shared, "GATHER_AFTER", 16)
    monkeypatch.setattr(shared, "GATHER_SHARE", 0.9)
    monkeypatch.setattr(shared, "GATHER_QUIET", 0.3)
    monkeypatch.setattr(shared, "GATHER_SECONDS", 0.8)
    store = shared.SharedPatternStore(rows=None, redis=None)  # type: ignore[arg-type]
    started: list[tuple[int, float]] = []
    release: list[asyncio.Event] = []

    async def fake_batch(att, learns):
        started.append((len(learns), time.monotonic()))
        done = asyncio.Event()
        release.append(done)
        await done.wait()

    monkeypatch.setattr(store, "_learn_batch", fake_batch)

    async def until(n: int) -> None:
        while len(started) < n:
            await asyncio.sleep(0.005)

    async def main() -> None:
        att = shared._Attached(_FakeKb("kbg"), asyncio.get_running_loop())   # type: ignore[arg-type]
        store._enqueue(att, [object()] * 20)
        await _settle()
        assert [n for n, _ in started] == [20]
        store._enqueue(att, [object()] * 5)        # queued behind the running batch
        release[0].set()
        await _settle()
        assert len(started) == 1                   # gathering: 5 of the 18 it waits for
        store._enqueue(att, [object()] * 12)
        await _settle()
        assert len(started) == 1
        store._enqueue(att, [object()])            # the 18th: the batch starts at once
        await _settle()
        assert [n for n, _ in started] == [20, 18]

        release[1].set()
        await _settle()
        freed = time.monotonic()
        store._enqueue(att, [object()] * 3)        # only 3 come back, then nothing: after GATHER_QUIET
        await until(3)
        assert started[2][0] == 3 and 0.25 <= started[2][1] - freed < 0.75

        release[2].set()
        await _settle()
        store._enqueue(att, [object()])            # after a small batch: no waiting
        await _settle()
        assert [n for n, _ in started] == [20, 18, 3, 1]

        # Learns that keep coming, though too few: the batch starts after GATHER_SECONDS.
        store._enqueue(att, [object()] * 19)       # queued behind the batch of 1
        release[3].set()
        await until(5)                             # those 19 at once (the last batch was small)
        release[4].set()
        await _settle()
        freed = time.monotonic()
        while len(started) < 6:
            store._enqueue(att, [object()])      # about 13 in GATHER_SECONDS: short of 17
            await asyncio.sleep(0.06)
        assert started[5][1] - freed >= 0.75 and 5 < started[5][0] < 17
        release[5].set()
        await asyncio.sleep(0.4)                   # nothing more came: the gathering ended empty
        assert len(started) == 6 and att.gather is None and not att.queue

    aio.run(main())


def test_two_batches_in_flight_form_a_pipeline(aio, monkeypatch):
    """Group commit's pipeline (SharedPatternStore._drain): the next batch starts once the
    running one has its rows (``_formed``, when it sends its learn script), not before;
    with two batches in flight a third waits for one of them to end."""
    import storage.shared as shared

    monkeypatch.setattr(shared, "MAX_BATCHES", 2)
    monkeypatch.setattr(shared, "GATHER_AFTER", 10_000)   # no gathering: only the pipeline here
    store = shared.SharedPatternStore(rows=None, redis=None)  # type: ignore[arg-type]
    started: list[int] = []
    formed: list[asyncio.Event] = []
    ended: list[asyncio.Event] = []

    async def fake_batch(att, learns):
        started.append(len(learns))
        rows_done, done = asyncio.Event(), asyncio.Event()
        formed.append(rows_done)
        ended.append(done)
        await rows_done.wait()
        store._formed(att, learns)
        await done.wait()

    monkeypatch.setattr(store, "_learn_batch", fake_batch)

    async def main() -> None:
        att = shared._Attached(_FakeKb("kbp"), asyncio.get_running_loop())   # type: ignore[arg-type]
        store._enqueue(att, [object()] * 4)
        await _settle()
        assert started == [4]
        store._enqueue(att, [object()] * 3)         # batch 1 still claims and writes rows
        await _settle()
        assert started == [4]
        formed[0].set()                             # batch 1 sends its script: batch 2 starts
        await _settle()
        assert started == [4, 3]
        store._enqueue(att, [object()] * 2)
        formed[1].set()                             # two in flight: the third waits
        await _settle()
        assert started == [4, 3]
        ended[0].set()                              # batch 1 ends: the third starts
        await _settle()
        assert started == [4, 3, 2] and att.batches == 2
        formed[2].set()
        ended[1].set()
        ended[2].set()
        await _settle()
        assert att.batches == 0 and att.forming is None and not att.queue

    aio.run(main())
