"""Optional API key (``KATO_API_KEY`` / ``start.sh --api-key``).

Unset (the default), the API is open, as api.md §1.1 describes. Set, every
request must carry the key, as ``X-API-Key: <key>`` or ``Authorization: Bearer
<key>``; WebSocket clients, which cannot set headers from a browser, may pass it
as the ``token`` (or ``api_key``) query parameter of ``/ws/events`` instead.
Otherwise: 401 ``{"detail": ...}`` with ``WWW-Authenticate: Bearer`` (a WebSocket
is closed with code 1008 before it is accepted, which clients see as HTTP 403).

Exempt, so probes and load balancers need no secret: the liveness routes
``/health``, ``/v2/health``, ``/kato-api/ping`` and ``/{processor_id}/ping``
(they reveal nothing learned), and CORS preflights (``OPTIONS``; browsers never
send credentials on them). ``/status``, ``/metrics`` and the OpenAPI pages are
not exempt: they list node ids and traffic.

The gate is the outermost ASGI layer, ahead of the session guard, so a caller
without the key learns nothing — not even whether a session exists. Keys are
compared in constant time.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from web.schemas.errors import Detail

__all__ = ["ApiKeyGate", "is_exempt", "presented_keys", "MESSAGE"]

MESSAGE = "Missing or invalid API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
_BODY = msgspec.json.encode(Detail(MESSAGE))
_EXEMPT = frozenset({"/health", "/v2/health", "/kato-api/ping"})


def is_exempt(method: str, path: str) -> bool:
    """Whether ``method path`` is answered without the key."""
    if method == "OPTIONS" or path in _EXEMPT:
        return True
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == "" and parts[1] != "" and parts[2] == "ping"


def presented_keys(scope: Any) -> list[bytes]:
    """Every key value the request carries (headers; for a WebSocket also the query)."""
    keys = []
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            keys.append(value.strip())
        elif name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                keys.append(token.strip())
    if scope["type"] == "websocket":
        query = scope.get("query_string", b"").decode("latin-1")
        keys.extend(v.encode("utf-8") for k, v in parse_qsl(query) if k in ("token", "api_key"))
    return keys


class ApiKeyGate:
    """ASGI wrapper: lets a request through only with the key (or on an exempt route)."""

    def __init__(self, app: Any, api_key: str) -> None:
        if not api_key:
            raise ValueError("the API key must not be empty")
        self.app = app
        self._key = api_key.encode("utf-8")

    def _allowed(self, scope: Any) -> bool:
        # Compare against every presented value without stopping early (constant time per value).
        ok = False
        for key in presented_keys(scope):
            ok |= hmac.compare_digest(key, self._key)
        return ok

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if is_exempt(scope["method"], scope["path"]) or self._allowed(scope):
                await self.app(scope, receive, send)
                return
            trace = next((v for n, v in scope["headers"] if n == b"x-trace-id"), None)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode()),
                       (b"www-authenticate", b'Bearer realm="kato"'),
                       (b"x-trace-id", trace or b"kato-" + uuid.uuid4().hex.encode())]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": _BODY})
        elif kind == "websocket" and not self._allowed(scope):
            await receive()  # the websocket.connect message
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or invalid API key"})
        else:
            await self.app(scope, receive, send)
