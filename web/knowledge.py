"""The knowledge bases this process holds in memory, rebuilt from the pattern store.

A knowledge base is loaded on first use by replaying the pattern store
(``PatternStore.rebuild``) and then kept current by the learns of this process.
It is a cache (api.md §4.10): dropping it loses nothing. With a shared pattern
store (storage/shared.py) the knowledge base comes from the store, which keeps
it in step with every other process; each ``get`` first applies whatever other
processes committed (read-your-writes across processes). Writers (observe, learn,
sequence) enter a KB *shared*; clear-all enters it *exclusively*, so no learn of
that node interleaves with the deletion (api.md §3.6 rule 5).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from engine import KnowledgeBase
from storage.base import PatternStore, VectorStore

__all__ = ["KnowledgeBases", "KbEntry"]


class _Gate:
    """Async shared/exclusive gate (writers-preferring)."""

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if not self._exclusive and not self._waiting_exclusive:
            self._shared += 1  # fast path: no await when uncontended
        else:
            async with self._cond:
                await self._cond.wait_for(lambda: not self._exclusive and not self._waiting_exclusive)
                self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            if not self._shared and self._waiting_exclusive:
                async with self._cond:
                    self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._waiting_exclusive += 1
            try:
                await self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class KbEntry:
    """One loaded knowledge base and its bookkeeping for ``/status``."""

    __slots__ = ("kb", "node_id", "created_at", "last_accessed", "access_count", "gate", "generation")

    def __init__(self, kb: KnowledgeBase, node_id: str, generation: int) -> None:
        self.kb = kb
        self.node_id = node_id
        self.created_at = time.time()
        self.last_accessed = self.created_at
        self.access_count = 0
        self.gate = _Gate()
        self.generation = generation


class KnowledgeBases:
    """kb_id -> loaded knowledge base, loading each one once."""

    def __init__(self, patterns: PatternStore, vectors: VectorStore) -> None:
        self._patterns = patterns
        self._vectors = vectors
        self._entries: dict[str, KbEntry] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        # A store that hands out knowledge bases it keeps in step (SharedPatternStore).
        self.shared = callable(getattr(patterns, "knowledge_base", None)) and callable(getattr(patterns, "sync", None))

    async def get(self, kb_id: str, node_id: str) -> KbEntry:
        """The entry of ``kb_id``, rebuilt from the pattern store on first use.

        Raises StoreUnavailable when the store cannot be read (nothing is cached then).
        """
        entry = self._entries.get(kb_id)
        if entry is None:
            lock = self._loading.setdefault(kb_id, asyncio.Lock())
            async with lock:
                entry = self._entries.get(kb_id)
                if entry is None:
                    if self.shared:
                        kb = self._patterns.knowledge_base(kb_id, self._vectors.index(kb_id))
                    else:
                        kb = KnowledgeBase(kb_id, vectors=self._vectors.index(kb_id))
                    generation = await self._patterns.rebuild(kb)
                    entry = self._entries[kb_id] = KbEntry(kb, node_id, generation)
            self._loading.pop(kb_id, None)
        elif self.shared:
            entry.generation = await self._patterns.sync(entry.kb)
        entry.last_accessed = time.time()
        entry.access_count += 1
        return entry

    def loaded(self) -> list[tuple[str, KbEntry]]:
        """Every knowledge base held in memory, by kb_id."""
        return list(self._entries.items())

    def evict(self, kb_id: str) -> None:
        """Forget the in-memory copy (it is rebuilt from the store on next use).

        Used when a store write failed after the engine applied a learn, so memory
        never shows a pattern the store does not have.
        """
        entry = self._entries.pop(kb_id, None)
        if entry is not None and self.shared:
            self._patterns.detach(entry.kb)
