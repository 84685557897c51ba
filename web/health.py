"""What /health, /status and /metrics report, computed from the runtime."""

from __future__ import annotations

import time
from typing import Any

from storage.base import BackendHealth
from web import __version__
from web.runtime import Runtime
from web.schemas.health import HealthResponse, ProcessorInfo, ProcessorsInfo, StatusResponse
from web.timefmt import iso_offset

__all__ = ["health_report", "status_report", "processors_info", "metrics_report", "backend_health"]

# Which backends a request path cannot do without (api.md §2.5.2 CHOICE A17):
# sessions and patterns down -> unhealthy (503); vectors down -> degraded.
_CRITICAL_ROLES = ("sessions", "patterns")


async def backend_health(rt: Runtime) -> dict[str, tuple[str, BackendHealth]]:
    """role -> (backend name, ping result) for every store."""
    stores = rt.stores
    return {
        "sessions": (stores.sessions.backend, await stores.sessions.ping()),
        "patterns": (stores.patterns.backend, await stores.patterns.ping()),
        "vectors": (stores.vectors.backend, await stores.vectors.ping()),
    }


async def health_report(rt: Runtime) -> tuple[HealthResponse, int]:
    """Health from the backends' pings; host load only adds ``issues``. Status code 200 or 503.

    ``backends`` is keyed by the backend actually serving each role (``memory``,
    ``sqlite``, ``qdrant_local`` on the embedded default; ``redis``,
    ``clickhouse``, ``qdrant`` with the external backends), so the report names
    what really answered rather than the reference's fixed three keys.
    """
    pings = await backend_health(rt)
    issues: list[str] = []
    status = "healthy"
    for role, (name, ping) in pings.items():
        if not ping.ok:
            issues.append(f"{name} ({role}) unavailable: {ping.error}")
            status = "unhealthy" if role in _CRITICAL_ROLES else ("degraded" if status == "healthy" else status)
    cpu = rt.metrics.series["kato_cpu_usage_percent"]
    if cpu and cpu[-1][1] > 80.0:
        issues.append("High CPU usage")
    mem = rt.metrics.series["kato_memory_usage_percent"]
    if mem and mem[-1][1] > 90.0:
        issues.append("High memory usage")
    active = await rt.sessions.count() if pings["sessions"][1].ok else 0
    body = HealthResponse(
        status=status, processor_status="unhealthy" if status == "unhealthy" else "healthy",
        service_name=rt.settings.service_name, uptime_seconds=rt.metrics.uptime(), issues=issues,
        metrics_collected=len(rt.metrics.series), last_collection=rt.metrics.last_sample or rt.started,
        active_sessions=active, timestamp=iso_offset(time.time()),
        backends={name: ping for name, ping in pings.values()})
    return body, 503 if status == "unhealthy" else 200


def processors_info(rt: Runtime) -> ProcessorsInfo:
    """The in-memory knowledge bases in the reference's processor-manager shape."""
    now = time.time()
    items = [ProcessorInfo(processor_id=kb_id, node_id=e.node_id, created_at=iso_offset(e.created_at),
                           last_accessed=iso_offset(e.last_accessed), access_count=e.access_count,
                           idle_seconds=round(now - e.last_accessed, 3))
             for kb_id, e in rt.kbs.loaded()]
    # Our knowledge bases are caches with no eviction cap; 100 is reported for shape parity.
    return ProcessorsInfo(total_processors=len(items), max_processors=100,
                          eviction_ttl_seconds=rt.settings.session_ttl, processors=items)


async def status_report(rt: Runtime) -> StatusResponse:
    """Service status: live sessions and the knowledge bases held in memory."""
    active = await rt.sessions.count()
    sessions: dict[str, Any] = {"total_sessions": active, "active_sessions": active, "expired_sessions": 0,
                                "backend": rt.sessions.backend, "redis_url": None}
    return StatusResponse(status="healthy", base_processor_id=rt.settings.service_name,
                          uptime_seconds=rt.metrics.uptime(), sessions=sessions,
                          processors=processors_info(rt), version=__version__)


async def metrics_report(rt: Runtime) -> dict[str, Any]:
    """The ``/metrics`` JSON of api.md §2.5.4 (never cached)."""
    m = rt.metrics
    r = m.resources
    active = await rt.sessions.count()
    uptime = m.uptime()
    requests_minute, errors_minute = m.recent_counts()
    return {
        "timestamp": time.time(),
        "sessions": {"total_created": m.sessions_created, "total_deleted": m.sessions_deleted, "active": active,
                     "operations_total": m.session_operations},
        "performance": {"total_requests": m.requests_total, "total_errors": m.errors_total,
                        "error_rate": m.errors_total / m.requests_total if m.requests_total else 0.0,
                        "average_response_time": m.average_response_time()},
        "resources": {"cpu_percent": _last(m, "kato_cpu_usage_percent", r.cpu_percent),
                      "memory_percent": r.memory_percent(), "disk_percent": r.disk_percent()},
        "databases": m.databases(),
        "rates": {"requests_per_second": requests_minute / 60.0, "requests_per_minute": float(requests_minute),
                  "errors_per_minute": float(errors_minute)},
        "processor_manager": processors_info(rt),
        "uptime_seconds": uptime,
        "active_sessions": active,
        "error": None,
    }


def _last(m, name: str, fallback) -> float:
    series = m.series[name]
    return series[-1][1] if series else fallback()
