"""Observation, learning and memory bodies (api.md §2.2)."""

from __future__ import annotations

from typing import Any

import msgspec

from web.schemas.types import PredictionList

__all__ = [
    "ObservationData",
    "SequenceObservation",
    "ObserveSequence",
    "ObservationResult",
    "SequenceItemResult",
    "ObservationSequenceResult",
    "StmResponse",
    "LearnResult",
    "Cleared",
    "ClearedAll",
    "FinalizeTrainingResult",
    "PerceptDataResponse",
    "CognitionData",
    "CognitionDataResponse",
]


class ObservationData(msgspec.Struct, kw_only=True):
    """One observation; absent fields are empty. A ``unique_id`` sent here is ignored."""

    strings: list[str] = []
    vectors: list[list[float]] = []
    emotives: dict[str, float] = {}
    metadata: dict[str, Any] = {}


class SequenceObservation(ObservationData, kw_only=True):
    """An item of observe-sequence: a non-empty ``unique_id`` is kept."""

    unique_id: str | None = None


class ObserveSequence(msgspec.Struct, kw_only=True):
    """``POST /sessions/{id}/observe-sequence``."""

    observations: list[SequenceObservation]
    learn_after_each: bool = False
    learn_at_end: bool = False
    clear_stm_between: bool = False


class ObservationResult(msgspec.Struct, kw_only=True):
    """``POST /sessions/{id}/observe``; ``processor_id`` is the raw node id."""

    status: str
    session_id: str
    processor_id: str
    stm_length: int
    time: int
    unique_id: str
    auto_learned_pattern: str | None


class SequenceItemResult(msgspec.Struct, kw_only=True):
    """One entry of ``results`` of observe-sequence."""

    status: str
    sequence_position: int
    stm_length: int
    time: int
    unique_id: str
    auto_learned_pattern: str | None


class ObservationSequenceResult(msgspec.Struct, kw_only=True):
    """``POST /sessions/{id}/observe-sequence``."""

    status: str
    processor_id: str
    observations_processed: int
    initial_stm_length: int
    final_stm_length: int
    results: list[SequenceItemResult]
    auto_learned_patterns: list[str]
    final_learned_pattern: str | None
    isolated: bool


class StmResponse(msgspec.Struct):
    """``GET /sessions/{id}/stm``."""

    stm: list[list[str]]
    session_id: str
    length: int


class LearnResult(msgspec.Struct, kw_only=True):
    """``POST /sessions/{id}/learn``; ``pattern_name`` is ``""`` when nothing was stored."""

    status: str
    pattern_name: str
    session_id: str
    processor_id: None
    message: str


class Cleared(msgspec.Struct):
    """``POST /sessions/{id}/clear-stm``."""

    status: str
    session_id: str


class ClearedAll(msgspec.Struct):
    """``POST /sessions/{id}/clear-all``."""

    status: str
    session_id: str
    scope: str


class FinalizeTrainingResult(msgspec.Struct, kw_only=True):
    """``POST /sessions/{id}/finalize-training``."""

    status: str
    patterns_processed: int
    time_ms: float
    session_id: str
    node_id: str
    message: str


class PerceptDataResponse(msgspec.Struct):
    """``GET /sessions/{id}/percept-data``."""

    percept_data: dict[str, Any]
    session_id: str
    node_id: str


class CognitionData(msgspec.Struct, kw_only=True):
    """The ``cognition_data`` object, keys in the order of api.md §2.2.10."""

    predictions: PredictionList
    emotives: dict[str, float]
    symbols: list[str]
    command: str = ""
    metadata: dict[str, Any] = {}
    path: list[Any] = []
    strings: list[str] = []
    vectors: list[Any] = []
    short_term_memory: list[list[str]]
    time: int


class CognitionDataResponse(msgspec.Struct):
    """``GET /sessions/{id}/cognition-data``."""

    cognition_data: CognitionData
    session_id: str
    node_id: str
