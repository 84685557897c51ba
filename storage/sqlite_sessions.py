"""Sessions in SQLite, shared by the worker processes of one data directory.

The embedded default with several workers (``kato serve --workers N``): any worker
may receive any request of any session, so sessions live in
``<data_dir>/sessions.sqlite3`` (WAL) instead of process memory. One row per
session: the scalars the TTL rules touch on every access (``expires_at``,
``last_accessed``, ``access_count``, ``ttl_seconds``) are columns, updated in
place; the rest of the record is a msgpack body written by ``save``. A worker
keeps the decoded body of the sessions it served and decodes again only when the
stored bytes differ (another worker saved the session meanwhile). Every write of a
session row also bumps a counter in ``sessions.sqlite3.versions`` (a shared memory
map of 65,536 slots, one chosen by a hash of the session id, bumped under the write
lock after the commit); a worker whose cached row was read at the slot's current
value uses it without asking SQLite. So a session that stays on one connection
costs no row read at all, and SQLite rereads pages — which it must each time
another process committed — only for writes and for sessions another worker
changed. Two sessions sharing a slot only cost each other a reread. An access
(``touch``) rewrites the row only when it slides the expiry by more than 1% of the
TTL (at most a second), so ``access_count`` and ``last_accessed`` as stored lag
behind; the expiry is never more than that short. Durability: WAL without fsync —
a killed worker loses nothing, an OS crash may lose the latest session updates.

The per-session lock spans processes: an ``asyncio.Lock`` per session inside the
process (FIFO), then an ``fcntl`` byte-range lock on ``sessions.sqlite3.lock`` at an
offset derived from the session id, polled without blocking the event loop (waiters
of *different* processes are served in no particular order). A process that dies
releases its locks with it. Writers of the table hold an exclusive lock on byte 0
of the same file, so concurrent writes queue in the kernel instead of SQLite's
busy handler sleeping on the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import astuple

from engine import PendingVector, Prediction, SessionState, SingleSymbolPrediction
from storage.base import BackendHealth, SessionBusy, StoreUnavailable
from storage.locks import KeyedLocks
from storage.sqlite import ping_sqlite
from storage.records import EXPIRED_GRACE_SECONDS, SWEEP_SECONDS, SessionRecord

__all__ = ["SqliteSessionStore"]

CACHED_BODIES = 4096      # decoded bodies kept per process
LOCK_POLL_FIRST = 0.0005  # seconds between tries of a session lock held by another process; doubles
LOCK_POLL_MAX = 0.01
SLIDE_STEP = 0.01
VERSION_SLOTS = 1 << 16   # version counters in the shared map; slot 0 changes for every session

_U64 = struct.Struct("<Q")         # an access rewrites the row when the expiry would slide by more (of the TTL)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id    TEXT    PRIMARY KEY,
    expires_at    REAL    NOT NULL,
    last_accessed REAL    NOT NULL,
    access_count  INTEGER NOT NULL,
    ttl_seconds   INTEGER NOT NULL,
    body          BLOB    NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = "expires_at, last_accessed, access_count, ttl_seconds, body"


def _row_of(struct: type) -> Any:
    """The tuple type of ``struct``'s fields, in order (a prediction stored as an array)."""
    return tuple.__class_getitem__(tuple(f.type for f in msgspec.structs.fields(struct)))


# A prediction is stored as the array of its field values: without the ~35 field
# names per prediction a session row is half the size (~10 instead of ~21 KB with
# two dozen predictions), and every observe rewrites it. Rows written before this
# format hold objects; both decode.
_PredictionRow = _row_of(Prediction)
_SingleRow = _row_of(SingleSymbolPrediction)


class _Body(msgspec.Struct, array_like=True):
    """Everything of a SessionRecord but the column scalars.

    Predictions are stored by kind: one engine call yields predictions of one path
    only (general or single-symbol, engine.md §3.9), and msgspec cannot decode an
    untagged union of the two.
    """

    session_id: str
    node_id: str
    kb_id: str
    created_at: float
    metadata: dict[str, Any]
    overrides: dict[str, Any]
    config_version: int
    config_updated_at: float
    percept_data: dict[str, Any]
    stm: list[list[str]]
    emotives_accumulator: list[dict[str, float]]
    metadata_accumulator: list[dict[str, Any]]
    time: int
    pending_vectors: list[PendingVector]
    predictions: list[_PredictionRow | Prediction]
    single_predictions: list[_SingleRow | SingleSymbolPrediction]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Body)


def _encode(rec: SessionRecord) -> bytes:
    st = rec.state
    preds = st.predictions
    single = bool(preds) and isinstance(preds[0], SingleSymbolPrediction)
    rows = [astuple(p) for p in preds]
    return _encoder.encode(_Body(
        rec.session_id, rec.node_id, rec.kb_id, rec.created_at, rec.metadata, rec.overrides, rec.config_version,
        rec.config_updated_at, rec.percept_data, st.stm, st.emotives_accumulator, st.metadata_accumulator,
        st.time, st.pending_vectors, [] if single else rows, rows if single else []))


