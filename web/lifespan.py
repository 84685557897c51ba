"""Open the stores and build the runtime at start-up; flush and close them at exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from litestar import Litestar

from storage import StoreUnavailable, open_stores
from web.memory import MemoryService
from web.metrics import SAMPLE_SECONDS
from web.runtime import Runtime
from web.sessions import SessionService
from web.settings import Settings

__all__ = ["lifespan"]

log = logging.getLogger("kato.web")

SHARED_STORE_THREADS = 256


async def _sample_forever(rt: Runtime) -> None:
    while True:
        try:
            rt.metrics.sample(await rt.sessions.count())
        except Exception:  # noqa: BLE001 - sampling must never stop the service
            log.exception("metric sampling failed")
        await asyncio.sleep(SAMPLE_SECONDS)


def lifespan(settings: Settings):
    """A Litestar lifespan context for ``settings``."""

    @contextlib.asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        stores = open_stores(settings)
        opener = getattr(stores.patterns, "open", None)
        if opener is not None:  # server backends: connect and create the schema now
            try:
                await opener()
            except StoreUnavailable as exc:  # keep serving: /health reports it, requests answer 503
                log.warning("pattern store not ready at start", extra={"backend": exc.backend, "reason": exc.reason})
        rt = Runtime(settings, stores)
        if rt.kbs.shared:
            # The learns of observe-sequence, and finalize-training, hold their worker
            # thread while their ClickHouse batch and Redis commit complete; more threads
            # mean more of them per batch (storage/shared.py). POST /learn and observe
            # await their commits on the event loop and need no thread.
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, SHARED_STORE_THREADS)
        sessions = SessionService(rt)
        app.state.kato = rt
        app.state.session_service = sessions
        app.state.memory_service = MemoryService(rt, sessions)
        sampler = asyncio.create_task(_sample_forever(rt))
        log.info("kato started", extra={"storage": settings.storage, "data_dir": settings.data_dir,
                                        "service_name": settings.service_name})
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await stores.close()
            log.info("kato stopped")

    return run
