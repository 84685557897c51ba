"""``/ws/events``: session lifecycle events (api.md §2.6)."""

from __future__ import annotations

import time

import anyio
import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from web.deps import runtime
from web.timefmt import iso_offset

__all__ = ["events"]


@websocket("/ws/events")
async def events(socket: WebSocket) -> None:
    """Snapshot first, then every session.created / session.destroyed; ``ping`` -> ``pong``."""
    rt = runtime(socket)
    await socket.accept()
    queue = rt.events.subscribe()
    try:
        snapshot = {"event_type": "state.snapshot", "timestamp": iso_offset(time.time()),
                    "data": {"active_sessions": await rt.sessions.count(), "system_status": "healthy"}}
        await socket.send_text(msgspec.json.encode(snapshot).decode())
        async with anyio.create_task_group() as tg:

            async def forward() -> None:
                while True:
                    frame = await queue.get()
                    await socket.send_text(frame.decode())

            tg.start_soon(forward)
            try:
                while True:
                    message = await socket.receive_text()
                    if message == "ping":
                        await socket.send_text("pong")
            finally:
                tg.cancel_scope.cancel()
    except (WebSocketDisconnect, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        rt.events.unsubscribe(queue)