_Row = tuple[float, float, int, int, bytes]   # expires_at, last_accessed, access_count, ttl_seconds, body


def _view(base: SessionRecord, row: _Row) -> SessionRecord:
    """``base`` with the column scalars of ``row``."""
    return msgspec.structs.replace(base, expires_at=row[0], last_accessed=row[1], access_count=row[2],
                                   ttl_seconds=row[3])


def _predictions(stored: list, kind: type) -> list:
    return [p if isinstance(p, kind) else kind(*p) for p in stored]


def _decode(raw: bytes) -> SessionRecord:
    b = _decoder.decode(raw)
    state = SessionState(stm=b.stm, emotives_accumulator=b.emotives_accumulator,
                         metadata_accumulator=b.metadata_accumulator, time=b.time,
                         pending_vectors=b.pending_vectors,
                         predictions=_predictions(b.predictions, Prediction) or
                         _predictions(b.single_predictions, SingleSymbolPrediction))
    return SessionRecord(session_id=b.session_id, node_id=b.node_id, kb_id=b.kb_id, created_at=b.created_at,
                         last_accessed=0.0, expires_at=0.0, ttl_seconds=0, metadata=b.metadata,
                         overrides=b.overrides, config_version=b.config_version,
                         config_updated_at=b.config_updated_at, state=state, percept_data=b.percept_data)


