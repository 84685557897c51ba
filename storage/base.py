"""The storage interfaces every backend implements (api.md §4).

Three stores, each isolated per knowledge base by ``kb_id``:

* :class:`PatternStore` — the durable record of every learn of a knowledge base,
  from which a process rebuilds its in-memory index (engine ``KnowledgeBase``).
* :class:`SessionStore` — session documents with TTL, plus the per-session lock
  that serialises state-changing operations (api.md §3.6).
* :class:`VectorStore` — one nearest-neighbour index per knowledge base, handed
  to the engine as its synchronous ``VectorIndex``.

All I/O methods are async so network backends (ClickHouse, Redis, Qdrant) fit the
same shape. A backend that cannot be reached raises :class:`StoreUnavailable`
naming itself; the web layer answers 503 with that name.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from engine import KnowledgeBase, LearnedPattern, VectorIndex
    from storage.records import SessionRecord
    from storage.snapshot import KbSnapshot

__all__ = [
    "StoreUnavailable",
    "SessionBusy",
    "BackendHealth",
    "PatternStore",
    "SessionStore",
    "VectorStore",
    "Stores",
]


class StoreUnavailable(Exception):
    """A backend could not serve a request; ``backend`` names it (e.g. ``sqlite``)."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} unavailable: {reason}")


class SessionBusy(Exception):
    """The session lock was not obtained within the lock timeout (api.md §3.6 rule 2)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id} is busy")


class BackendHealth(msgspec.Struct):
    """Result of one ping: ``ok``, round-trip ``latency_ms``, ``error`` text or None."""

    ok: bool
    latency_ms: float
    error: str | None = None


@runtime_checkable
class PatternStore(Protocol):
    """Durable learned patterns of every knowledge base."""

    backend: str

    async def append(self, kb_id: str, learned: Sequence[LearnedPattern]) -> None:
        """Persist learns already applied to the in-memory index, in order.

        Once this returns, a restart (or another process) sees them. Raises
        StoreUnavailable; then nothing of ``learned`` may be half-visible.
        """

    async def mark_finalized(self, kb_id: str) -> None:
        """Persist that finalize-training ran now (its results depend on when it ran)."""

    async def rebuild(self, kb: KnowledgeBase) -> int:
        """Load ``kb`` (empty, named by ``kb.kb_id``) from the store; returns its generation."""

    async def generation(self, kb_id: str) -> int:
        """A number that changes whenever the knowledge base changes (api.md §4.10)."""

    async def clear(self, kb_id: str) -> None:
        """Delete every learned pattern and statistic of ``kb_id`` (clear-all)."""

    async def restore(self, kb_id: str, snapshot: KbSnapshot) -> None:
        """Make ``snapshot`` the whole content of ``kb_id`` (backup restore).

        Replaces whatever ``kb_id`` held, all or nothing; afterwards ``rebuild``
        reproduces the snapshot exactly (storage.snapshot.load_snapshot) and later
        learns apply on top of it. The generation changes. Raises StoreUnavailable.
        """

    async def ping(self) -> BackendHealth:
        """Check the backend answers; never raises."""

    async def close(self) -> None:
        """Flush and release resources."""


@runtime_checkable
class SessionStore(Protocol):
    """Session documents with expiry, and the per-session lock."""

    backend: str

    async def create(self, record: SessionRecord) -> None:
        """Store a new session."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session, or None when absent or expired. Does not slide the TTL."""

    async def touch(self, session_id: str, now: float, extend: bool) -> SessionRecord | None:
        """Count one access (api.md §3.4): bump ``last_accessed``/``access_count`` and,
        when ``extend``, slide ``expires_at`` to ``now + ttl_seconds``. None if not live."""

    async def probe(self, session_id: str) -> tuple[bool, bool]:
        """``(exists, expired)`` without extending (api.md §2.1.5); deletes an expired one."""

    async def save(self, record: SessionRecord) -> None:
        """Replace the stored document by ``record`` (its ``expires_at`` included)."""

    async def delete(self, session_id: str) -> bool:
        """Remove a session; False when it was not live."""

    async def count(self) -> int:
        """Exact number of live sessions."""

    def lock(self, session_id: str, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the session's lock; waiters queue first-come first-served.

        Raises SessionBusy when not obtained within ``timeout`` seconds.
        """

    async def ping(self) -> BackendHealth:
        """Check the backend answers; never raises."""

    async def close(self) -> None:
        """Release resources."""


@runtime_checkable
class VectorStore(Protocol):
    """Vector indexes, one per knowledge base (api.md §4.5)."""

    backend: str

    def index(self, kb_id: str) -> VectorIndex:
        """The engine-facing index of ``kb_id`` (synchronous; created lazily)."""

    async def drop(self, kb_id: str) -> None:
        """Delete every vector of ``kb_id`` (clear-all)."""

    async def points(self, kb_id: str) -> list[tuple[str, list[float]]]:
        """Every ``(name, vector)`` indexed for ``kb_id`` (backup export); [] when none."""

    def unindexed(self) -> int:
        """Vectors skipped so far because of a dimension mismatch (api.md §4.5.4)."""

    async def ping(self) -> BackendHealth:
        """Check the backend answers; never raises."""

    async def close(self) -> None:
        """Flush and release resources."""


class Stores(msgspec.Struct, frozen=True):
    """The three stores a running service uses."""

    sessions: SessionStore
    patterns: PatternStore
    vectors: VectorStore

    async def close(self) -> None:
        """Close every store (errors of one do not stop the others)."""
        for store in (self.sessions, self.patterns, self.vectors):
            try:
                await store.close()
            except Exception:  # noqa: BLE001 - closing must reach every store
                pass
