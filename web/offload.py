"""Run engine calls inline or on a worker thread, whichever is cheaper.

A thread hop costs ~0.1–0.25 ms on a small machine — more than a whole observe on
a modest knowledge base — while a long prediction run inline would stall every
other request. So each call kind (per knowledge base) keeps a moving average of
its own duration: below ``budget_ms`` it runs inline on the event loop, above it
runs in a thread (where scoring releases the GIL). Durations measured in the
thread feed the same average, so a kind that gets cheap again moves back inline.

Durations are the calling thread's CPU time, not wall time. Wall time includes
waiting for the GIL and for a core; under concurrency that made every call look
slow, moved it to a thread, where GIL hand-offs with the event loop made it
slower still — a feedback loop that, measured with 8 connections on 2 cores,
halved throughput and put p50 at ~8 ms. CPU time is what the call itself costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

__all__ = ["Offloader"]

T = TypeVar("T")

_ALPHA = 0.2  # weight of the newest duration in the moving average


class Offloader:
    """Adaptive inline/thread execution of synchronous engine calls."""

    def __init__(self, budget_ms: float, threaded: frozenset[str] = frozenset()) -> None:
        self.budget = budget_ms / 1000.0
        # Operations that always run on a thread: with shared storage a learn blocks
        # its thread until the stores committed it, which the event loop must not do.
        self.threaded = threaded
        self._avg: dict[tuple[str, str], float] = {}

    async def run(self, key: tuple[str, str], fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)``; ``key`` (kb_id, operation) selects the moving average."""
        if key[1] not in self.threaded and self._avg.get(key, 0.0) <= self.budget:
            return self._timed(key, fn, args)
        return await anyio.to_thread.run_sync(self._timed, key, fn, args)

    def _timed(self, key: tuple[str, str], fn: Callable[..., T], args: tuple) -> T:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            took = time.thread_time() - start
            prev = self._avg.get(key)
            self._avg[key] = took if prev is None else prev + _ALPHA * (took - prev)

    def forget(self, kb_id: str) -> None:
        """Drop the averages of a knowledge base (it was cleared)."""
        for key in [k for k in self._avg if k[0] == kb_id]:
            del self._avg[key]
