"""Result Structs returned by the engine (engine.md §3.6, §3.9, §3.7).

Field order follows the spec tables. Predictions are read-only views: nested lists
may share storage with each other (``sequence`` and ``past``/``present``/``future``
hold the same event lists).
"""

from __future__ import annotations

import msgspec

__all__ = ["Prediction", "SingleSymbolPrediction", "FuturePotential", "Anomaly", "PredictionSet"]


class Anomaly(msgspec.Struct):
    """A fuzzy token match that differs from the pattern token (engine.md §3.10)."""

    observed: str
    expected: str
    similarity: float


class Prediction(msgspec.Struct):
    """One prediction of the general path (STM of two or more symbols)."""

    type: str
    name: str
    frequency: int
    matches: list[str]
    past: list[list[str]]
    present: list[list[str]]
    future: list[list[str]]
    missing: list[list[str]]
    extras: list[list[str]]
    anomalies: list[Anomaly]
    sequence: list[list[str]]
    similarity: float
    evidence: float
    confidence: float
    snr: float
    fragmentation: float
    emotives: dict[str, float]
    entropy: float
    normalized_entropy: float
    global_normalized_entropy: float
    itfdf_similarity: float
    confluence: float
    tfidf_score: float
    pattern_probability: float
    weighted_strength: float
    predictive_information: float
    bayesian_prior: float
    bayesian_likelihood: float
    bayesian_posterior: float
    potential: float
    weighted_similarity: float | None
    weighted_evidence: float | None
    weighted_confidence: float | None
    weighted_snr: float | None


class SingleSymbolPrediction(msgspec.Struct):
    """One prediction of the single-symbol path (STM of exactly one symbol, §3.9)."""

    name: str
    pattern_data: list[list[str]]
    length: int
    frequency: int
    emotives: dict[str, float]
    matches: list[str]
    missing: list[str]
    present: list[str]
    past: list[str]
    future: list[str]
    extras: list[str]
    similarity: float
    evidence: float
    confidence: float
    snr: float
    fragmentation: int
    anomalies: list[Anomaly]
    potential: float
    weighted_similarity: float | None
    weighted_evidence: float | None
    weighted_confidence: float | None
    weighted_snr: float | None


class FuturePotential(msgspec.Struct):
    """Aggregate over the predictions that share one future (engine.md §3.7)."""

    future: list[list[str]]
    aggregate_potential: float
    supporting_patterns: int
    total_weighted_frequency: float


class PredictionSet(msgspec.Struct):
    """Ranked predictions for one STM and the future potentials of its candidates."""

    predictions: list[Prediction | SingleSymbolPrediction]
    future_potentials: list[FuturePotential]
