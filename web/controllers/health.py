"""Health, status, ping and banner routes (api.md §2.5.1–§2.5.3, plus the seeds' aliases)."""

from __future__ import annotations

import time

from litestar.params import FromPath
from litestar import Controller, MediaType, Request, Response, get

from web import __version__
from web.health import health_report, status_report
from web.deps import runtime
from web.runtime import Runtime
from web.schemas.health import Banner, HealthResponse, PingResponse, StatusResponse

__all__ = ["HealthController"]


class HealthController(Controller):
    """Liveness and backend health. ``/v2/...`` and the ping routes are aliases kept for old clients."""

    path = "/"
    tags = ["health"]

    @get(["/health", "/v2/health"], summary="Health of the service and every backend")
    async def health(self, request: Request) -> Response[HealthResponse]:
        """200 healthy/degraded, 503 unhealthy; ``backends`` has one ping result per store."""
        rt = runtime(request)
        body, status = await health_report(rt)
        return Response(body, status_code=status, media_type=MediaType.JSON)

    @get(["/status", "/v2/status"], summary="Service status")
    async def status(self, request: Request) -> StatusResponse:
        """Live sessions and the knowledge bases held in memory."""
        rt = runtime(request)
        return await status_report(rt)

    @get("/kato-api/ping", summary="Ping")
    async def ping(self, request: Request) -> PingResponse:
        """The process answers; ``id`` is PROCESSOR_ID."""
        rt = runtime(request)
        return _ping(rt, rt.settings.processor_id)

    @get("/{processor_id:str}/ping", summary="Ping a processor")
    async def processor_ping(self, processor_id: FromPath[str], request: Request) -> PingResponse:
        """The process answers for any processor id (knowledge bases are created on demand)."""
        rt = runtime(request)
        return _ping(rt, processor_id)

    @get("/", summary="Service banner")
    async def banner(self, request: Request) -> Banner:
        """Name, version and where the docs are."""
        rt = runtime(request)
        return Banner(service="KATO API", version=__version__,
                      description="Deterministic sequence learning and prediction",
                      docs="/schema", health="/health", status="running", uptime_seconds=rt.metrics.uptime(),
                      architecture="modular", session_support=True)


def _ping(rt: Runtime, processor_id: str) -> PingResponse:
    return PingResponse(status="okay", id=processor_id, processor_name=rt.settings.processor_name,
                        message="okay", time_stamp=time.time())
