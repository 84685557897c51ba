"""The outermost ASGI layer: trace ids, request metrics and the session guard.

It wraps Litestar's whole handler (routing included) because the guard of
api.md §1.5 must answer 404 E3 *before routing and body validation*: an unknown
sub-path or a malformed body sent to a missing session is still "session not
found". Rules: paths ``/sessions/{id}/...`` are guarded, except ``GET
/sessions/{id}`` and ``GET /sessions/{id}/exists``; a guarded hit on a live
session counts as an access (slides the TTL) and the response carries
``X-Session-ID``. Every response carries ``X-Trace-ID`` (echoed or
``kato-<uuid4 hex>``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from storage.base import StoreUnavailable
from web.errors import session_not_found_body
from web.schemas.errors import Detail

__all__ = ["Edge"]

_E3_HEADERS = [(b"content-type", b"application/json")]


def guarded_session(method: str, path: str) -> str | None:
    """The session id the guard must check for ``method path``, or None."""
    if not path.startswith("/sessions/"):
        return None
    parts = [p for p in path[len("/sessions/"):].split("/") if p]
    if not parts:
        return None
    if method == "GET" and (len(parts) == 1 or (len(parts) == 2 and parts[1] == "exists")):
        return None
    return parts[0]


class Edge:
    """ASGI wrapper around the Litestar handler; ``runtime()`` gives the live Runtime."""

    def __init__(self, app: Any, litestar_app: Any) -> None:
        self.app = app
        self.litestar_app = litestar_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rt = self.litestar_app.state.kato
        trace = None
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                trace = value
                break
        if trace is None:
            trace = b"kato-" + uuid.uuid4().hex.encode()
        extra = [(b"x-trace-id", trace)]
        status = 500
        session_id = guarded_session(scope["method"], scope["path"])

        async def send_with_headers(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            if session_id is not None:
                extra.append((b"x-session-id", session_id.encode()))
                try:
                    live = await rt.sessions.touch(session_id, time.time(), rt.settings.session_auto_extend)
                except StoreUnavailable as exc:  # unreadable is not "absent" (api.md §7.2 S3)
                    await self._answer(send_with_headers, 503, Detail(str(exc)))
                    return
                if live is None:
                    await self._answer(send_with_headers, 404, session_not_found_body(session_id))
                    return
            await self.app(scope, receive, send_with_headers)
        finally:
            rt.metrics.request(status, time.perf_counter() - start)

    @staticmethod
    async def _answer(send: Any, status: int, content: Any) -> None:
        body = msgspec.json.encode(content)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_E3_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
