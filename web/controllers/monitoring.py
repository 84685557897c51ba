"""Monitoring routes: /metrics JSON, /stats, /metrics/{name}, Prometheus at /prometheus."""

from __future__ import annotations

import time
from typing import Any

from litestar.params import FromPath
from litestar import Controller, MediaType, Request, Response, get
from litestar.exceptions import NotFoundException

from web.decoding import query_int
from web.health import backend_health, metrics_report, processors_info
from web.metrics import SERIES
from web.deps import runtime

__all__ = ["MonitoringController"]


class MonitoringController(Controller):
    """Counters and time series of this process."""

    path = "/"
    tags = ["monitoring"]

    @get("/metrics", summary="Metric summary (JSON)")
    async def metrics(self, request: Request) -> dict[str, Any]:
        """Sessions, request performance, host resources, per-role store counters."""
        rt = runtime(request)
        return await metrics_report(rt)

    @get("/stats", summary="Metric time series")
    async def stats(self, request: Request) -> dict[str, Any]:
        """Every series within ``?minutes=`` (default 10)."""
        rt = runtime(request)
        minutes = query_int(request.query_params, "minutes", 10)
        report = await metrics_report(rt)
        health_issues = [f"{name} unavailable" for name, ping in (await backend_health(rt)).values()
                         if not ping.ok]
        return {
            "time_range_minutes": minutes,
            "timestamp": time.time(),
            "processor_manager": processors_info(rt),
            "current_status": {
                "status": "healthy" if not health_issues else "degraded",
                "issues": health_issues,
                "metrics": {"cpu_percent": report["resources"]["cpu_percent"],
                            "memory_percent": report["resources"]["memory_percent"],
                            "error_rate_per_min": report["rates"]["errors_per_minute"]},
                "timestamp": time.time(),
            },
            "time_series": {name: rt.metrics.points(name, minutes) for name in SERIES},
            "summary": {k: report[k] for k in ("sessions", "performance", "resources", "databases")},
            "error": None,
        }

    @get("/metrics/{metric_name:str}", summary="One metric's history")
    async def metric(self, metric_name: FromPath[str], request: Request) -> dict[str, Any]:
        """Points within ``?minutes=`` (default 10); 404 when there are none."""
        rt = runtime(request)
        minutes = query_int(request.query_params, "minutes", 10)
        points = rt.metrics.points(metric_name, minutes)
        if not points:
            raise NotFoundException(detail=f"No data available for metric '{metric_name}' "
                                           f"in the last {minutes} minutes")
        values = [p["value"] for p in points]
        return {"metric_name": metric_name, "time_range_minutes": minutes, "timestamp": time.time(),
                "statistics": {"count": len(values), "min": min(values), "max": max(values),
                               "avg": sum(values) / len(values)},
                "data_points": points}

    @get("/prometheus", summary="Prometheus exposition", media_type=MediaType.TEXT)
    async def prometheus(self, request: Request) -> Response[str]:
        """Text format 0.0.4 (kept off /metrics, which is the reference's JSON)."""
        rt = runtime(request)
        backends = {name: ping.ok for name, ping in (await backend_health(rt)).values()}
        text = rt.metrics.prometheus(await rt.sessions.count(), backends, rt.stores.vectors.unindexed())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
