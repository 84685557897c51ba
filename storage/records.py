"""The session document every SessionStore keeps (api.md §3.1)."""

from __future__ import annotations

from typing import Any

import msgspec

from engine import SessionState

__all__ = ["SessionRecord", "EXPIRED_GRACE_SECONDS", "SWEEP_SECONDS"]

# Every session store: an expired session stays answerable as "expired" by /exists
# this long before a sweep forgets it (a short grace period tells a client *why*
# its session is gone); sweeps run at most once per SWEEP_SECONDS.
EXPIRED_GRACE_SECONDS = 300.0
SWEEP_SECONDS = 60.0


class SessionRecord(msgspec.Struct, kw_only=True):
    """One session: identity, lifetime, configuration overrides and engine state.

    Times are epoch seconds (UTC). ``overrides`` holds only the configuration keys
    the session set (api.md §3.2); the effective configuration is derived from it.
    A record handed out by a store is never mutated by the service: writers build
    a new record and ``save`` it, so a concurrent reader always sees one
    consistent version (api.md §3.6 rule 3).
    """

    session_id: str
    node_id: str
    kb_id: str
    created_at: float
    last_accessed: float
    expires_at: float
    ttl_seconds: int
    metadata: dict[str, Any] = {}
    access_count: int = 0
    overrides: dict[str, Any] = {}
    config_version: int = 1
    config_updated_at: float = 0.0
    state: SessionState = msgspec.field(default_factory=SessionState)
    percept_data: dict[str, Any] = {}
