"""Session lifecycle and configuration (api.md §2.1, §3.1–§3.4).

Decisions where the spec leaves room: an info request (``GET /sessions/{id}``)
counts as an access and slides the expiry like every other access; ``extend``
makes ``N`` the session's sliding TTL; config updates are validated as a whole
and applied under the session lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar.exceptions import NotFoundException

from storage.base import SessionStore, StoreUnavailable
from storage.records import SessionRecord
from web.decoding import field_error
from web.errors import SessionNotFound, TooManySessions
from web.nodes import kb_id_for
from web.runtime import Runtime
from web.schemas.sessions import (
    ConfigUpdated,
    CreateSession,
    SessionConfig,
    SessionCount,
    SessionDeleted,
    SessionExists,
    SessionExtended,
    SessionResponse,
)
from web.timefmt import iso_offset, iso_z

__all__ = ["SessionService", "MAX_TTL_SECONDS"]

log = logging.getLogger("kato.web")

# A state-changing operation that holds the session lock longer than this starts
# keeping the session alive (then every ttl/3 seconds): see SessionService.hold.
KEEPALIVE_AFTER = 0.25

# The longest session lifetime a request may ask for (create or extend): one year.
# Without a cap a TTL of 10**15 s makes ``expires_at`` unrepresentable (a 500 on
# the next response that shows it, an error from Redis' PXAT).
MAX_TTL_SECONDS = 365 * 24 * 3600


def _check_ttl(ttl: int, loc: list[str | int], lowest: int) -> None:
    if ttl < lowest:
        raise field_error(loc, f"Input should be greater than or equal to {lowest}", ttl, "greater_than_equal")
    if ttl > MAX_TTL_SECONDS:
        raise field_error(loc, f"Input should be less than or equal to {MAX_TTL_SECONDS}", ttl, "less_than_equal")


class _KeepAlive:
    """Slides a session's expiry while an operation holds its lock (auto-extend only).

    Costs nothing for operations shorter than KEEPALIVE_AFTER (one timer, cancelled).
    """

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self._store = store
        self._session_id = session_id
        self._task: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(KEEPALIVE_AFTER, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._task = self._loop.create_task(self._touch())

    async def _touch(self) -> None:
        delay = KEEPALIVE_AFTER
        try:
            rec = await self._store.touch(self._session_id, time.time(), True)
            if rec is not None:
                delay = max(0.05, rec.ttl_seconds / 3.0)
        except StoreUnavailable as exc:  # the operation itself will meet the outage too
            log.warning("session keep-alive failed", extra={"session_id": self._session_id, "reason": exc.reason})
        if self._task is asyncio.current_task():
            self._timer = self._loop.call_later(delay, self._fire)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            await task   # a touch in flight finishes (it never raises); none is scheduled after it


class SessionService:
    """Create, read, extend, configure and delete sessions."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def response(self, rec: SessionRecord, ttl: int) -> SessionResponse:
        """SessionResponse of ``rec`` reporting ``ttl`` seconds."""
        return SessionResponse(
            session_id=rec.session_id, node_id=rec.node_id, created_at=iso_z(rec.created_at),
            expires_at=iso_z(rec.expires_at), ttl_seconds=ttl, metadata=rec.metadata,
            session_config=self.rt.resolver.report(rec.overrides))

    async def create(self, body: CreateSession) -> SessionResponse:
        """Create a session; 422 for an empty node or negative TTL, 400 for bad config, 429 at the cap."""
        rt = self.rt
        if body.node_id == "":
            raise field_error(["body", "node_id"], "String should have at least 1 character", "", "string_too_short")
        if body.ttl_seconds is not None:
            _check_ttl(body.ttl_seconds, ["body", "ttl_seconds"], 0)
        overrides = rt.resolver.apply({}, body.config, follow_token_matching=False) if body.config else {}
        if rt.settings.max_sessions and await rt.sessions.count() >= rt.settings.max_sessions:
            raise TooManySessions(f"session limit of {rt.settings.max_sessions} reached")
        ttl = body.ttl_seconds or rt.settings.session_ttl
        now = time.time()
        rec = SessionRecord(
            session_id=f"session-{uuid.uuid4().hex}-{int(now * 1000)}", node_id=body.node_id,
            kb_id=kb_id_for(body.node_id, rt.settings.service_name), created_at=now, last_accessed=now,
            expires_at=now + ttl, ttl_seconds=ttl, metadata=body.metadata or {}, overrides=overrides,
            config_version=2 if body.config is not None else 1, config_updated_at=now)
        await rt.sessions.create(rec)
        rt.metrics.sessions_created += 1
        rt.events.publish("session.created", {"session_id": rec.session_id, "node_id": rec.node_id,
                                              "created_at": iso_offset(now)})
        return self.response(rec, ttl)

    async def info(self, session_id: str) -> SessionResponse:
        """Session info; the access slides the expiry. 404 E1 when not live."""
        now = time.time()
        rec = await self.rt.sessions.touch(session_id, now, self.rt.settings.session_auto_extend)
        if rec is None:
            raise NotFoundException(detail=f"Session {session_id} not found or expired")
        return self.response(rec, max(0, math.floor(rec.expires_at - now)))

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        """The session's lock (api.md §3.6), keeping the session alive while held.

        With auto-extend a session in use never expires mid-operation: a long
        observe-sequence slides the expiry as it runs, so neither the batch's own
        save nor requests queued behind it find the session expired (api.md §3.4,
        "long operations keep the session alive until they finish").
        """
        rt = self.rt
        async with rt.sessions.lock(session_id, rt.settings.session_lock_timeout):
            if not rt.settings.session_auto_extend:
                yield
                return
            keeper = _KeepAlive(rt.sessions, session_id)
            try:
                yield
            finally:
                await keeper.stop()

    async def live(self, session_id: str) -> SessionRecord:
        """The live session (a consistent snapshot) or SessionNotFound (E3)."""
        rec = await self.rt.sessions.get(session_id)
        if rec is None:
            raise SessionNotFound(session_id)
        return rec

    async def delete(self, session_id: str) -> SessionDeleted:
        """Delete after any in-flight operation on the session (api.md A7)."""
        rt = self.rt
        async with rt.sessions.lock(session_id, rt.settings.session_lock_timeout):
            if not await rt.sessions.delete(session_id):
                raise SessionNotFound(session_id)
        rt.metrics.sessions_deleted += 1
        rt.events.publish("session.destroyed", {"session_id": session_id, "destroyed_at": iso_offset(time.time()),
                                                "reason": "explicit_delete"})
        return SessionDeleted(status="deleted", session_id=session_id)

    async def exists(self, session_id: str) -> SessionExists:
        """Existence without touching the TTL; an expired session is removed and reported."""
        exists, expired = await self.rt.sessions.probe(session_id)
        return SessionExists(exists=exists, expired=expired, session_id=session_id)

    async def count(self) -> SessionCount:
        """Exact live-session count."""
        return SessionCount(active_session_count=await self.rt.sessions.count())

    async def extend(self, session_id: str, ttl: int) -> SessionExtended:
        """``expires_at := now + ttl`` and ``ttl`` becomes the sliding TTL; 422 unless 1 <= ttl <= one year."""
        _check_ttl(ttl, ["query", "ttl_seconds"], 1)
        rt = self.rt
        async with self.hold(session_id):
            rec = await self.live(session_id)
            now = time.time()
            await rt.sessions.save(msgspec.structs.replace(rec, ttl_seconds=ttl, expires_at=now + ttl,
                                                           last_accessed=now))
        return SessionExtended(status="extended", session_id=session_id, ttl_seconds=ttl)

    async def config(self, session_id: str) -> SessionConfig:
        """Effective configuration of the session."""
        rec = await self.live(session_id)
        return SessionConfig(session_id=session_id, config=self.rt.resolver.report(rec.overrides))

    async def update_config(self, session_id: str, body: dict[str, Any]) -> ConfigUpdated:
        """Apply ``{"config": {...}}`` or a flat map; 400 naming every bad key, nothing applied."""
        update = body["config"] if "config" in body else body
        if not isinstance(update, dict):
            raise field_error(["body", "config"], "Input should be a valid dictionary", update, "dict_type")
        rt = self.rt
        async with self.hold(session_id):
            rec = await self.live(session_id)
            overrides = rt.resolver.apply(rec.overrides, update, follow_token_matching=True)
            rt.resolver.effective(overrides)
            now = time.time()
            await rt.sessions.save(msgspec.structs.replace(
                rec, overrides=overrides, config_updated_at=now, last_accessed=now,
                expires_at=self.expiry(rec, now)))
        return ConfigUpdated(status="okay", message="Configuration updated", session_id=session_id)

    def expiry(self, rec: SessionRecord, now: float) -> float:
        """Expiry after a save: slides with auto-extend, else unchanged (api.md §3.4)."""
        return now + rec.ttl_seconds if self.rt.settings.session_auto_extend else rec.expires_at
