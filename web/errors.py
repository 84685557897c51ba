"""Exceptions of the service and their one mapping to HTTP (api.md §1.3).

E1 ``{"detail": ...}`` for HTTP errors, E2 (422) for validation, E3 (404) for a
session that is not live, 503 naming the backend for a store outage, 503 with
``Retry-After`` for a busy session, and a JSON 500 for anything unexpected (the
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from engine import (
    EmptyShortTermMemory,
    EngineError,
    InvalidConfiguration,
    InvalidObservation,
    VectorSumError,
)
from storage.base import SessionBusy, StoreUnavailable
from web.decoding import RequestValidationError
from web.schemas.errors import (
    Detail,
    SessionNotFoundBody,
    SessionNotFoundError,
    ValidationFailed,
    ValidationItem,
)

__all__ = ["SessionNotFound", "TooManySessions", "SequenceItemError", "exception_handlers", "session_not_found_body"]

log = logging.getLogger("kato.web")


class SessionNotFound(Exception):
    """No live session of that id on a guarded route (E3)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"Session {session_id} not found or expired")


class TooManySessions(Exception):
    """``KATO_MAX_SESSIONS`` live sessions exist already (429)."""


class SequenceItemError(Exception):
    """Item ``index`` of an observe-sequence batch was refused by the engine."""

    def __init__(self, index: int, error: InvalidObservation) -> None:
        self.index = index
        self.error = error
        super().__init__(f"observation {index}: {error}")


def session_not_found_body(session_id: str) -> SessionNotFoundBody:
    """The E3 body for ``session_id``."""
    message = f"Session {session_id} not found or expired"
    return SessionNotFoundBody(
        error=SessionNotFoundError(code="SESSION_NOT_FOUND", message=message, session_id=session_id),
        detail=message)


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _loc(field: str, prefix: list[str | int]) -> list[str | int]:
    head, dot, rest = field.partition(".")
    loc = list(prefix)
    for name, index in _FIELD_PART.findall(head):
        loc.append(int(index) if index else name)
    if dot:
        loc.append(rest)  # an emotive key may itself contain dots
    return loc


def _observation_error(exc: InvalidObservation, index: int | None) -> Response:
    if isinstance(exc, VectorSumError):
        # api.md §2.2.1 CHOICE A12: the vectors of one observation cannot be summed.
        detail: dict[str, Any] = {"error": "VectorSumError", "message": exc.message}
        if index is not None:
            detail["observation_index"] = index
        return _json(Detail(detail), 400)
    prefix: list[str | int] = ["body"] if index is None else ["body", "observations", index]
    item = ValidationItem(type="finite_number" if "finite" in str(exc) else "value_error",
                          loc=_loc(exc.field, prefix), msg=str(exc).split(": ", 1)[-1], input=None)
    return _json(ValidationFailed([item]), 422)


def _engine_error(request: Request, exc: EngineError) -> Response:
    if isinstance(exc, InvalidConfiguration):
        return _json(Detail({"error": "Configuration validation failed", "validation_errors": exc.errors}), 400)
    if isinstance(exc, EmptyShortTermMemory):
        return _json(Detail("Cannot learn from empty STM"), 400)
    if isinstance(exc, InvalidObservation):
        return _observation_error(exc, None)
    return _json(Detail(str(exc)), 400)


def _sequence_error(request: Request, exc: SequenceItemError) -> Response:
    return _observation_error(exc.error, exc.index)


def _validation(request: Request, exc: RequestValidationError) -> Response:
    return _json(ValidationFailed(exc.items), 422)


def _litestar_validation(request: Request, exc: ValidationException) -> Response:
    items = []
    for extra in exc.extra or []:
        if isinstance(extra, dict):
            source = str(extra.get("source") or "body")
            key = str(extra.get("key") or "")
            loc: list[str | int] = [source, *[p for p in key.split(".") if p]]
            items.append(ValidationItem(type="value_error", loc=loc, msg=str(extra.get("message")), input=None))
    if not items:
        items.append(ValidationItem(type="value_error", loc=["body"], msg=str(exc.detail), input=None))
    return _json(ValidationFailed(items), 422)


def _http(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 413:  # Litestar's "Request Entity Too Large" does not say what the limit is
        limit = request.app.state.settings.max_request_bytes
        return _json(Detail(f"Request body too large: the limit is {limit} bytes (KATO_MAX_REQUEST_BYTES)"), 413)
    return _json(Detail(exc.detail), exc.status_code, headers=exc.headers)


def _not_found(request: Request, exc: SessionNotFound) -> Response:
    return _json(session_not_found_body(exc.session_id), 404)


def _busy(request: Request, exc: SessionBusy) -> Response:
    return _json(Detail(str(exc)), 503, headers={"Retry-After": "1"})


def _unavailable(request: Request, exc: StoreUnavailable) -> Response:
    log.error("store unavailable", extra={"backend": exc.backend, "reason": exc.reason, "path": request.url.path})
    return _json(Detail(str(exc)), 503)


def _too_many(request: Request, exc: TooManySessions) -> Response:
    return _json(Detail(str(exc)), 429)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    return _json(Detail("Internal Server Error"), 500)


exception_handlers: dict[type[Exception], Any] = {
    RequestValidationError: _validation,
    ValidationException: _litestar_validation,
    HTTPException: _http,
    EngineError: _engine_error,
    SequenceItemError: _sequence_error,
    SessionNotFound: _not_found,
    SessionBusy: _busy,
    StoreUnavailable: _unavailable,
    TooManySessions: _too_many,
    Exception: _unexpected,
}
