"""Observe, learn, predict and clear: the per-session memory operations (api.md §2.2).

Every state-changing operation holds the session lock, re-reads the session
inside it, works on a copy of the session's state and saves a new record before
releasing the lock, so readers (stm, predictions, percept, cognition) always see
one consistent version without waiting. Learns are written to the pattern store
before the request answers (read-your-writes, api.md §4.10). Engine calls run
inline or on a thread as :class:`~web.offload.Offloader` decides.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from engine import (
    PATTERN_PREFIX,
    EmptyShortTermMemory,
    EngineConfig,
    InvalidObservation,
    KnowledgeBase,
    LearnedPattern,
    Observation,
    SessionState,
)
from engine.emotives import average_emotives
from storage.records import SessionRecord
from web.errors import SequenceItemError
from web.runtime import Runtime
from web.schemas.observations import (
    Cleared,
    ClearedAll,
    CognitionData,
    CognitionDataResponse,
    FinalizeTrainingResult,
    LearnResult,
    ObservationData,
    ObservationResult,
    ObservationSequenceResult,
    ObserveSequence,
    PerceptDataResponse,
    SequenceItemResult,
    StmResponse,
)
from web.schemas.predictions import PredictionsResponse
from web.sessions import SessionService

__all__ = ["MemoryService", "MAX_STM", "MAX_ACCUMULATED"]

MAX_STM = 1000          # api.md §3.7: events kept in STM (newest)
MAX_ACCUMULATED = 1000  # api.md §3.7: emotive / metadata accumulator entries (newest)


def _working_copy(state: SessionState) -> SessionState:
    # The engine appends to these lists in place; the stored version must not change.
    return msgspec.structs.replace(
        state, stm=list(state.stm), emotives_accumulator=list(state.emotives_accumulator),
        metadata_accumulator=list(state.metadata_accumulator), pending_vectors=list(state.pending_vectors))


def _enforce_limits(state: SessionState) -> None:
    if len(state.stm) > MAX_STM:
        state.stm = state.stm[-MAX_STM:]
    if len(state.emotives_accumulator) > MAX_ACCUMULATED:
        state.emotives_accumulator = state.emotives_accumulator[-MAX_ACCUMULATED:]
    if len(state.metadata_accumulator) > MAX_ACCUMULATED:
        state.metadata_accumulator = state.metadata_accumulator[-MAX_ACCUMULATED:]


def _percept(data: ObservationData, state: SessionState) -> dict[str, Any]:
    """api.md §2.2.9: strings sorted, vectors as received, emotives averaged over the session."""
    return {
        "strings": sorted(data.strings),
        "vectors": data.vectors,
        "emotives": average_emotives(state.emotives_accumulator),
        "path": [],
        "metadata": data.metadata,
    }


def _observation(data: ObservationData, unique_id: str) -> Observation:
    return Observation(strings=data.strings, vectors=data.vectors, emotives=data.emotives,
                       metadata=data.metadata, unique_id=unique_id)


class _SequenceRun(msgspec.Struct):
    results: list[SequenceItemResult]
    names: list[str]
    final_name: str | None
    learned: list[LearnedPattern]
    percept: dict[str, Any] | None
    final_stm_length: int


def _run_sequence(kb: KnowledgeBase, state: SessionState, body: ObserveSequence,
                  config: EngineConfig, learned: list[LearnedPattern]) -> _SequenceRun:
    """The whole batch of api.md §2.2.2 on ``state`` (synchronous: one engine call)."""
    results: list[SequenceItemResult] = []
    names: list[str] = []
    percept = None
    for i, item in enumerate(body.observations):
        if body.clear_stm_between and i > 0:
            state.stm = []
        unique_id = item.unique_id if isinstance(item.unique_id, str) and item.unique_id else \
            f"seq-obs-{uuid.uuid4().hex}"
        try:
            result = kb.observe(state, _observation(item, unique_id), config)
        except InvalidObservation as exc:
            raise SequenceItemError(i, exc) from None
        learned.extend(result.learned)
        state.predictions = result.predictions
        if body.learn_after_each and state.stm:
            name, record = kb.learn(state, config)
            names.append(name)
            if record is not None:
                learned.append(record)
        if result.auto_learned_pattern:
            names.append(result.auto_learned_pattern)
        percept = _percept(item, state)
        results.append(SequenceItemResult(
            status="okay", sequence_position=i, stm_length=len(state.stm), time=state.time,
            unique_id=unique_id, auto_learned_pattern=result.auto_learned_pattern))
    final_name = None
    if body.learn_at_end and state.stm:
        final_name, record = kb.learn(state, config)
        names.append(final_name)
        if record is not None:
            learned.append(record)
    return _SequenceRun(results=results, names=names, final_name=final_name, learned=learned,
                        percept=percept, final_stm_length=len(state.stm))


def _commit_on_loop(kb: KnowledgeBase) -> Callable[[LearnedPattern], Awaitable[int]] | None:
    """``kb.commit`` when ``kb`` commits its learns itself, awaited on the event loop
    (storage/shared.py's SharedKnowledgeBase); None when the engine's ``apply`` does it."""
    return getattr(kb, "commit", None)


class MemoryService:
    """STM, learning and prediction operations of one session."""

    def __init__(self, rt: Runtime, sessions: SessionService) -> None:
        self.rt = rt
        self.sessions = sessions

    async def _save(self, rec: SessionRecord, state: SessionState, percept: dict[str, Any]) -> None:
        _enforce_limits(state)
        now = time.time()
        metrics = self.rt.metrics
        metrics.session_operations += 1
        await self.rt.sessions.save(msgspec.structs.replace(
            rec, state=state, percept_data=percept, last_accessed=now,
            expires_at=self.sessions.expiry(rec, now)))
        metrics.store("redis", time.time() - now, True)

    async def observe(self, session_id: str, data: ObservationData) -> ObservationResult:
        """One observation; auto-learn may store a pattern (persisted before answering)."""
        rt = self.rt
        async with self.sessions.hold(session_id):
            rec = await self.sessions.live(session_id)
            entry = await rt.kbs.get(rec.kb_id, rec.node_id)
            state = _working_copy(rec.state)
            obs = _observation(data, f"obs-{uuid.uuid4().hex}")
            config = rt.resolver.effective(rec.overrides)
            commit = _commit_on_loop(entry.kb)
            # A vector store read or write (this observation's vectors, or an auto-learn
            # indexing pending ones) may wait on the network: that runs on a thread where
            # the store needs it (web/runtime.py).
            operation = "observe" if obs.vectors or state.pending_vectors else "observe_symbols"
            async with entry.gate.shared():
                result = await rt.offload.run((rec.kb_id, operation), entry.kb.observe, state, obs, config,
                                              commit is not None)
                if commit is not None:   # an auto-learn, taken from the engine unapplied
                    for record in result.learned:
                        record.frequency = await commit(record)
                await rt.persist(rec.kb_id, result.learned)
            state.predictions = result.predictions
            await self._save(rec, state, _percept(data, state))
        rt.metrics.observations += 1
        return ObservationResult(
            status="okay", session_id=session_id, processor_id=rec.node_id, stm_length=len(state.stm),
            time=state.time, unique_id=obs.unique_id, auto_learned_pattern=result.auto_learned_pattern)

    async def observe_sequence(self, session_id: str, body: ObserveSequence) -> ObservationSequenceResult:
        """A batch under one lock; the session is saved once, only if every item succeeded."""
        rt = self.rt
        async with self.sessions.hold(session_id):
            rec = await self.sessions.live(session_id)
            initial = len(rec.state.stm)
            if not body.observations:
                return ObservationSequenceResult(
                    status="completed", processor_id=rec.node_id, observations_processed=0,
                    initial_stm_length=initial, final_stm_length=initial, results=[],
                    auto_learned_patterns=[], final_learned_pattern=None, isolated=body.clear_stm_between)
            entry = await rt.kbs.get(rec.kb_id, rec.node_id)
            state = _working_copy(rec.state)
            config = rt.resolver.effective(rec.overrides)
            learned: list[LearnedPattern] = []
            async with entry.gate.shared():
                try:
                    run = await rt.offload.run((rec.kb_id, "sequence"), _run_sequence,
                                               entry.kb, state, body, config, learned)
                finally:
                    # Items before a failing one stay learned (api.md §2.2.2), so persist them.
                    await rt.persist(rec.kb_id, learned)
            await self._save(rec, state, run.percept if run.percept is not None else rec.percept_data)
        rt.metrics.observations += len(body.observations)
        return ObservationSequenceResult(
            status="completed", processor_id=rec.node_id, observations_processed=len(body.observations),
            initial_stm_length=initial, final_stm_length=run.final_stm_length, results=run.results,
            auto_learned_patterns=run.names, final_learned_pattern=run.final_name,
            isolated=body.clear_stm_between)

    async def stm(self, session_id: str) -> StmResponse:
        """The session's STM."""
        rec = await self.sessions.live(session_id)
        return StmResponse(stm=rec.state.stm, session_id=session_id, length=len(rec.state.stm))

    async def learn(self, session_id: str) -> LearnResult:
        """Learn the STM; 400 on an empty STM; ``""`` when it holds fewer than 2 symbols."""
        rt = self.rt
        async with self.sessions.hold(session_id):
            rec = await self.sessions.live(session_id)
            if not rec.state.stm:
                raise EmptyShortTermMemory()
            entry = await rt.kbs.get(rec.kb_id, rec.node_id)
            state = _working_copy(rec.state)
            events = len(state.stm)
            config = rt.resolver.effective(rec.overrides)
            async with entry.gate.shared():
                name, record = await self._learn_stm(rec.kb_id, entry.kb, state, config)
                await rt.persist(rec.kb_id, [record] if record is not None else [])
            await self._save(rec, state, rec.percept_data)
        message = (f"Learned pattern {name} from {events} events" if name
                   else f"Nothing learned from {events} events: a pattern needs at least 2 symbols")
        return LearnResult(status="learned", pattern_name=name, session_id=session_id, processor_id=None,
                           message=message)

    async def _learn_stm(self, kb_id: str, kb: KnowledgeBase, state: SessionState,
                         config: EngineConfig) -> tuple[str, LearnedPattern | None]:
        """``kb.learn(state, config)``. A knowledge base that commits on the event loop
        (``commit``, storage/shared.py) takes the record from the engine and awaits its
        commit here, so that no worker thread blocks on it."""
        commit = _commit_on_loop(kb)
        if commit is None:
            return await self.rt.offload.run((kb_id, "learn"), kb.learn, state, config)
        # Indexing the STM's vectors is a vector store write: that stays on a thread.
        operation = "learn" if state.pending_vectors else "take_learn"
        record = await self.rt.offload.run((kb_id, operation), kb.take_learn, state, config)
        if record is None:
            return "", None
        record.frequency = await commit(record)
        return PATTERN_PREFIX + record.name, record

    async def clear_stm(self, session_id: str) -> Cleared:
        """Reset STM, accumulators, time, percept, predictions and pending vectors."""
        rt = self.rt
        async with self.sessions.hold(session_id):
            rec = await self.sessions.live(session_id)
            await self._save(rec, SessionState(), {})
        return Cleared(status="cleared", session_id=session_id)

    async def clear_all(self, session_id: str) -> ClearedAll:
        """Delete the node's whole knowledge base, then reset this session."""
        rt = self.rt
        async with self.sessions.hold(session_id):
            rec = await self.sessions.live(session_id)
            entry = await rt.kbs.get(rec.kb_id, rec.node_id)
            async with entry.gate.exclusive():
                await rt.stores.patterns.clear(rec.kb_id)
                await rt.stores.vectors.drop(rec.kb_id)
                entry.kb.clear()
                rt.offload.forget(rec.kb_id)
            await self._save(rec, SessionState(), {})
        return ClearedAll(status="cleared", session_id=session_id, scope="all")

    async def predictions(self, session_id: str) -> PredictionsResponse:
        """Predictions for the current STM, computed now; no lock (one snapshot)."""
        rt = self.rt
        rec = await self.sessions.live(session_id)
        stm = rec.state.stm
        if not stm:
            return PredictionsResponse(predictions=[], future_potentials=[], session_id=session_id,
                                       processor_id=None, count=0, time=None, unique_id=None)
        entry = await rt.kbs.get(rec.kb_id, rec.node_id)
        config = rt.resolver.effective(rec.overrides)
        result = await rt.offload.run((rec.kb_id, "predict"), entry.kb.predict, stm, config)
        return PredictionsResponse(predictions=result.predictions, future_potentials=result.future_potentials,
                                   session_id=session_id, processor_id=None, count=len(result.predictions),
                                   time=None, unique_id=None)

    async def finalize(self, session_id: str) -> FinalizeTrainingResult:
        """finalize-training over the node's patterns (node-wide, no session lock)."""
        rt = self.rt
        rec = await self.sessions.live(session_id)
        entry = await rt.kbs.get(rec.kb_id, rec.node_id)
        start = time.perf_counter()
        async with entry.gate.exclusive():
            n = await rt.offload.run((rec.kb_id, "finalize"), entry.kb.finalize)
            await rt.stores.patterns.mark_finalized(rec.kb_id)
        ms = round((time.perf_counter() - start) * 1000.0, 2)
        return FinalizeTrainingResult(
            status="completed", patterns_processed=n, time_ms=ms, session_id=session_id, node_id=rec.node_id,
            message=f"Computed Shannon entropy and TF vectors for {n} patterns in {ms}ms")

    async def percept(self, session_id: str) -> PerceptDataResponse:
        """The last observation as perceived (``{}`` for a new or cleared session)."""
        rec = await self.sessions.live(session_id)
        return PerceptDataResponse(percept_data=rec.percept_data, session_id=session_id, node_id=rec.node_id)

    async def cognition(self, session_id: str) -> CognitionDataResponse:
        """Last observe's predictions, last emotive dict, STM and time."""
        rec = await self.sessions.live(session_id)
        state = rec.state
        data = CognitionData(
            predictions=state.predictions,
            emotives=state.emotives_accumulator[-1] if state.emotives_accumulator else {},
            symbols=[s for event in state.stm for s in event], short_term_memory=state.stm, time=state.time)
        return CognitionDataResponse(cognition_data=data, session_id=session_id, node_id=rec.node_id)
