"""Session routes (api.md §2.1, §2.2). Guarded paths are checked by web.edge first."""

from __future__ import annotations

from typing import Any

from litestar.params import FromPath
from litestar import Controller, Request, delete, get, post

from web.decoding import decode_body, query_int
from web.deps import bodies, memory, sessions
from web.schemas.observations import (
    Cleared,
    ClearedAll,
    CognitionDataResponse,
    FinalizeTrainingResult,
    LearnResult,
    ObservationData,
    ObservationResult,
    ObservationSequenceResult,
    ObserveSequence,
    PerceptDataResponse,
    StmResponse,
)
from web.schemas.predictions import PredictionsResponse
from web.schemas.sessions import (
    ConfigUpdated,
    CreateSession,
    SessionConfig,
    SessionCount,
    SessionDeleted,
    SessionExists,
    SessionExtended,
    SessionResponse,
)

__all__ = ["SessionController"]


class SessionController(Controller):
    """Sessions and their memory. Bodies are decoded by web.decoding (lax rules, E2 errors)."""

    path = "/sessions"
    tags = ["sessions"]

    @post("/", status_code=200, summary="Create a session", opt={"body": CreateSession})
    async def create(self, request: Request) -> SessionResponse:
        """Body ``{node_id, ttl_seconds?, metadata?, config?}``; 422/400/429 on bad input or the cap."""
        body = decode_body(await request.body(), bodies(request).create_session)
        return await sessions(request).create(body)

    @get("/count", summary="Live-session count")
    async def count(self, request: Request) -> SessionCount:
        """Exact number of live sessions."""
        return await sessions(request).count()

    @get("/{session_id:str}", summary="Session info")
    async def info(self, session_id: FromPath[str], request: Request) -> SessionResponse:
        """Session info (slides the TTL); 404 ``detail`` when not live."""
        return await sessions(request).info(session_id)

    @delete("/{session_id:str}", status_code=200, summary="Delete a session")
    async def delete_session(self, session_id: FromPath[str], request: Request) -> SessionDeleted:
        """Delete the session; its node's knowledge base is untouched."""
        return await sessions(request).delete(session_id)

    @get("/{session_id:str}/exists", summary="Existence check")
    async def exists(self, session_id: FromPath[str], request: Request) -> SessionExists:
        """Always 200; never extends the TTL."""
        return await sessions(request).exists(session_id)

    @post("/{session_id:str}/extend", status_code=200, summary="Reset the expiry")
    async def extend(self, session_id: FromPath[str], request: Request) -> SessionExtended:
        """``?ttl_seconds=N`` (default 3600, at least 1); any body is ignored."""
        return await sessions(request).extend(session_id, query_int(request.query_params, "ttl_seconds", 3600))

    @get("/{session_id:str}/config", summary="Effective configuration")
    async def get_config(self, session_id: FromPath[str], request: Request) -> SessionConfig:
        """Process defaults overlaid with the session's overrides."""
        return await sessions(request).config(session_id)

    @post("/{session_id:str}/config", status_code=200, summary="Update configuration", opt={"body": dict[str, Any]})
    async def update_config(self, session_id: FromPath[str], request: Request) -> ConfigUpdated:
        """``{"config": {...}}`` or a flat map; 400 with ``validation_errors`` naming every bad key."""
        body = decode_body(await request.body(), dict[str, Any])
        return await sessions(request).update_config(session_id, body)

    @post("/{session_id:str}/observe", status_code=200, summary="Observe", opt={"body": ObservationData})
    async def observe(self, session_id: FromPath[str], request: Request) -> ObservationResult:
        """One observation ``{strings, vectors, emotives, metadata}``; 422 beyond the KATO_MAX_* limits."""
        body = decode_body(await request.body(), bodies(request).observation)
        return await memory(request).observe(session_id, body)

    @post("/{session_id:str}/observe-sequence", status_code=200, summary="Observe a batch", opt={"body": ObserveSequence})
    async def observe_sequence(self, session_id: FromPath[str], request: Request) -> ObservationSequenceResult:
        """``{observations: [...], learn_after_each, learn_at_end, clear_stm_between}``."""
        body = decode_body(await request.body(), bodies(request).sequence)
        return await memory(request).observe_sequence(session_id, body)

    @get("/{session_id:str}/stm", summary="Short-term memory")
    async def stm(self, session_id: FromPath[str], request: Request) -> StmResponse:
        """The STM as a list of events."""
        return await memory(request).stm(session_id)

    @post("/{session_id:str}/learn", status_code=200, summary="Learn the STM")
    async def learn(self, session_id: FromPath[str], request: Request) -> LearnResult:
        """Learn the STM as a pattern; 400 ``Cannot learn from empty STM``."""
        return await memory(request).learn(session_id)

    @get("/{session_id:str}/predictions", summary="Predictions")
    async def predictions(self, session_id: FromPath[str], request: Request) -> PredictionsResponse:
        """Predictions for the current STM (query parameters are ignored)."""
        return await memory(request).predictions(session_id)

    @post("/{session_id:str}/clear-stm", status_code=200, summary="Clear the session's memory")
    async def clear_stm(self, session_id: FromPath[str], request: Request) -> Cleared:
        """Reset STM, accumulators, time, percept and predictions."""
        return await memory(request).clear_stm(session_id)

    @post("/{session_id:str}/clear-all", status_code=200, summary="Drop the node's knowledge base")
    async def clear_all(self, session_id: FromPath[str], request: Request) -> ClearedAll:
        """Delete every pattern of the node, then reset this session."""
        return await memory(request).clear_all(session_id)

    @post("/{session_id:str}/finalize-training", status_code=200, summary="Precompute pattern metrics")
    async def finalize_training(self, session_id: FromPath[str], request: Request) -> FinalizeTrainingResult:
        """finalize-training over every pattern of the session's node."""
        return await memory(request).finalize(session_id)

    @get("/{session_id:str}/percept-data", summary="Last observation as perceived")
    async def percept_data(self, session_id: FromPath[str], request: Request) -> PerceptDataResponse:
        """Sorted strings, vectors, averaged emotives and metadata of the last observation."""
        return await memory(request).percept(session_id)

    @get("/{session_id:str}/cognition-data", summary="Last predictions and STM view")
    async def cognition_data(self, session_id: FromPath[str], request: Request) -> CognitionDataResponse:
        """Predictions of the last observe, last emotives, STM and time."""
        return await memory(request).cognition(session_id)
