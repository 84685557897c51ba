"""The in-process half of a session lock: first-come first-served waiting per key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from storage.base import SessionBusy

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """One ``asyncio.Lock`` per key, made on first use and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable, timeout: float, session_id: str) -> AsyncIterator[None]:
        """Hold the lock of ``key``; waiters are served in arrival order.

        Raises SessionBusy(session_id) after ``timeout`` seconds of waiting; a free
        lock is taken at once whatever the timeout.
        """
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            if lock.locked():
                try:
                    await asyncio.wait_for(lock.acquire(), max(0.0, timeout))
                except TimeoutError:
                    raise SessionBusy(session_id) from None
            else:
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if not users[0]:
                self._locks.pop(key, None)

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._locks)
