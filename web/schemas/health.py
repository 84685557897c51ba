"""Health, status and ping bodies (api.md §2.5.1–§2.5.3)."""

from __future__ import annotations

from typing import Any

import msgspec

from storage.base import BackendHealth

__all__ = ["HealthResponse", "StatusResponse", "ProcessorInfo", "ProcessorsInfo", "PingResponse", "Banner"]


class HealthResponse(msgspec.Struct, kw_only=True):
    """``GET /health``: ``status`` follows the backends (healthy/degraded/unhealthy)."""

    status: str
    processor_status: str
    service_name: str
    uptime_seconds: float
    issues: list[str]
    metrics_collected: int
    last_collection: float
    active_sessions: int
    timestamp: str
    backends: dict[str, BackendHealth]


class ProcessorInfo(msgspec.Struct, kw_only=True):
    """One knowledge base held in this process's memory."""

    processor_id: str
    node_id: str
    created_at: str
    last_accessed: str
    access_count: int
    idle_seconds: float


class ProcessorsInfo(msgspec.Struct, kw_only=True):
    """The in-memory knowledge bases, in the reference's processor-manager shape."""

    total_processors: int
    max_processors: int
    eviction_ttl_seconds: int
    processors: list[ProcessorInfo]


class StatusResponse(msgspec.Struct, kw_only=True):
    """``GET /status``."""

    status: str
    base_processor_id: str
    uptime_seconds: float
    sessions: dict[str, Any]
    processors: ProcessorsInfo
    version: str


class PingResponse(msgspec.Struct, kw_only=True):
    """``/kato-api/ping`` and ``/{processor_id}/ping``: the process answers."""

    status: str
    id: str
    processor_name: str
    message: str
    time_stamp: float


class Banner(msgspec.Struct, kw_only=True):
    """``GET /``."""

    service: str
    version: str
    description: str
    docs: str
    health: str
    status: str
    uptime_seconds: float
    architecture: str
    session_support: bool
