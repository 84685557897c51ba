"""Error bodies (api.md §1.3): E1 ``detail``, E2 validation list, E3 session not found."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["ValidationItem", "ValidationFailed", "SessionNotFoundBody", "SessionNotFoundError", "Detail"]

class ValidationItem(msgspec.Struct, kw_only=True):
    """One validation problem; ``loc`` starts with body, query or path."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any
    ctx: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class ValidationFailed(msgspec.Struct):
    """E2 (422)."""

    detail: list[ValidationItem]


class SessionNotFoundError(msgspec.Struct):
    """The ``error`` object of E3."""

    code: str
    message: str
    session_id: str


class SessionNotFoundBody(msgspec.Struct):
    """E3 (404), with ``detail`` beside ``error`` (api.md CHOICE A1)."""

    error: SessionNotFoundError
    detail: str


class Detail(msgspec.Struct):
    """E1: ``{"detail": <string or object>}``."""

    detail: Any
