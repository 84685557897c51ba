"""KATO engine: deterministic, explainable sequence learning and prediction.

The compiled core (symbol interning, pattern index, alignment, metrics, ranking)
lives in Cython extension modules; this package re-exports the public API.
"""

from engine.config import EngineConfig, validate_overrides
from engine.errors import (
    EmptyShortTermMemory,
    EngineError,
    InvalidConfiguration,
    InvalidObservation,
    UnknownPattern,
    VectorSumError,
)
from engine.knowledge import PATTERN_PREFIX, KnowledgeBase, PatternRecord
from engine.results import Anomaly, FuturePotential, Prediction, PredictionSet, SingleSymbolPrediction
from engine.session import LearnedPattern, Observation, ObserveResult, PendingVector, SessionState
from engine.vectors import ExactVectorIndex, VectorIndex

__all__ = [
    "Anomaly",
    "EmptyShortTermMemory",
    "EngineConfig",
    "EngineError",
    "ExactVectorIndex",
    "FuturePotential",
    "InvalidConfiguration",
    "InvalidObservation",
    "KnowledgeBase",
    "LearnedPattern",
    "Observation",
    "ObserveResult",
    "PATTERN_PREFIX",
    "PatternRecord",
    "PendingVector",
    "Prediction",
    "PredictionSet",
    "SessionState",
    "SingleSymbolPrediction",
    "UnknownPattern",
    "VectorIndex",
    "VectorSumError",
    "validate_overrides",
]
