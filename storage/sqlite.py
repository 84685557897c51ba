"""Embedded durable pattern store: an append-only learn log per kb_id in SQLite,
shared by every worker process of one data directory.

Every learn the engine applies (manual or auto, re-learns included) is appended as
one row; rebuilding a knowledge base replays its rows in order with
``KnowledgeBase.apply``, which reproduces names, frequencies, emotive windows,
metadata, symbol statistics and affinities exactly. finalize-training is logged as
a marker row and re-run at that point of the replay, because its results depend
on the statistics of the moment it ran (engine.md D8). clear-all deletes the
knowledge base's rows. A restored backup is one snapshot row that replaces every
row of the knowledge base in the same transaction; replay loads it, then applies
the rows logged after it. With several workers (:class:`LoggedVectorStore`) the
vectors indexed for a knowledge base are rows of the log too.

Several processes, one order: the log is the total order of every change. A
knowledge base handed out by :meth:`SqlitePatternStore.knowledge_base` learns
through the log: its ``apply`` takes the log's write lock, first applies the rows
other processes logged since it last looked, then applies the learn and appends
its row in the same transaction. So each process's in-memory index is always a
prefix of the log, applied in log order, identical to a rebuild (frequencies
exact under concurrent re-learns). Before each use the web layer calls
:meth:`~SqlitePatternStore.sync`: SQLite's ``PRAGMA data_version`` (a counter in
shared memory, a few microseconds) says whether any other connection committed
since; only then are new rows read. A clear-all or restore bumps the knowledge
base's epoch (``kb_epochs``): a process that sees another epoch reloads it.

Locking: writers take an exclusive ``fcntl`` lock on ``<db>.lock`` around the
transaction (a waiting writer wakes the moment the lock is free, instead of
SQLite's busy handler sleeping a millisecond or more on the event loop) and a
thread lock guards the connection. Durability: WAL journal with
``synchronous=NORMAL`` — a committed learn survives a crash or kill of the server
process (an OS crash may lose the last commits).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio
import msgspec
import numpy

from engine import KnowledgeBase, LearnedPattern
from engine.vectors import ExactVectorIndex, VectorIndex
from storage.base import BackendHealth, StoreUnavailable
from storage.snapshot import KbSnapshot, load_snapshot

__all__ = ["SqlitePatternStore", "SqliteKnowledgeBase", "LoggedVectorStore", "LoggedVectorIndex", "ping_sqlite"]

_LEARN, _FINALIZE, _SNAPSHOT, _VECTORS = 0, 1, 2, 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS learn_log (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    kb_id TEXT    NOT NULL,
    kind  INTEGER NOT NULL,
    name  TEXT    NOT NULL DEFAULT '',
    body  BLOB
);
CREATE INDEX IF NOT EXISTS learn_log_kb ON learn_log (kb_id, seq);
CREATE TABLE IF NOT EXISTS kb_epochs (
    kb_id TEXT    PRIMARY KEY,
    epoch INTEGER NOT NULL
);
"""
_ROWS = "SELECT seq, kind, body FROM learn_log WHERE kb_id = ? AND seq > ? ORDER BY seq"
_INSERT = "INSERT INTO learn_log (kb_id, kind, name, body) VALUES (?, ?, ?, ?)"
_BUMP = "INSERT INTO kb_epochs (kb_id, epoch) VALUES (?, 1) ON CONFLICT (kb_id) DO UPDATE SET epoch = epoch + 1"

_vectors_encoder = msgspec.msgpack.Encoder()
_vectors_decoder = msgspec.msgpack.Decoder(list[tuple[str, list[float]]])


class SqliteKnowledgeBase(KnowledgeBase):
    """A knowledge base that learns through the learn log and follows it.

    ``apply`` and ``finalize`` commit to the log after applying whatever other
    processes logged first (:class:`SqlitePatternStore`); ``seq`` is the last row
    applied, ``epoch`` the clear/restore count it was applied under and ``version``
    the connection's ``data_version`` at the last sync.
    """

    def __init__(self, kb_id: str, store: "SqlitePatternStore", vectors: VectorIndex | None = None) -> None:
        super().__init__(kb_id, vectors=vectors)
        self.store = store
        self.seq = 0
        self.epoch = 0
        self.version = -1

    def apply(self, record: LearnedPattern) -> int:
        """Apply one learn after every row logged before it and log it; returns the frequency."""
        return self.store._learn(self, record)

    def finalize(self) -> int:
        """finalize-training at the log's current end, logged as a marker; returns the patterns processed."""
        return self.store._finalize(self)


