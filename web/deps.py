"""Dependency providers: the runtime and services built by the lifespan."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from web.limits import RequestBodies
from web.memory import MemoryService
from web.runtime import Runtime
from web.sessions import SessionService

__all__ = ["dependencies", "Rt", "Sessions", "Memory", "Bodies"]

Rt = NamedDependency[Runtime]
Sessions = NamedDependency[SessionService]
Memory = NamedDependency[MemoryService]
Bodies = NamedDependency[RequestBodies]


def provide_runtime(state: State) -> Runtime:
    """The service's shared runtime."""
    return state.kato


def provide_sessions(state: State) -> SessionService:
    """Session lifecycle operations."""
    return state.session_service


def provide_memory(state: State) -> MemoryService:
    """STM / learn / predict operations."""
    return state.memory_service


def provide_bodies(state: State) -> RequestBodies:
    """Request-body types carrying this app's input limits (web/limits.py)."""
    return state.bodies


dependencies = {
    "bodies": Provide(provide_bodies, sync_to_thread=False),
    "rt": Provide(provide_runtime, sync_to_thread=False),
    "sessions": Provide(provide_sessions, sync_to_thread=False),
    "memory": Provide(provide_memory, sync_to_thread=False),
}
