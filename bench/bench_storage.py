"""Server storage: learn throughput into ClickHouse + Redis, and cold open of 100k patterns.

Runs against real components: a redis-server started by tests/servers/ (append-only
file, ``appendfsync everysec`` as in docker-compose.yml) and the real ClickHouse
engine in process (chdb), so the figures include ClickHouse's own insert and scan
costs but no network. Printed under "server storage" at the end:

* **learn** — the service's path for ``POST /learn``: 256 concurrent learners on the
  event loop, each awaiting one ``SharedKnowledgeBase.commit`` at a time (what the
  handler awaits after the engine built the record), 10,000 learns (``--learns N``
  for another number, e.g. 100,000 for a long sustained run), every learn a new pattern, so
  each one is claimed, waits for its row's ClickHouse insert, is committed in Redis
  and applied in stream order before it returns — grouped with the learns queued
  beside it (storage/shared.py, "Group commit"); then the same patterns again as
  re-learns (no row to write, nothing to claim); then the same new patterns
  into a second, empty knowledge base through the engine's blocking ``apply`` from a
  pool of 256 worker threads (the service's thread pool size with server storage):
  the path of the learns of observe-sequence;
* **bulk append** — ``PatternStore.append`` of 1,000-pattern chunks (import path),
  used to fill the store to 100k;
* **cold open** — a fresh store instance rebuilding the 100k-pattern knowledge
  base (Redis snapshot + ClickHouse scan + index load), as a process does on the
  first request for a knowledge base. Target: under 10 s.

Every figure also shows the machine's 1-minute load average at its end: on a
shared machine the figures move with it. The learn figure adds the CPU time per
learn of this process (engine, KATO's storage code and chdb's ClickHouse engine,
all threads) and of redis-server: on a shared machine that is the steadier figure.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.corpus import Progress, random_patterns
from engine import KnowledgeBase, LearnedPattern
from engine.observation import pattern_hash

COLD_OPEN = 100_000
LEARNERS = 256


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _records(n: int, seed: int) -> list[LearnedPattern]:
    return [LearnedPattern(name=pattern_hash(ev), events=ev, emotives=[], metadata=[], persistence=5, frequency=0)
            for ev in random_patterns(n, seed)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from tests.servers.redis_server import RedisServer

    root = tmp_path_factory.mktemp("bench-storage")
    redis = RedisServer(root / "redis", fsync="everysec")  # as docker-compose.yml runs it
    try:
        yield redis, str(root / "chdb")
    finally:
        redis.stop()


def _store(servers, database: str):
    import clickhouse_connect

    from storage.clickhouse import ClickHouseRows
    from storage.redis import RedisConnector
    from storage.shared import SharedPatternStore

    redis, path = servers
    return SharedPatternStore(ClickHouseRows(lambda: clickhouse_connect.get_client(interface="chdb", path=path),
                                             database), RedisConnector(redis.url))


def test_learn_throughput_through_the_service_path(servers, report, request):
    learns = request.config.getoption("--learns")
    records = _records(learns, seed=7)
    store = _store(servers, f"bench_{uuid.uuid4().hex[:8]}")

    async def run() -> None:
        await store.open()   # as the service does at start: connecting is not part of learning
        kb, kb_threads = store.knowledge_base("bench_learn"), store.knowledge_base("bench_learn_threads")
        await store.rebuild(kb)
        await store.rebuild(kb_threads)   # the same new patterns again, from worker threads
        loop = asyncio.get_running_loop()
        redis_pid = servers[0].proc.pid

        async def awaiting(share: list[LearnedPattern]) -> None:
            for rec in share:   # one learn at a time, as a client waits for each answer
                await kb.commit(rec)

        async def threaded(share: list[LearnedPattern]) -> None:
            for rec in share:
                await loop.run_in_executor(pool, kb_threads.apply, rec)

        async def timed(learner: Callable[[list[LearnedPattern]], Awaitable[None]],
                        shares: list[list[LearnedPattern]]) -> tuple[float, float, float]:
            started = time.perf_counter()
            cpu, redis_cpu = time.process_time(), _cpu_seconds(redis_pid)
            await asyncio.gather(*(learner(share) for share in shares))
            return (time.perf_counter() - started, (time.process_time() - cpu) / learns * 1e3,
                    (_cpu_seconds(redis_pid) - redis_cpu) / learns * 1e3)

        def new_patterns(what: str, took: float, cpu: float, redis_cpu: float, inserts: int) -> None:
            report(f"learn: new patterns, {LEARNERS} concurrent learners, {what}", f"{learns:,}",
                   f"{learns / took:,.0f} patterns/s ({took:.1f}s, {inserts} ClickHouse inserts, "
                   f"{learns / max(inserts, 1):.0f} rows each; CPU per learn {cpu:.2f} ms here, "
                   f"{redis_cpu:.2f} ms redis-server; load {os.getloadavg()[0]:.1f})")

        took, cpu, redis_cpu = await timed(awaiting, [records[i::LEARNERS] for i in range(LEARNERS)])
        assert len(kb) == learns
        batches = store.rows.writer.batches
        new_patterns("awaited (POST /learn)", took, cpu, redis_cpu, batches)
        # The same patterns again, each learner on another's share: every learn a
        # re-learn (no row, no claim), the common case of a trained service.
        took, cpu, redis_cpu = await timed(awaiting, [records[(i + 1) % LEARNERS::LEARNERS] for i in range(LEARNERS)])
        assert len(kb) == learns and store.rows.writer.batches == batches
        report(f"learn: re-learns, {LEARNERS} concurrent learners, awaited (POST /learn)", f"{learns:,}",
               f"{learns / took:,.0f} patterns/s ({took:.1f}s; CPU per learn {cpu:.2f} ms here, "
               f"{redis_cpu:.2f} ms redis-server; load {os.getloadavg()[0]:.1f})")
        with ThreadPoolExecutor(LEARNERS) as pool:
            took, cpu, redis_cpu = await timed(threaded, [records[i::LEARNERS] for i in range(LEARNERS)])
            assert len(kb_threads) == learns
            new_patterns("worker threads (observe-sequence)", took, cpu, redis_cpu, store.rows.writer.batches - batches)
        await store.close()

    asyncio.run(run())


def test_cold_open_of_100k_patterns(servers, report):
    database = f"bench_{uuid.uuid4().hex[:8]}"
    records = _records(COLD_OPEN, seed=1)
    writer = _store(servers, database)

    async def fill() -> float:
        bar = Progress(COLD_OPEN, f"appending {COLD_OPEN:,} patterns")
        started = time.perf_counter()
        for i in range(0, COLD_OPEN, 1000):
            await writer.append("bench_cold", records[i:i + 1000])
            bar.update(i + 1000)
        took = time.perf_counter() - started
        await writer.close()
        return took

    filled = asyncio.run(fill())
    report("bulk append (1,000 per call)", f"{COLD_OPEN:,}",
           f"{COLD_OPEN / filled:,.0f} patterns/s ({filled:.1f}s; load {os.getloadavg()[0]:.1f})")
    check = records[:100]
    del records   # a process opening a knowledge base does not hold the corpus
    gc.collect()

    async def cold_open() -> tuple[float, float, int]:
        reader = _store(servers, database)
        await reader.rows.open()   # process start (connect, schema): not part of opening a KB
        started = time.perf_counter()
        snap = await reader._snapshot("bench_cold")
        read = time.perf_counter() - started
        await reader.close()
        del snap
        gc.collect()
        fresh = _store(servers, database)
        await fresh.rows.open()
        kb = fresh.knowledge_base("bench_cold")
        started = time.perf_counter()
        await fresh.rebuild(kb)
        total = time.perf_counter() - started
        await fresh.close()
        assert len(kb) == COLD_OPEN
        reference = KnowledgeBase("ref")
        for rec in check:
            reference.apply(rec)
        assert kb.pattern(check[0].name) == reference.pattern(check[0].name)
        return total, read, len(kb)

    total, read, n = asyncio.run(cold_open())
    report("cold open: rebuild index from ClickHouse + Redis", f"{n:,}",
           f"{total:.2f}s (reading the stores {read:.2f}s; target < 10 s; load {os.getloadavg()[0]:.1f})")
