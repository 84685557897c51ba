"""Per-session state and the observation/result Structs of the engine API."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.results import Prediction, SingleSymbolPrediction

__all__ = ["Observation", "PendingVector", "SessionState", "ObserveResult", "LearnedPattern"]


class Observation(msgspec.Struct, kw_only=True):
    """One observation (engine.md §1.1). Absent fields default to empty."""

    strings: list[str] = []
    vectors: list[list[float]] = []
    emotives: dict[str, float] = {}
    metadata: dict[str, Any] = {}
    unique_id: str = ""


class PendingVector(msgspec.Struct, array_like=True):
    """A summed observation vector waiting for the next learn to be indexed."""

    name: str
    vector: list[float]


class SessionState(msgspec.Struct, kw_only=True):
    """What one session owns (engine.md §1.4–§1.5). Never shared between sessions.

    The caller serialises operations on one state; the engine mutates it in place.
    """

    stm: list[list[str]] = []
    emotives_accumulator: list[dict[str, float]] = []
    metadata_accumulator: list[dict[str, Any]] = []
    time: int = 0
    pending_vectors: list[PendingVector] = []
    predictions: list[Prediction | SingleSymbolPrediction] = []

    def clear(self) -> None:
        """clear-stm: STM, accumulators, time, pending vectors and predictions reset."""
        self.stm = []
        self.emotives_accumulator = []
        self.metadata_accumulator = []
        self.time = 0
        self.pending_vectors = []
        self.predictions = []


class LearnedPattern(msgspec.Struct, kw_only=True):
    """One applied learn, as storage must persist it (engine.md §2.2).

    ``emotives`` and ``metadata`` are the per-observation inputs of this learn (not
    the merged stored values); ``frequency`` is the frequency after this learn in
    the process that performed it.
    """

    name: str
    events: list[list[str]]
    emotives: list[dict[str, float]]
    metadata: list[dict[str, Any]]
    persistence: int
    frequency: int


class ObserveResult(msgspec.Struct, kw_only=True):
    """Outcome of one observe (engine.md §1.2, §2.5)."""

    unique_id: str
    stm_length: int
    time: int
    auto_learned_pattern: str | None
    learned: list[LearnedPattern]
    predictions: list[Prediction | SingleSymbolPrediction]
