"""Session lifecycle events for ``/ws/events`` (api.md §2.6), fanned out in process.

The embedded default is one process, so an in-process broadcaster reaches every
client; a multi-process backend publishes through its store instead. A slow or
vanished client never blocks the HTTP request: each client has a bounded queue
and events beyond it are dropped for that client only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from web.timefmt import iso_offset

__all__ = ["EventHub"]

_QUEUE_LIMIT = 1000


class EventHub:
    """Fan-out of JSON event frames to every connected WebSocket client."""

    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[bytes]] = set()

    def subscribe(self) -> asyncio.Queue[bytes]:
        """Register a client; returns the queue its frames arrive on."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(_QUEUE_LIMIT)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        """Forget a client."""
        self._clients.discard(queue)

    def publish(self, event_type: str, data: dict[str, Any]) -> None:
        """Send ``{"event_type", "timestamp", "data"}`` to every client (never raises)."""
        if not self._clients:
            return
        frame = msgspec.json.encode({"event_type": event_type, "timestamp": iso_offset(time.time()), "data": data})
        for queue in list(self._clients):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                pass
