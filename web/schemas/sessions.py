"""Session request and response bodies (api.md §2.1)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "CreateSession",
    "SessionResponse",
    "SessionCount",
    "SessionDeleted",
    "SessionExists",
    "SessionExtended",
    "SessionConfig",
    "ConfigUpdated",
]


class CreateSession(msgspec.Struct, kw_only=True):
    """``POST /sessions``. ``ttl_seconds`` null or 0 means SESSION_TTL."""

    node_id: str
    ttl_seconds: int | None = None
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


class SessionResponse(msgspec.Struct, kw_only=True):
    """A session as reported by create and info; datetimes ISO-8601 UTC with ``Z``."""

    session_id: str
    node_id: str
    created_at: str
    expires_at: str
    ttl_seconds: int
    metadata: dict[str, Any]
    session_config: dict[str, Any]


class SessionCount(msgspec.Struct):
    """``GET /sessions/count``."""

    active_session_count: int


class SessionDeleted(msgspec.Struct):
    """``DELETE /sessions/{id}``."""

    status: str
    session_id: str


class SessionExists(msgspec.Struct):
    """``GET /sessions/{id}/exists`` (never extends the TTL)."""

    exists: bool
    expired: bool
    session_id: str


class SessionExtended(msgspec.Struct):
    """``POST /sessions/{id}/extend``."""

    status: str
    session_id: str
    ttl_seconds: int


class SessionConfig(msgspec.Struct):
    """``GET /sessions/{id}/config``: the effective configuration (api.md §3.2.1)."""

    session_id: str
    config: dict[str, Any]


class ConfigUpdated(msgspec.Struct):
    """``POST /sessions/{id}/config`` success."""

    status: str
    message: str
    session_id: str
