"""In-process session store: the embedded default (no Redis needed).

Sessions live in a dict of the serving process, so this store suits one worker
process (the embedded default); several workers need a shared store. Expiry is
judged on ``expires_at`` at every read, so a session is gone within the same
second it expires; a periodic sweep frees the memory of long-expired sessions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from storage.base import BackendHealth
from storage.locks import KeyedLocks
from storage.records import EXPIRED_GRACE_SECONDS, SWEEP_SECONDS, SessionRecord

__all__ = ["MemorySessionStore"]



class MemorySessionStore:
    """Sessions in a dict, per-session ``asyncio.Lock`` (FIFO) for writers."""

    backend = "memory"

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._locks = KeyedLocks()
        self._last_sweep = time.time()

    async def create(self, record: SessionRecord) -> None:
        """Store a new session."""
        self._records[record.session_id] = record
        self._maybe_sweep(record.created_at)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session or None; never slides the TTL."""
        rec = self._records.get(session_id)
        if rec is None or time.time() > rec.expires_at:
            return None
        return rec

    async def touch(self, session_id: str, now: float, extend: bool) -> SessionRecord | None:
        """Count an access; slide the expiry when ``extend``. None if not live."""
        rec = self._records.get(session_id)
        if rec is None or now > rec.expires_at:
            return None
        # Scalar bookkeeping only: the state a reader holds stays consistent.
        rec.last_accessed = now
        rec.access_count += 1
        if extend:
            rec.expires_at = now + rec.ttl_seconds
        return rec

    async def probe(self, session_id: str) -> tuple[bool, bool]:
        """``(exists, expired)``; an expired session is deleted by this call."""
        rec = self._records.get(session_id)
        if rec is None:
            return False, False
        if time.time() > rec.expires_at:
            del self._records[session_id]
            return False, True
        return True, False

    async def save(self, record: SessionRecord) -> None:
        """Replace the stored record (a no-op if the session was deleted meanwhile)."""
        if record.session_id in self._records:
            self._records[record.session_id] = record

    async def delete(self, session_id: str) -> bool:
        """Remove a session; False when it was not live."""
        rec = self._records.pop(session_id, None)
        return rec is not None and time.time() <= rec.expires_at

    async def count(self) -> int:
        """Exact number of live sessions (O(n) over the stored ones)."""
        now = time.time()
        self._maybe_sweep(now)
        return sum(1 for rec in self._records.values() if rec.expires_at >= now)

    @asynccontextmanager
    async def lock(self, session_id: str, timeout: float) -> AsyncIterator[None]:
        """Hold the session's lock; SessionBusy after ``timeout`` seconds of waiting."""
        async with self._locks.hold(session_id, timeout, session_id):
            yield

    async def ping(self) -> BackendHealth:
        """Always healthy: the store is this process's memory."""
        return BackendHealth(ok=True, latency_ms=0.0)

    async def close(self) -> None:
        """Forget every session."""
        self._records.clear()

    def _maybe_sweep(self, now: float) -> None:
        if now - self._last_sweep < SWEEP_SECONDS:
            return
        self._last_sweep = now
        cutoff = now - EXPIRED_GRACE_SECONDS
        for sid in [sid for sid, rec in self._records.items() if rec.expires_at < cutoff]:
            del self._records[sid]

