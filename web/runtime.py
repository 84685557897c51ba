"""Everything a running service shares, built once by the lifespan and put on app.state."""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine import LearnedPattern
from storage.base import Stores, StoreUnavailable
from web.config import ConfigResolver
from web.events import EventHub
from web.knowledge import KnowledgeBases
from web.metrics import Metrics
from web.offload import Offloader
from web.resources import ResourceSampler
from web.settings import Settings

__all__ = ["Runtime"]


class Runtime:
    """Settings, stores, loaded knowledge bases, counters and the event hub."""

    def __init__(self, settings: Settings, stores: Stores) -> None:
        self.settings = settings
        self.stores = stores
        self.sessions = stores.sessions
        self.kbs = KnowledgeBases(stores.patterns, stores.vectors)
        self.resolver = ConfigResolver(settings.engine)
        # Shared stores commit a learn inside the engine call; one that waits for its
        # own event loop to commit (storage/shared.py) needs every call that may learn
        # on a worker thread. POST /learn and observe take the record from the engine
        # and await the commit on the loop instead (web/memory.py), keeping "learn" and
        # "observe" threads for what touches the vector store, whose server may be
        # across the network. The SQLite log commits on the calling thread.
        blocking = self.kbs.shared and not getattr(stores.patterns, "commits_inline", False)
        self.offload = Offloader(settings.inline_budget_ms, frozenset(("observe", "sequence", "learn", "finalize"))
                                 if blocking else frozenset())
        self.metrics = Metrics(ResourceSampler(settings.data_dir))
        self.events = EventHub()
        self.started = time.time()

    async def persist(self, kb_id: str, learned: Sequence[LearnedPattern]) -> None:
        """Write learns the engine applied; on failure drop the KB's in-memory copy.

        Dropping it means memory never shows a pattern the store lacks: the next
        request rebuilds the knowledge base from what the store really holds.
        """
        if not learned:
            return
        if self.kbs.shared:  # committed by the knowledge base itself, before the engine applied it
            self.metrics.patterns_learned += len(learned)
            return
        start = time.perf_counter()
        try:
            await self.stores.patterns.append(kb_id, learned)
        except StoreUnavailable:
            self.metrics.store("clickhouse", time.perf_counter() - start, False)
            self.kbs.evict(kb_id)
            raise
        self.metrics.store("clickhouse", time.perf_counter() - start, True)
        self.metrics.patterns_learned += len(learned)
