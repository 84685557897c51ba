"""The services a handler uses, read from the app state the lifespan filled.

Handlers take their connection (``request: Request`` or the WebSocket) and call
these, rather than declaring Litestar dependencies. Litestar resolves every
declared dependency per request through a signature model and an exit stack,
and two or more of them run in an anyio task group (two new tasks per request):
in the mixed HTTP workload (observe ×4, predictions, learn) that was about a
third of the server's CPU per request.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection

from web.limits import RequestBodies
from web.memory import MemoryService
from web.runtime import Runtime
from web.sessions import SessionService

__all__ = ["runtime", "sessions", "memory", "bodies"]


def runtime(conn: ASGIConnection) -> Runtime:
    """The service's shared runtime."""
    return conn.app.state.kato


def sessions(conn: ASGIConnection) -> SessionService:
    """Session lifecycle operations."""
    return conn.app.state.session_service


def memory(conn: ASGIConnection) -> MemoryService:
    """STM / learn / predict operations."""
    return conn.app.state.memory_service


def bodies(conn: ASGIConnection) -> RequestBodies:
    """Request-body types carrying this app's input limits (web/limits.py)."""
    return conn.app.state.bodies