class SqliteSessionStore:
    """Session rows in ``sessions.sqlite3``; locks across processes with ``fcntl``."""

    backend = "sqlite_sessions"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()   # the connection (the metrics sampler may run elsewhere)
        # session id -> (versions read before the row, row, decoded record without the column scalars)
        self._cache: dict[str, tuple[tuple[int, int], _Row, SessionRecord]] = {}
        self._locks = KeyedLocks()
        self._last_sweep = 0.0
        try:
            self._fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            vfd = os.open(f"{self.path}.versions", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = _U64.size * (VERSION_SLOTS + 1)
                if os.fstat(vfd).st_size < size:
                    os.ftruncate(vfd, size)   # zero-filled; the same size from every worker
                self._versions = mmap.mmap(vfd, size)
            finally:
                os.close(vfd)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")
            with self._writing() as db:
                db.execute("PRAGMA journal_mode=WAL")
                # No fsync, not even at checkpoints: a killed process loses nothing (the WAL
                # is in the OS cache), an OS crash may lose the latest session updates.
                db.execute("PRAGMA synchronous=OFF")
                db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection, with the table's write lock held (each statement commits by itself)."""
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreUnavailable(self.backend, str(exc)) from exc
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    # ------------------------------------------------------ versions and cache

    @staticmethod
    def _slot(session_id: str) -> int:
        return _U64.size * (1 + (zlib.crc32(session_id.encode()) & (VERSION_SLOTS - 1)))

    def _stamp(self, slot: int) -> tuple[int, int]:
        return _U64.unpack_from(self._versions, slot)[0], _U64.unpack_from(self._versions, 0)[0]

    def _bump(self, slot: int) -> tuple[int, int]:
        """Count a committed write of the slot's sessions (caller holds the write lock)."""
        _U64.pack_into(self._versions, slot, _U64.unpack_from(self._versions, slot)[0] + 1)
        return self._stamp(slot)

    def _keep(self, session_id: str, stamp: tuple[int, int], row: _Row, base: SessionRecord | None = None
              ) -> SessionRecord:
        """Cache ``row`` as read (or written) at ``stamp``; returns the record it holds.

        ``base`` is the record the row encodes when the caller has it; else the body
        is decoded, unless it is the one already cached.
        """
        cached = self._cache.get(session_id)
        if base is None:
            base = cached[2] if cached is not None and cached[1][4] == row[4] else _decode(row[4])
        if cached is None and len(self._cache) >= CACHED_BODIES:
            del self._cache[next(iter(self._cache))]
        self._cache[session_id] = (stamp, row, base)
        return _view(base, row)

    def _current(self, session_id: str) -> tuple[_Row, SessionRecord] | None:
        """The stored row and record, from the cache while no write bumped the session's slot."""
        stamp = self._stamp(self._slot(session_id))
        cached = self._cache.get(session_id)
        if cached is not None and cached[0] == stamp:
            return cached[1], _view(cached[2], cached[1])
        try:
            with self._lock:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",
                                       (session_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc
        if row is None:
            self._cache.pop(session_id, None)
            return None
        return row, self._keep(session_id, stamp, row)

    # ---------------------------------------------------------- SessionStore

    async def create(self, record: SessionRecord) -> None:
        """Store a new session."""
        body = _encode(record)
        row = (record.expires_at, record.last_accessed, record.access_count, record.ttl_seconds, body)
        with self._writing() as db:
            db.execute(f"INSERT OR REPLACE INTO sessions (session_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                       (record.session_id, *row))
            stamp = self._bump(self._slot(record.session_id))
        self._keep(record.session_id, stamp, row, record)
        self._maybe_sweep(record.created_at)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session or None; never slides the TTL."""
        current = self._current(session_id)
        if current is None or time.time() > current[0][0]:
            return None
        return current[1]

    async def touch(self, session_id: str, now: float, extend: bool) -> SessionRecord | None:
        """Count an access; slide the expiry when ``extend``. None if not live.

        The row is written only when the expiry would move by more than
        :data:`SLIDE_STEP` of the TTL (at most a second): a session in steady use is
        read, not rewritten, on every access; its stored expiry is then at most that
        much short of ``now + ttl``. The record returned shows the slid expiry.
        """
        current = self._current(session_id)
        if current is None or now > current[0][0]:
            return None
        (expires_at, _, count, ttl, _), rec = current
        if not extend or expires_at >= now + ttl - min(1.0, ttl * SLIDE_STEP):
            return msgspec.structs.replace(rec, last_accessed=now, access_count=count + 1,
                                           expires_at=now + ttl if extend else expires_at)
        slot = self._slot(session_id)
        with self._writing() as db:
            row = db.execute(
                "UPDATE sessions SET last_accessed = ?1, access_count = access_count + 1, "
                "expires_at = ?1 + ttl_seconds "
                f"WHERE session_id = ?2 AND expires_at >= ?1 RETURNING {_COLUMNS}",
                (now, session_id)).fetchone()
            stamp = self._bump(slot)
        if row is None:
            self._cache.pop(session_id, None)
            return None
        return self._keep(session_id, stamp, row)

    async def probe(self, session_id: str) -> tuple[bool, bool]:
        """``(exists, expired)``; an expired session is deleted by this call.

        A live or absent session is a plain read; only the delete of an expired one
        takes the table's write lock (and checks the expiry again under it).
        """
        current = self._current(session_id)
        if current is None:
            return False, False
        if time.time() <= current[0][0]:
            return True, False
        with self._writing() as db:
            deleted = db.execute("DELETE FROM sessions WHERE session_id = ?1 AND expires_at < ?2 RETURNING 1",
                                 (session_id, time.time())).fetchone() is not None
            if deleted:
                self._bump(self._slot(session_id))
        if not deleted:   # another worker slid or deleted it meanwhile
            return await self.get(session_id) is not None, False
        self._cache.pop(session_id, None)
        return False, True

    async def save(self, record: SessionRecord) -> None:
        """Replace the stored record (a no-op if the session was deleted meanwhile)."""
        body = _encode(record)
        row = (record.expires_at, record.last_accessed, record.access_count, record.ttl_seconds, body)
        with self._writing() as db:
            changed = db.execute(
                "UPDATE sessions SET expires_at = ?, last_accessed = ?, access_count = ?, ttl_seconds = ?, body = ? "
                "WHERE session_id = ?", (*row, record.session_id)).rowcount
            if not changed:
                return
            stamp = self._bump(self._slot(record.session_id))
        self._keep(record.session_id, stamp, row, record)

    async def delete(self, session_id: str) -> bool:
        """Remove a session; False when it was not live."""
        with self._writing() as db:
            row = db.execute("DELETE FROM sessions WHERE session_id = ? RETURNING expires_at",
                             (session_id,)).fetchone()
            self._bump(self._slot(session_id))
        self._cache.pop(session_id, None)
        return row is not None and time.time() <= row[0]

    async def count(self) -> int:
        """Exact number of live sessions (a scan of the table)."""
        now = time.time()
        self._maybe_sweep(now)
        try:
            with self._lock:
                return self._db.execute("SELECT count(*) FROM sessions WHERE expires_at >= ?", (now,)).fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc

    @asynccontextmanager
    async def lock(self, session_id: str, timeout: float) -> AsyncIterator[None]:
        """Hold the session's lock across processes; SessionBusy after ``timeout`` seconds."""
        offset = 1 + zlib.crc32(session_id.encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._locks.hold(offset, timeout, session_id):
            delay = LOCK_POLL_FIRST
            while not self._try_lock(offset):
                if loop.time() >= deadline:
                    raise SessionBusy(session_id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOCK_POLL_MAX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    def _try_lock(self, offset: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    async def ping(self) -> BackendHealth:
        """Run ``SELECT 1``; reports the error text instead of raising."""
        return ping_sqlite(self._db, self._lock)

    async def close(self) -> None:
        """Close the file (the sessions stay for the next start)."""
        with self._lock:
            self._db.close()
            os.close(self._fd)
            self._versions.close()

    def _maybe_sweep(self, now: float) -> None:
        if now - self._last_sweep < SWEEP_SECONDS:
            return
        self._last_sweep = now
        with self._writing() as db:
            if db.execute("DELETE FROM sessions WHERE expires_at < ?", (now - EXPIRED_GRACE_SECONDS,)).rowcount:
                self._bump(0)