class SqlitePatternStore:
    """Learn log in one SQLite file (``<data_dir>/patterns.sqlite3``)."""

    backend = "sqlite"
    # Its knowledge bases commit on the calling thread (no event loop round trip), so
    # engine calls that learn may run inline on the event loop (web/runtime.py).
    commits_inline = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        memory = str(path) == ":memory:"
        if not memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_fd = -1
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(LearnedPattern)
        self._snapshot_decoder = msgspec.msgpack.Decoder(KbSnapshot)
        self._attached: dict[str, SqliteKnowledgeBase] = {}
        try:
            if not memory:
                self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")
            with self._lock, self._file_locked():   # another worker may be creating the file now
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc

    # ------------------------------------------------------------ locking

    @contextmanager
    def _file_locked(self) -> Iterator[None]:
        """The cross-process writer lock (nothing to lock for an in-memory database)."""
        if self._lock_fd < 0:
            yield
            return
        fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the thread lock and the cross-process file lock.

        Commits when the block ends, rolls back on an exception; SQLite errors become
        StoreUnavailable.
        """
        with self._lock, self._file_locked():
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(self.backend, str(exc)) from exc

    def _write(self, rows: list[tuple[str, int, str, bytes | None]], replace: str | None = None) -> None:
        with self._writing() as db:
            if replace is not None:
                db.execute("DELETE FROM learn_log WHERE kb_id = ?", (replace,))
                db.execute(_BUMP, (replace,))
            db.executemany(_INSERT, rows)

    # ------------------------------------------------------------ reading

    def _epoch(self, kb_id: str) -> int:
        row = self._db.execute("SELECT epoch FROM kb_epochs WHERE kb_id = ?", (kb_id,)).fetchone()
        return row[0] if row else 0

    def _apply_rows(self, kb: KnowledgeBase, rows: list[tuple[int, int, bytes | None]]) -> int:
        """Apply log rows to ``kb`` in order (the engine's own apply, never a re-log)."""
        generation = 0
        for seq, kind, body in rows:
            if kind == _LEARN:
                KnowledgeBase.apply(kb, self._decoder.decode(body))
            elif kind == _SNAPSHOT:
                load_snapshot(kb, self._snapshot_decoder.decode(body))
            elif kind == _VECTORS:
                target = kb.vectors.local if isinstance(kb.vectors, LoggedVectorIndex) else kb.vectors
                target.upsert(_vectors_decoder.decode(body))
            else:
                KnowledgeBase.finalize(kb)
            generation = seq
        return generation

    def _catch_up(self, kb: SqliteKnowledgeBase) -> None:
        """Apply the rows logged after ``kb.seq`` (caller holds the lock, inside a transaction).

        Nothing to read when no other connection committed since ``kb`` last looked
        (``data_version`` ignores this connection's own commits, which ``kb`` holds).
        """
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == kb.version:
            return
        epoch = self._epoch(kb.kb_id)
        if epoch != kb.epoch:   # cleared or restored since: start over from the log
            with kb._lock.write():
                kb.index.clear()
            if isinstance(kb.vectors, LoggedVectorIndex):
                kb.vectors.local.clear()
            kb.seq, kb.epoch = 0, epoch
        rows = self._db.execute(_ROWS, (kb.kb_id, kb.seq)).fetchall()
        if rows:
            kb.seq = self._apply_rows(kb, rows)
        kb.version = version

    def _replay(self, kb: KnowledgeBase) -> int:
        try:
            with self._lock:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
                self._db.execute("BEGIN")
                try:
                    epoch = self._epoch(kb.kb_id)
                    rows = self._db.execute(_ROWS, (kb.kb_id, 0)).fetchall()
                finally:
                    self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc
        if isinstance(kb.vectors, LoggedVectorIndex):
            kb.vectors.local.clear()   # the index object may have served an evicted copy
        generation = self._apply_rows(kb, rows)
        if isinstance(kb, SqliteKnowledgeBase):
            kb.seq, kb.epoch, kb.version = generation, epoch, version
            self._attached[kb.kb_id] = kb
        return generation

    # ---------------------------------------------------- PatternStore API

    async def append(self, kb_id: str, learned: Sequence[LearnedPattern]) -> None:
        """Append learns applied to a plain KnowledgeBase, in one transaction (all or none)."""
        if learned:
            self._write([(kb_id, _LEARN, rec.name, self._encoder.encode(rec)) for rec in learned])

    async def mark_finalized(self, kb_id: str) -> None:
        """Log a finalize-training marker for ``kb_id`` (a no-op for an open knowledge base of
        this store, whose ``finalize`` already logged it)."""
        if kb_id not in self._attached:
            self._write([(kb_id, _FINALIZE, "", None)])

    async def rebuild(self, kb: KnowledgeBase) -> int:
        """Replay the learn log of ``kb.kb_id`` into ``kb`` (in a worker thread); a
        SqliteKnowledgeBase then follows the log."""
        return await anyio.to_thread.run_sync(self._replay, kb)

    async def generation(self, kb_id: str) -> int:
        """Sequence number of the knowledge base's last log row (0 when empty)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT max(seq) FROM learn_log WHERE kb_id = ?", (kb_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc
        return row[0] or 0

    async def clear(self, kb_id: str) -> None:
        """Delete every row of ``kb_id``; other processes reload it (empty) on their next sync."""
        self._write([], replace=kb_id)

    async def restore(self, kb_id: str, snapshot: KbSnapshot) -> None:
        """Replace every row of ``kb_id`` by one snapshot row, in one transaction."""
        self._write([(kb_id, _SNAPSHOT, "", self._encoder.encode(snapshot))], replace=kb_id)

    async def ping(self) -> BackendHealth:
        """Run ``SELECT 1``; reports the error text instead of raising."""
        return ping_sqlite(self._db, self._lock)

    async def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        self.close_now()

    def close_now(self) -> None:
        """:meth:`close` for synchronous callers (a failed start-up releasing what it opened)."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                self._db.close()
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)
                    self._lock_fd = -1

    # ------------------------------------------- knowledge bases that follow the log

    def knowledge_base(self, kb_id: str, vectors: VectorIndex | None = None) -> SqliteKnowledgeBase:
        """A new, empty knowledge base that learns through this store (load it with :meth:`rebuild`)."""
        return SqliteKnowledgeBase(kb_id, self, vectors)

    def detach(self, kb: KnowledgeBase) -> None:
        """Stop treating ``kb`` as this process's open copy (the web layer dropped it)."""
        if self._attached.get(kb.kb_id) is kb:
            del self._attached[kb.kb_id]

    async def sync(self, kb: KnowledgeBase) -> int:
        """Apply what other processes logged for ``kb`` since it last looked; returns its generation.

        Costs one ``PRAGMA data_version`` when nothing was committed elsewhere.
        """
        if not isinstance(kb, SqliteKnowledgeBase):
            return 0
        try:
            with self._lock:
                if self._db.execute("PRAGMA data_version").fetchone()[0] != kb.version:
                    self._db.execute("BEGIN")
                    try:
                        self._catch_up(kb)
                    finally:
                        self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc
        return kb.seq

    def _learn(self, kb: SqliteKnowledgeBase, record: LearnedPattern) -> int:
        with self._logging(kb) as db:
            record.frequency = KnowledgeBase.apply(kb, record)
            kb.seq = db.execute(_INSERT, (kb.kb_id, _LEARN, record.name, self._encoder.encode(record))).lastrowid
        return record.frequency

    def _finalize(self, kb: SqliteKnowledgeBase) -> int:
        with self._logging(kb) as db:
            n = KnowledgeBase.finalize(kb)
            kb.seq = db.execute(_INSERT, (kb.kb_id, _FINALIZE, "", None)).lastrowid
        return n

    @contextmanager
    def _logging(self, kb: SqliteKnowledgeBase) -> Iterator[sqlite3.Connection]:
        """A write transaction with ``kb`` caught up first; if it fails after ``kb`` changed,
        ``kb`` reloads from the log on its next sync (memory never shows an unlogged change)."""
        try:
            with self._writing() as db:
                self._catch_up(kb)
                yield db
        except BaseException:
            kb.epoch, kb.version = -1, -1
            raise

    def _log_vectors(self, kb_id: str, index: "LoggedVectorIndex", items: list[tuple[str, list[float]]]) -> None:
        with self._writing() as db:
            kb = self._attached.get(kb_id)
            if kb is not None:
                self._catch_up(kb)
            dimension = index.local.dimension
            fresh, mismatched = [], []
            for name, vec in items:
                if vec and name not in index.local:
                    (fresh if dimension is None or len(vec) == dimension else mismatched).append((name, list(vec)))
            if mismatched:   # warned and counted here (§4.5.4), never logged: no worker could index them
                index.local.upsert(mismatched)
            if not fresh:
                return
            seq = db.execute(_INSERT, (kb_id, _VECTORS, "", _vectors_encoder.encode(fresh))).lastrowid
            if kb is not None and kb.vectors is index:
                index.local.upsert(fresh)
                kb.seq = seq

    def _vector_rows(self, kb_id: str) -> list[list[tuple[str, list[float]]]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM learn_log WHERE kb_id = ? AND kind = ? ORDER BY seq",
                                    (kb_id, _VECTORS)).fetchall()
        return [_vectors_decoder.decode(body) for (body,) in rows]


