"""Optional rate limit per API key, or per client address when no key is configured.

Off by default (``KATO_RATE_LIMIT=0``). Set, each caller has a token bucket that
refills at ``KATO_RATE_LIMIT`` requests per second and holds at most
``KATO_RATE_LIMIT_BURST`` (default: one second's worth, at least 1). A request
finding the bucket empty is answered ``429 {"detail": ...}`` with ``Retry-After``
(whole seconds until a token is back) and does no work.

Who is "a caller": with ``KATO_API_KEY`` set, the key the request presented (the
key gate in front has already checked it; only a digest is kept, never the key),
so every holder of the key shares its bucket; without a key, the client's
address as the server sees it (behind a proxy, what uvicorn's proxy-header
handling makes of ``X-Forwarded-For``). The liveness routes that need no key
(``/health``, the pings) are not limited, so probes never see a 429. Buckets are
per process.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from web.auth import is_exempt, presented_keys
from web.schemas.errors import Detail

__all__ = ["RateLimiter"]

_MAX_BUCKETS = 10_000  # idle (full) buckets are dropped beyond this many callers


class RateLimiter:
    """ASGI wrapper: a token bucket per caller; 429 with Retry-After when it is empty."""

    def __init__(self, app: Any, rate: float, burst: int = 0, keyed: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("the rate limit must be positive")
        self.app = app
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(rate)))
        self.keyed = keyed
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}   # caller -> (tokens, when)
        self._message = msgspec.json.encode(Detail(
            f"Rate limit exceeded: {rate:g} requests per second per {'API key' if keyed else 'client'}"
            f" (KATO_RATE_LIMIT)"))

    def _caller(self, scope: Any) -> str:
        if self.keyed:
            keys = presented_keys(scope)
            if keys:
                return "key:" + hashlib.sha256(keys[0]).hexdigest()[:32]
        client = scope.get("client")
        return "client:" + (client[0] if client else "unknown")

    def take(self, caller: str) -> float:
        """Spend one token of ``caller``; returns 0.0, or the seconds until one is available."""
        now = self._clock()
        tokens, when = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._prune(now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [c for c, (tokens, when) in self._buckets.items() if tokens + (now - when) * self.rate >= self.burst]
        for caller in full:
            del self._buckets[caller]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_exempt(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        wait = self.take(self._caller(scope))
        if not wait:
            await self.app(scope, receive, send)
            return
        trace = next((v for n, v in scope["headers"] if n == b"x-trace-id"), None)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._message)).encode()),
                   (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                   (b"x-trace-id", trace or b"kato-" + uuid.uuid4().hex.encode())]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": self._message})
