"""``create_app(settings=None) -> Litestar`` (``uvicorn --factory web.app:create_app``)."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig

from web import __version__
from web.auth import ApiKeyGate
from web.controllers.backup import BackupController
from web.controllers.events import events
from web.controllers.health import HealthController
from web.controllers.monitoring import MonitoringController
from web.controllers.patterns import DeprecatedController, PatternController, SymbolController
from web.controllers.sessions import SessionController
from web.edge import Edge
from web.errors import exception_handlers
from web.lifespan import lifespan
from web.limits import request_bodies
from web.logging import configure_logging
from web.openapi import document_request_bodies
from web.ratelimit import RateLimiter
from web.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Litestar:
    """The KATO app for ``settings`` (default: read from the environment).

    OpenAPI is served under ``/schema`` (``/schema/openapi.json``, Swagger at
    ``/schema/swagger``). CORS allows every origin with credentials (api.md §1.1).
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    app = Litestar(
        route_handlers=[SessionController, PatternController, SymbolController, DeprecatedController,
                        HealthController, MonitoringController, BackupController, events],
        exception_handlers=exception_handlers,
        lifespan=[lifespan(settings)],
        cors_config=CORSConfig(allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                               allow_credentials=True),
        openapi_config=OpenAPIConfig(title="KATO API", version=__version__, path="/schema"),
        request_max_body_size=settings.max_request_bytes,
        # Our loggers are configured above; Litestar's default would put a handler on the
        # root logger, printing every third-party INFO line (one per Qdrant HTTP call).
        logging_config=None,
        debug=False,
    )
    app.state.settings = settings
    app.state.bodies = request_bodies(settings.limits)
    document_request_bodies(app, app.state.bodies.documented)
    # Outside Litestar's router on purpose: the session guard answers before routing.
    app.asgi_handler = Edge(app.asgi_handler, app)
    if settings.rate_limit:  # ahead of the session guard: a refused request costs no store call
        app.asgi_handler = RateLimiter(app.asgi_handler, settings.rate_limit, settings.rate_limit_burst,
                                       keyed=bool(settings.api_key))
    if settings.api_key:  # outermost: no key, no session guard either (web/auth.py)
        app.asgi_handler = ApiKeyGate(app.asgi_handler, settings.api_key)
    return app
