"""The several-worker session store (storage/sqlite_sessions.py).

It runs the session-store contract of tests/test_storage_contract.py (the same
test functions, this module's ``session_store`` fixture) and checks what only a
store shared by processes must do: two stores on one file (two workers) see each
other's writes at once (the version map), a session locked by another process
waits or is busy, and sessions survive a reopen.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import msgspec
import pytest

from storage.base import SessionBusy, SessionStore
from storage.sqlite_sessions import SqliteSessionStore
from tests.test_storage_contract import (  # noqa: F401 - collected here with this module's fixture
    _record,
    test_session_lock_serialises_and_times_out,
    test_session_store_lifecycle,
)


@pytest.fixture
def session_store(tmp_path, aio):
    store = SqliteSessionStore(tmp_path / "sessions.sqlite3")
    yield store
    aio.run(store.close())


@pytest.fixture
def two_stores(tmp_path, aio):
    """Two stores on one file, as two worker processes hold them."""
    stores = [SqliteSessionStore(tmp_path / "sessions.sqlite3") for _ in range(2)]
    yield stores
    for store in stores:
        aio.run(store.close())


def test_implements_the_protocol(session_store):
    assert isinstance(session_store, SessionStore)


def test_a_write_through_one_store_is_read_at_once_through_the_other(two_stores, aio):
    a, b = two_stores

    async def run():
        rec = _record("s1", ttl=600)
        await a.create(rec)
        assert (await b.get("s1")).state.stm == []
        await b.get("s1")   # cached in b now
        await a.save(msgspec.structs.replace(rec, metadata={"v": 1}))
        assert (await b.get("s1")).metadata == {"v": 1}
        await b.save(msgspec.structs.replace(rec, metadata={"v": 2}))
        assert (await a.get("s1")).metadata == {"v": 2}
        assert await a.delete("s1")
        assert await b.get("s1") is None and await b.touch("s1", time.time(), True) is None

    aio.run(run())


def _hold_in_child(path, held, release) -> None:
    async def run():
        store = SqliteSessionStore(path)
        async with store.lock("s", timeout=1):
            held.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
        await store.close()

    asyncio.run(run())


def test_the_session_lock_spans_processes(tmp_path, session_store, aio):
    # fcntl locks belong to a process: the holder must be another one.
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_in_child, args=(session_store.path, held, release))
    child.start()
    try:
        assert held.wait(30)

        async def run():
            with pytest.raises(SessionBusy):
                async with session_store.lock("s", timeout=0.05):
                    pass
            async with session_store.lock("other", timeout=0.05):
                pass   # another session does not wait
            waiter = asyncio.create_task(_hold(session_store, "s"))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            release.set()
            assert await asyncio.wait_for(waiter, 5) == "held"

        aio.run(run())
    finally:
        release.set()
        child.join(10)
    assert child.exitcode == 0


async def _hold(store, sid):
    async with store.lock(sid, timeout=5):
        return "held"


def test_sessions_survive_a_reopen(tmp_path, aio):
    async def run():
        first = SqliteSessionStore(tmp_path / "s.sqlite3")
        await first.create(_record("keep", ttl=600))
        await first.close()
        again = SqliteSessionStore(tmp_path / "s.sqlite3")
        try:
            assert (await again.get("keep")).session_id == "keep"
        finally:
            await again.close()

    aio.run(run())


def _predicted_session(sid: str, stm: list[list[str]]):
    """A session record whose state holds real engine predictions for ``stm``."""
    from engine import EngineConfig, KnowledgeBase, SessionState

    kb, config = KnowledgeBase("n_kato"), EngineConfig(fuzzy_token_threshold=0.5)
    for events in (["a", "b"], ["c"], ["d", "e"]), (["a"], ["b", "x"], ["c"]), (["a", "z"], ["q"]):
        kb.learn(SessionState(stm=[list(e) for e in events]), config)
    state = SessionState(stm=stm, time=len(stm))
    state.predictions = kb.predict(stm, config).predictions
    assert state.predictions
    return msgspec.structs.replace(_record(sid, ttl=600), state=state)


@pytest.mark.parametrize("stm", [[["a", "b"], ["c"]], [["a"]], [["a", "bx"]]], ids=["general", "single", "fuzzy"])
def test_predictions_round_trip_through_the_stored_row(two_stores, aio, stm):
    from storage.sqlite_sessions import _decode, _encode

    a, b = two_stores
    rec = _predicted_session("p", stm)

    async def run():
        await a.create(rec)
        assert (await b.get("p")).state.predictions == rec.state.predictions   # decoded by b
        await a.save(rec)
        assert (await b.get("p")).state == rec.state

    aio.run(run())
    assert _decode(_encode(rec)).state.predictions == rec.state.predictions


def test_a_row_written_with_predictions_as_objects_still_decodes():
    """Rows stored before predictions became arrays (field names included) read back the same."""
    from storage.sqlite_sessions import _Body, _decode, _encode, _encoder

    for stm in ([["a", "b"], ["c"]], [["a"]]):
        rec = _predicted_session("old", stm)
        st, single = rec.state, len(stm[0]) == 1 and len(stm) == 1
        old = _encoder.encode(_Body(
            rec.session_id, rec.node_id, rec.kb_id, rec.created_at, rec.metadata, rec.overrides,
            rec.config_version, rec.config_updated_at, rec.percept_data, st.stm, st.emotives_accumulator,
            st.metadata_accumulator, st.time, st.pending_vectors,
            [] if single else st.predictions, st.predictions if single else []))
        assert len(old) > len(_encode(rec))
        assert _decode(old).state.predictions == st.predictions


def _hold_table_lock(path, held, release) -> None:
    import fcntl
    import os

    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)   # the writers' lock (byte 0)
    held.set()
    release.wait(30)
    os.close(fd)


def test_probing_a_live_session_does_not_wait_for_writers(tmp_path, aio):
    """/exists is a read: a writer of another process holding the table lock does not block it."""
    import threading

    path = tmp_path / "sessions.sqlite3"
    store = SqliteSessionStore(path)
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    try:
        aio.run(store.create(_record("live", ttl=600)))
        child = ctx.Process(target=_hold_table_lock, args=(path, held, release))
        child.start()
        assert held.wait(30)
        answers = []
        probe = threading.Thread(target=lambda: answers.append(asyncio.run(store.probe("live"))), daemon=True)
        probe.start()
        probe.join(10)
        assert answers == [(True, False)], "probe waited for the writers' lock"
        release.set()
        child.join(30)
        aio.run(store.create(_record("gone", now=time.time() - 120)))
        assert aio.run(store.probe("gone")) == (False, True)
        assert aio.run(store.probe("gone")) == (False, False)
    finally:
        release.set()
        aio.run(store.close())
