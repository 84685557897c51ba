"""Embedded durable pattern store: an append-only learn log per kb_id in SQLite.

Every learn the engine applies (manual or auto, re-learns included) is appended as
one row; rebuilding a knowledge base replays its rows in order with
``KnowledgeBase.apply``, which reproduces names, frequencies, emotive windows,
metadata, symbol statistics and affinities exactly. finalize-training is logged as
a marker row and re-run at that point of the replay, because its results depend
on the statistics of the moment it ran (engine.md D8). clear-all deletes the
knowledge base's rows. A restored backup is one snapshot row that replaces every
row of the knowledge base in the same transaction; replay loads it, then applies
the rows logged after it.

Durability: WAL journal with ``synchronous=NORMAL`` — a committed learn survives a
crash or kill of the server process (an OS crash may lose the last commits).
Appends are sub-millisecond, so they run inline on the caller's thread instead of
paying a thread hop; the connection is guarded by a lock for the rebuild thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from engine import KnowledgeBase, LearnedPattern
from storage.base import BackendHealth, StoreUnavailable
from storage.snapshot import KbSnapshot, load_snapshot

__all__ = ["SqlitePatternStore"]

_LEARN, _FINALIZE, _SNAPSHOT = 0, 1, 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS learn_log (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    kb_id TEXT    NOT NULL,
    kind  INTEGER NOT NULL,
    name  TEXT    NOT NULL DEFAULT '',
    body  BLOB
);
CREATE INDEX IF NOT EXISTS learn_log_kb ON learn_log (kb_id, seq);
"""


class SqlitePatternStore:
    """Learn log in one SQLite file (``<data_dir>/patterns.sqlite3``)."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(LearnedPattern)
        self._snapshot_decoder = msgspec.msgpack.Decoder(KbSnapshot)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc

    def _write(self, rows: list[tuple[str, int, str, bytes | None]], replace: str | None = None) -> None:
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    if replace is not None:
                        self._db.execute("DELETE FROM learn_log WHERE kb_id = ?", (replace,))
                    self._db.executemany(
                        "INSERT INTO learn_log (kb_id, kind, name, body) VALUES (?, ?, ?, ?)", rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc

    async def append(self, kb_id: str, learned: Sequence[LearnedPattern]) -> None:
        """Append the learns in one transaction (all or none)."""
        if learned:
            self._write([(kb_id, _LEARN, rec.name, self._encoder.encode(rec)) for rec in learned])

    async def mark_finalized(self, kb_id: str) -> None:
        """Log a finalize-training marker for ``kb_id``."""
        self._write([(kb_id, _FINALIZE, "", None)])

    def _replay(self, kb: KnowledgeBase) -> int:
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, kind, body FROM learn_log WHERE kb_id = ? ORDER BY seq", (kb.kb_id,)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc
        generation = 0
        for seq, kind, body in rows:
            if kind == _LEARN:
                kb.apply(self._decoder.decode(body))
            elif kind == _SNAPSHOT:
                load_snapshot(kb, self._snapshot_decoder.decode(body))
            else:
                kb.finalize()
            generation = seq
        return generation

    async def rebuild(self, kb: KnowledgeBase) -> int:
        """Replay the learn log of ``kb.kb_id`` into ``kb`` (in a worker thread)."""
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
        """Delete every row of ``kb_id``."""
        try:
            with self._lock:
                self._db.execute("DELETE FROM learn_log WHERE kb_id = ?", (kb_id,))
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.backend, str(exc)) from exc

    async def restore(self, kb_id: str, snapshot: KbSnapshot) -> None:
        """Replace every row of ``kb_id`` by one snapshot row, in one transaction."""
        self._write([(kb_id, _SNAPSHOT, "", self._encoder.encode(snapshot))], replace=kb_id)

    async def ping(self) -> BackendHealth:
        """Run ``SELECT 1``; reports the error text instead of raising."""
        start = time.perf_counter()
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            return BackendHealth(ok=False, latency_ms=_ms(start), error=str(exc))
        return BackendHealth(ok=True, latency_ms=_ms(start))

    async def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
