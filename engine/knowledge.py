"""KnowledgeBase: one node's learned patterns and the observe/learn/predict rules.

A knowledge base (one per ``kb_id``) owns a compiled :class:`PatternIndex` and a
vector index. Sessions are plain :class:`SessionState` values owned by the caller;
the methods here apply engine.md §1–§3 to them. Every learn returns the
:class:`LearnedPattern` records it applied so storage can persist them
(``take_learn`` returns its record unapplied, for a store that commits it itself);
the engine never talks to a store itself.

Thread safety: predictions hold the knowledge base's lock shared (and release the
GIL while scoring), learns hold it exclusively. One session's state must not be
used by two threads at once (the session layer serialises a session).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from engine.config import EngineConfig
from engine.locking import ReadWriteLock
from engine.observation import make_event, pattern_hash, validate_observation
from engine.patterns import PatternIndex
from engine.predict import predict as _predict
from engine.results import PredictionSet
from engine.session import LearnedPattern, Observation, ObserveResult, PendingVector, SessionState
from engine.vectors import NEIGHBOURS, ExactVectorIndex, VectorIndex

__all__ = ["KnowledgeBase", "PatternRecord", "PATTERN_PREFIX"]

PATTERN_PREFIX = "PTRN|"


class PatternRecord(dict):
    """A stored pattern as a dict: name, pattern_data, length, frequency, emotives, metadata."""


class KnowledgeBase:
    """Patterns, statistics and vectors of one knowledge base (one ``node_id``)."""

    def __init__(self, kb_id: str, vectors: VectorIndex | None = None) -> None:
        self.kb_id = kb_id
        self.index = PatternIndex()
        self.vectors: VectorIndex = vectors if vectors is not None else ExactVectorIndex()
        self._lock = ReadWriteLock()

    def __len__(self) -> int:
        return len(self.index)

    # --------------------------------------------------------------- observe

    def observe(self, session: SessionState, obs: Observation, config: EngineConfig,
                defer_learn: bool = False) -> ObserveResult:
        """Apply one observation to ``session`` (engine.md §1.2–§1.5, §2.5, §3.1).

        Raises InvalidObservation (nothing changed) for a malformed observation.
        Observe-time predictions use the session's effective configuration (D2
        CHOICE) and are stored on the session as well as returned. With
        ``defer_learn`` an auto-learn's record comes back in ``learned`` unapplied
        (as :meth:`take_learn`'s), for the caller to apply: nothing in the observe
        reads the index after its auto-learn.
        """
        validate_observation(obs)
        neighbours = None
        if obs.vectors:
            neighbours = lambda summed: self.vectors.search(summed, NEIGHBOURS)  # noqa: E731
        event, pending = make_event(obs, config.sort_symbols, neighbours)
        learned: list[LearnedPattern] = []
        auto_name: str | None = None
        predictions: list = []
        if obs.strings or obs.vectors:
            if pending is not None:
                session.pending_vectors.append(PendingVector(*pending))
            if event:
                session.stm.append(event)
            if config.process_predictions:
                predictions = self.predict(session.stm, config).predictions
            auto_name = self._auto_learn(session, config, learned, defer_learn)
        session.time += 1
        if obs.emotives:
            session.emotives_accumulator.append(dict(obs.emotives))
        if obs.metadata:
            session.metadata_accumulator.append(copy.deepcopy(obs.metadata))
        if obs.strings or obs.vectors:
            session.predictions = predictions
        return ObserveResult(
            unique_id=obs.unique_id,
            stm_length=len(session.stm),
            time=session.time,
            auto_learned_pattern=auto_name,
            learned=learned,
            predictions=predictions,
        )

    def _auto_learn(self, session: SessionState, config: EngineConfig,
                    learned: list[LearnedPattern], defer: bool) -> str | None:
        # engine.md §2.5; auto-learn stores no emotives or metadata (D4).
        limit = config.max_pattern_length
        length = len(session.stm)
        if limit <= 0 or length < limit:
            return None
        keep: list[list[str]] = []
        if length > 1 and config.stm_mode == "ROLLING":
            w = limit - 1
            keep = session.stm[-w:] if length > w else session.stm[1:]
            keep = [list(ev) for ev in keep]
        name = self._learn(session, [], [], config.persistence, learned, defer)
        session.stm = keep
        return name or None

    # ----------------------------------------------------------------- learn

    def learn(self, session: SessionState, config: EngineConfig) -> tuple[str, LearnedPattern | None]:
        """Learn the whole STM of ``session`` (engine.md §2.1–§2.4).

        Returns ``("PTRN|<hash>", record)`` or ``("", None)`` when the STM holds fewer
        than two symbols (an empty STM included). STM is cleared either way; the
        emotive/metadata accumulators are kept (D5); pending vectors are indexed.
        """
        learned: list[LearnedPattern] = []
        name = self._learn(session, session.emotives_accumulator,
                           session.metadata_accumulator, config.persistence, learned)
        return name, (learned[0] if learned else None)

    def take_learn(self, session: SessionState, config: EngineConfig) -> LearnedPattern | None:
        """The first half of :meth:`learn`: everything but applying the record.

        Returns the record of the whole STM (its ``frequency`` still 0) or None under
        two symbols; the STM is cleared and pending vectors are indexed either way. The
        caller applies the record (``apply``, or a shared store's own commit).
        """
        return self._take(session, session.emotives_accumulator, session.metadata_accumulator,
                          config.persistence)

    def _learn(self, session: SessionState, emotives: list, metadata: list,
               persistence: int, learned: list[LearnedPattern], defer: bool = False) -> str:
        record = self._take(session, emotives, metadata, persistence)
        if record is None:
            return ""
        if not defer:
            record.frequency = self.apply(record)
        learned.append(record)
        return PATTERN_PREFIX + record.name

    def _take(self, session: SessionState, emotives: list, metadata: list,
              persistence: int) -> LearnedPattern | None:
        events = [list(ev) for ev in session.stm]
        session.stm = []
        if session.pending_vectors:
            self.vectors.upsert([(v.name, v.vector) for v in session.pending_vectors])
            session.pending_vectors = []
        if sum(len(ev) for ev in events) < 2:
            return None
        return LearnedPattern(
            name=pattern_hash(events),
            events=events,
            emotives=[dict(e) for e in emotives],
            metadata=copy.deepcopy(list(metadata)),
            persistence=persistence,
            frequency=0,
        )

    def apply(self, record: LearnedPattern) -> int:
        """Apply one learn (local or replayed from another process); returns the frequency."""
        with self._lock.write():
            return self.index.learn(record.name, record.events, record.emotives,
                                    record.metadata, record.persistence)

    # --------------------------------------------------------------- predict

    def predict(self, stm: list[list[str]], config: EngineConfig) -> PredictionSet:
        """Ranked predictions for ``stm`` under ``config`` (engine.md §3).

        An empty knowledge base answers at once: no pattern, no prediction, and no
        walk over a long STM.
        """
        with self._lock.read():
            if not len(self.index):
                return PredictionSet([], [])
            return _predict(self.index, stm, config)

    # ------------------------------------------------------ storage and admin

    def load(self, records: Iterable[dict[str, Any]], affinity: dict[str, dict[str, float]] | None = None) -> int:
        """Rebuild from stored records (name, pattern_data, frequency, emotives, metadata).

        Returns the number of patterns loaded. Symbol statistics are derived from
        the records; the affinity table, which is not derivable, is passed apart.
        """
        n = 0
        with self._lock.write():
            for rec in records:
                self.index.add_record(rec["name"], [list(ev) for ev in rec["pattern_data"]],
                                      int(rec.get("frequency") or 1), list(rec.get("emotives") or []),
                                      dict(rec.get("metadata") or {}))
                n += 1
            if affinity:
                self.index.set_affinity(affinity)
        return n

    def reading(self) -> AbstractContextManager[None]:
        """Hold the knowledge base still while reading ``index`` directly (a snapshot):
        shared with predictions, exclusive of learns, finalize and clear."""
        return self._lock.read()

    def pattern(self, name: str) -> PatternRecord | None:
        """The stored pattern ``name`` (bare hash or ``PTRN|`` form), or None."""
        if name.startswith(PATTERN_PREFIX):
            name = name[len(PATTERN_PREFIX):]
        with self._lock.read():
            rec = self.index.record(name)
        return None if rec is None else PatternRecord(rec)

    def finalize(self) -> int:
        """finalize-training (engine.md §3.8); returns the number of patterns processed."""
        with self._lock.write():
            return self.index.finalize()

    def clear(self) -> None:
        """Delete every pattern, statistic and vector of this knowledge base."""
        with self._lock.write():
            self.index.clear()
            self.vectors.clear()
