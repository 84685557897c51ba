"""Redis: the shared connection pool and the session store (api.md §3.5, §3.6).

:class:`RedisConnector` owns one ``redis.asyncio`` client over a
``BlockingConnectionPool``: when every connection is busy a caller waits for one
(up to ``pool_timeout``) instead of failing. Every Redis error that means "the
server cannot serve this" becomes :class:`StoreUnavailable` ``("redis", ...)``,
which the web layer answers with 503 naming Redis. The client is bound to the
event loop that first uses it (a new loop gets a new pool), so a store can be
driven by any loop, one at a time.

:class:`RedisSessionStore` keeps each session as one JSON document
``kato:session:{id}`` in the reference's field layout, expiring at the session's
``expires_at`` (``PXAT``, so the key TTL and the document describe the same
instant), plus the sorted set ``kato:session:_expiry_index`` (score =
``expires_at``) that makes the live count exact and lets ``/exists`` tell
"expired" from "never existed". The per-session lock is ``kato:session:lock:{id}``
(SET NX with an owner token and a lease renewed while held, released only by its
owner); waiters of one process queue first-come first-served before competing
for the Redis key. No ``KEYS`` command anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.asyncio.retry import Retry

from engine import PendingVector, Prediction, SessionState, SingleSymbolPrediction
from engine.config import PARAMETER_ORDER
from storage.base import BackendHealth, SessionBusy, StoreUnavailable
from storage.locks import KeyedLocks
from storage.records import EXPIRED_GRACE_SECONDS, SWEEP_SECONDS, SessionRecord

__all__ = ["RedisConnector", "RedisSessionStore", "session_document", "record_from_document"]

log = logging.getLogger("kato.storage.redis")

T = TypeVar("T")

SESSION_PREFIX = "kato:session:"
EXPIRY_INDEX = "kato:session:_expiry_index"
LOCK_LEASE_MS = 30_000          # a crashed holder blocks its session at most this long
RELEASE_RETRY_SECONDS = 0.1     # a release that met an outage is retried this often
LOCK_RENEW_SECONDS = 10.0
_MAX_DOC_SIZES = 1000           # api.md §3.7, reported in the document as HEAD does


class RedisConnector:
    """One shared asyncio client per event loop over a blocking connection pool."""

    backend = "redis"

    def __init__(self, url: str, max_connections: int = 64, pool_timeout: float = 10.0,
                 socket_timeout: float = 10.0) -> None:
        self.url = url
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self.socket_timeout = socket_timeout
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retrying: set[asyncio.Task] = set()   # releases retried after an outage

    def _new_client(self, max_connections: int | None = None, socket_timeout: float | None = None) -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=max_connections or self.max_connections, timeout=self.pool_timeout,
            socket_connect_timeout=2.0,
            socket_timeout=self.socket_timeout if socket_timeout is None else socket_timeout,
            # One quick retry replaces a pooled connection that died with a Redis
            # restart; a Redis that is down still fails within milliseconds.
            retry=Retry(ConstantBackoff(0.02), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError])
        return aioredis.Redis(connection_pool=pool)

    @property
    def client(self) -> aioredis.Redis:
        """The client of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._new_client()
            self._loop = loop
        return self._client

    def dedicated(self, socket_timeout: float | None = None) -> aioredis.Redis:
        """A separate one-connection client (for blocking reads such as XREAD BLOCK)."""
        return self._new_client(max_connections=1, socket_timeout=socket_timeout)

    async def run(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``await fn(client)``, with Redis failures raised as StoreUnavailable("redis")."""
        try:
            return await fn(self.client)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        except ResponseError as exc:
            text = str(exc)
            if text.startswith(("LOADING", "MISCONF", "READONLY", "MASTERDOWN", "BUSY", "OOM")):
                raise StoreUnavailable("redis", text) from exc
            raise
        except RedisError as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def release(self, key: str, token: str, lease_ms: int) -> None:
        """Delete the lock ``key`` iff ``token`` still holds it (see :meth:`settle`)."""
        await self.settle(lambda r: r.eval(_RELEASE, 1, key, token), lease_ms)

    async def settle(self, fn: Callable[[aioredis.Redis], Awaitable[Any]], lease_ms: int) -> None:
        """Run ``fn`` (a lock release) now; if Redis cannot serve it, retry in the background
        every ``RELEASE_RETRY_SECONDS`` until it succeeds or ``lease_ms`` passed. Never raises
        StoreUnavailable: without the retries a lock whose release met an outage would block
        its key for the rest of its lease after Redis recovers, though its holder is long done."""
        try:
            await self.run(fn)
            return
        except StoreUnavailable:
            pass
        deadline = time.monotonic() + lease_ms / 1000.0

        async def retry() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(RELEASE_RETRY_SECONDS)
                try:
                    await self.run(fn)
                    return
                except StoreUnavailable:
                    continue

        task = asyncio.get_running_loop().create_task(retry())
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def ping(self) -> BackendHealth:
        """PING; reports the error text instead of raising."""
        start = time.perf_counter()
        try:
            await self.run(lambda r: r.ping())
        except StoreUnavailable as exc:
            return BackendHealth(ok=False, latency_ms=_ms(start), error=exc.reason)
        return BackendHealth(ok=True, latency_ms=_ms(start))

    async def close(self) -> None:
        """Stop retrying releases (their leases expire on their own); close the pool of the
        current loop (connections of a finished loop are dropped)."""
        for task in list(self._retrying):
            task.cancel()
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._loop is asyncio.get_running_loop():
                await client.aclose(close_connection_pool=True)
        except Exception:  # noqa: BLE001 - closing must not fail a shutdown
            log.debug("closing the redis pool failed", exc_info=True)


# ------------------------------------------------------------------ documents

def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()


def _epoch(value: Any, fallback: float) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            return fallback
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed.timestamp()
    return fallback


def session_document(rec: SessionRecord) -> dict[str, Any]:
    """The api.md §3.5 document of ``rec`` (HEAD's field names, iso datetimes).

    Our own fields (exact epoch times, kb_id, pending vectors) ride under ``kato``;
    readers of the reference layout ignore them.
    """
    state = rec.state
    config: dict[str, Any] = {key: rec.overrides.get(key) for key in PARAMETER_ORDER}
    config.update(session_id=rec.session_id, node_id=rec.node_id, created_at=_iso(rec.created_at),
                  updated_at=_iso(rec.config_updated_at or rec.created_at), version=rec.config_version)
    return {
        "session_id": rec.session_id,
        "node_id": rec.node_id,
        "created_at": _iso(rec.created_at),
        "last_accessed": _iso(rec.last_accessed),
        "expires_at": _iso(rec.expires_at),
        "ttl_seconds": rec.ttl_seconds,
        "stm": state.stm,
        "emotives_accumulator": state.emotives_accumulator,
        "metadata_accumulator": state.metadata_accumulator,
        "time": state.time,
        "percept_data": rec.percept_data,
        "predictions": state.predictions,
        "metadata": rec.metadata,
        "access_count": rec.access_count,
        "max_stm_size": _MAX_DOC_SIZES,
        "max_emotives_size": _MAX_DOC_SIZES,
        "max_metadata_size": _MAX_DOC_SIZES,
        "session_config": config,
        "kato": {
            "kb_id": rec.kb_id,
            "created_at": rec.created_at,
            "last_accessed": rec.last_accessed,
            "expires_at": rec.expires_at,
            "config_updated_at": rec.config_updated_at,
            "overrides": rec.overrides,
            "pending_vectors": state.pending_vectors,
        },
    }


def _prediction(value: dict[str, Any]) -> Prediction | SingleSymbolPrediction:
    kind = SingleSymbolPrediction if "pattern_data" in value else Prediction
    return msgspec.convert(value, kind)


def record_from_document(doc: dict[str, Any], default_ttl: int = 3600) -> SessionRecord:
    """Decode a stored document (ours, or an older reference one with missing fields)."""
    ours = doc.get("kato") or {}
    now = time.time()
    created = float(ours.get("created_at", _epoch(doc.get("created_at"), now)))
    ttl = int(doc.get("ttl_seconds") or default_ttl)
    if "overrides" in ours:
        overrides = dict(ours["overrides"])
    else:
        config = doc.get("session_config") or {}
        overrides = {k: config[k] for k in PARAMETER_ORDER if config.get(k) is not None}
    config_doc = doc.get("session_config") or {}
    state = SessionState(
        stm=[list(ev) for ev in doc.get("stm") or []],
        emotives_accumulator=list(doc.get("emotives_accumulator") or []),
        metadata_accumulator=list(doc.get("metadata_accumulator") or []),
        time=int(doc.get("time") or 0),
        pending_vectors=[msgspec.convert(v, PendingVector) for v in ours.get("pending_vectors") or []],
        predictions=[_prediction(p) for p in doc.get("predictions") or []],
    )
    return SessionRecord(
        session_id=doc["session_id"], node_id=doc.get("node_id", ""), kb_id=ours.get("kb_id", ""),
        created_at=created,
        last_accessed=float(ours.get("last_accessed", _epoch(doc.get("last_accessed"), created))),
        expires_at=float(ours.get("expires_at", _epoch(doc.get("expires_at"), created + ttl))),
        ttl_seconds=ttl, metadata=dict(doc.get("metadata") or {}), access_count=int(doc.get("access_count") or 0),
        overrides=overrides, config_version=int(config_doc.get("version") or 1),
        config_updated_at=float(ours.get("config_updated_at", _epoch(config_doc.get("updated_at"), created))),
        state=state, percept_data=dict(doc.get("percept_data") or {}))


_encoder = msgspec.json.Encoder()
_doc_decoder = msgspec.json.Decoder(dict)

# Release the lock only if we still own it; renew only if we still own it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisSessionStore:
    """Sessions as JSON documents with PXAT expiry, and a Redis lock per session."""

    backend = "redis"

    def __init__(self, connector: RedisConnector, default_ttl: int = 3600, owns_connector: bool = True) -> None:
        self.redis = connector
        self.default_ttl = default_ttl
        self._owns = owns_connector
        self._local = KeyedLocks()
        self._last_prune = 0.0

    @staticmethod
    def _key(session_id: str) -> str:
        return SESSION_PREFIX + session_id

    def _decode(self, raw: bytes | None) -> SessionRecord | None:
        if raw is None:
            return None
        return record_from_document(_doc_decoder.decode(raw), self.default_ttl)

    async def _write(self, r: aioredis.Redis, rec: SessionRecord, only_existing: bool) -> bool:
        pipe = r.pipeline(transaction=True)
        pipe.set(self._key(rec.session_id), _encoder.encode(session_document(rec)),
                 pxat=max(1, int(rec.expires_at * 1000)), xx=only_existing)
        pipe.zadd(EXPIRY_INDEX, {rec.session_id: rec.expires_at}, xx=only_existing)
        written, _ = await pipe.execute()
        return bool(written)

    async def create(self, record: SessionRecord) -> None:
        """Store a new session (key expiring at ``expires_at``)."""
        await self.redis.run(lambda r: self._write(r, record, only_existing=False))
        await self._maybe_prune(record.created_at)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session or None; never slides the TTL."""
        rec = self._decode(await self.redis.run(lambda r: r.get(self._key(session_id))))
        if rec is None or time.time() > rec.expires_at:
            return None
        return rec

    async def touch(self, session_id: str, now: float, extend: bool) -> SessionRecord | None:
        """Count an access and slide the expiry; optimistic (WATCH) so a concurrent save is never lost."""
        key = self._key(session_id)

        async def run(r: aioredis.Redis) -> SessionRecord | None:
            async with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        rec = self._decode(await pipe.get(key))
                        if rec is None or now > rec.expires_at:
                            await pipe.unwatch()
                            return None
                        rec.last_accessed = now
                        rec.access_count += 1
                        if extend:
                            rec.expires_at = now + rec.ttl_seconds
                        pipe.multi()
                        pipe.set(key, _encoder.encode(session_document(rec)), pxat=int(rec.expires_at * 1000))
                        pipe.zadd(EXPIRY_INDEX, {session_id: rec.expires_at})
                        await pipe.execute()
                        return rec
                    except aioredis.WatchError:
                        continue

        return await self.redis.run(run)

    async def probe(self, session_id: str) -> tuple[bool, bool]:
        """``(exists, expired)``; an expired session is forgotten by this call."""
        async def run(r: aioredis.Redis) -> tuple[bool, bool]:
            pipe = r.pipeline(transaction=False)
            pipe.get(self._key(session_id))
            pipe.zscore(EXPIRY_INDEX, session_id)
            raw, score = await pipe.execute()
            rec = self._decode(raw)
            if rec is not None and time.time() <= rec.expires_at:
                return True, False
            if rec is None and score is None:
                return False, False
            pipe = r.pipeline(transaction=True)
            pipe.delete(self._key(session_id))
            pipe.zrem(EXPIRY_INDEX, session_id)
            await pipe.execute()
            return False, True

        return await self.redis.run(run)

    async def save(self, record: SessionRecord) -> None:
        """Replace the document (a no-op when the session is gone; deleted when already expired)."""
        if record.expires_at <= time.time():
            await self.redis.run(lambda r: r.delete(self._key(record.session_id)))
            return
        await self.redis.run(lambda r: self._write(r, record, only_existing=True))

    async def delete(self, session_id: str) -> bool:
        """Remove a session; False when it was not live."""
        async def run(r: aioredis.Redis) -> bool:
            pipe = r.pipeline(transaction=True)
            pipe.delete(self._key(session_id))
            pipe.zrem(EXPIRY_INDEX, session_id)
            deleted, _ = await pipe.execute()
            return bool(deleted)

        return await self.redis.run(run)

    async def count(self) -> int:
        """Exact number of live sessions: expiry-index members whose expiry is in the future."""
        now = time.time()
        await self._maybe_prune(now)
        return int(await self.redis.run(lambda r: r.zcount(EXPIRY_INDEX, f"({now}", "+inf")))

    async def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < SWEEP_SECONDS:
            return
        self._last_prune = now
        await self.redis.run(lambda r: r.zremrangebyscore(EXPIRY_INDEX, "-inf", now - EXPIRED_GRACE_SECONDS))

    @contextlib.asynccontextmanager
    async def lock(self, session_id: str, timeout: float) -> AsyncIterator[None]:
        """Hold ``kato:session:lock:{id}``; local waiters first-come first-served; SessionBusy on timeout."""
        deadline = time.monotonic() + timeout
        async with self._local.hold(session_id, timeout, session_id):
            token = uuid.uuid4().hex
            await self._acquire(session_id, token, deadline)
            renew = asyncio.create_task(self._renew(session_id, token))
            try:
                yield
            finally:
                renew.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renew
                await self.redis.release(SESSION_PREFIX + "lock:" + session_id, token, LOCK_LEASE_MS)

    async def _acquire(self, session_id: str, token: str, deadline: float) -> None:
        key = SESSION_PREFIX + "lock:" + session_id
        pause = 0.002
        while True:
            if await self.redis.run(lambda r: r.set(key, token, nx=True, px=LOCK_LEASE_MS)):
                return
            if time.monotonic() >= deadline:
                raise SessionBusy(session_id)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)

    async def _renew(self, session_id: str, token: str) -> None:
        key = SESSION_PREFIX + "lock:" + session_id
        while True:
            await asyncio.sleep(LOCK_RENEW_SECONDS)
            try:
                await self.redis.run(lambda r: r.eval(_RENEW, 1, key, token, LOCK_LEASE_MS))
            except StoreUnavailable:
                log.warning("session lock renewal failed", extra={"session_id": session_id})

    async def ping(self) -> BackendHealth:
        """PING Redis."""
        return await self.redis.ping()

    async def close(self) -> None:
        """Close the pool when owned."""
        if self._owns:
            await self.redis.close()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