class _LocalVectors(ExactVectorIndex):
    """The in-process copy of a logged vector index, with membership by name."""

    def __contains__(self, name: str) -> bool:
        return name in self._known


class LoggedVectorIndex:
    """The engine's ``VectorIndex`` when vectors are rows of the learn log.

    Searches the in-process exact index (kept in step by the store's catch-up);
    ``upsert`` logs the new vectors and applies them, in log order.
    """

    def __init__(self, store: SqlitePatternStore, kb_id: str) -> None:
        self.store = store
        self.kb_id = kb_id
        self.local = _LocalVectors()

    def search(self, vector: numpy.ndarray, k: int) -> list[str]:
        """Names of up to ``k`` nearest logged vectors, nearest first."""
        return self.local.search(vector, k)

    def upsert(self, items: list[tuple[str, list[float]]]) -> None:
        """Log the vectors not indexed yet (idempotent per name)."""
        self.store._log_vectors(self.kb_id, self, items)

    def clear(self) -> None:
        """Forget the in-process copy (the rows went with the store's clear-all or drop)."""
        self.local.clear()


class LoggedVectorStore:
    """Vectors of every knowledge base as rows of the shared learn log (several workers).

    Local-mode Qdrant locks its folder to one process, so with several workers the
    embedded default keeps vectors here instead: every worker searches an exact
    in-process index rebuilt from, and kept in step with, the log.
    """

    backend = "sqlite"

    def __init__(self, patterns: SqlitePatternStore) -> None:
        self.patterns = patterns
        self._indexes: dict[str, LoggedVectorIndex] = {}

    def index(self, kb_id: str) -> LoggedVectorIndex:
        """The index of ``kb_id`` (one per knowledge base, created lazily)."""
        index = self._indexes.get(kb_id)
        if index is None:
            index = self._indexes[kb_id] = LoggedVectorIndex(self.patterns, kb_id)
        return index

    async def drop(self, kb_id: str) -> None:
        """Forget this process's vectors of ``kb_id``.

        The rows are already gone: the vectors live in the learn log, whose ``clear``
        and ``restore`` (the only callers' previous step) delete every row of the
        knowledge base in their own transaction. A second delete here, in a transaction
        of its own, could take vectors that another worker logged in between.
        """
        index = self._indexes.get(kb_id)
        if index is not None:
            index.local.clear()

    async def points(self, kb_id: str) -> list[tuple[str, list[float]]]:
        """Every ``(name, vector)`` indexed for ``kb_id``, in the order indexed."""
        seen: set[str] = set()
        dimension = None
        out = []
        for items in self.patterns._vector_rows(kb_id):
            for name, vec in items:
                if name in seen or not vec or (dimension is not None and len(vec) != dimension):
                    continue
                dimension = dimension or len(vec)
                seen.add(name)
                out.append((name, vec))
        return out

    def unindexed(self) -> int:
        """Vectors skipped so far by this process because of a dimension mismatch."""
        return sum(index.local.unindexed for index in self._indexes.values())

    async def ping(self) -> BackendHealth:
        """The learn log's health."""
        return await self.patterns.ping()

    async def close(self) -> None:
        """Nothing to release: the pattern store owns the file."""


def ping_sqlite(db: sqlite3.Connection, lock: threading.Lock) -> BackendHealth:
    """``SELECT 1`` on ``db`` under ``lock``: the health of an SQLite file, errors as text."""
    start = time.perf_counter()
    try:
        with lock:
            db.execute("SELECT 1").fetchone()
    except sqlite3.Error as exc:
        return BackendHealth(ok=False, latency_ms=_ms(start), error=str(exc))
    return BackendHealth(ok=True, latency_ms=_ms(start))


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
