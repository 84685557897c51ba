"""Engine configuration: one frozen Struct, one validator (engine.md §4, api.md §3.2).

:class:`EngineConfig` holds the effective value of every parameter. Sessions keep
*overrides* only; :func:`validate_overrides` checks a map of overrides as a whole
and :meth:`EngineConfig.merged` applies them. Every rule about which values are
valid lives here, so the web layer and the engine cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = [
    "EngineConfig",
    "RANK_SORT_KEYS",
    "FILTER_STAGES",
    "INDEXER_TYPES",
    "STM_MODES",
    "PARAMETER_ORDER",
    "validate_overrides",
]

RANK_SORT_KEYS: tuple[str, ...] = (
    "potential", "similarity", "evidence", "confidence", "snr", "fragmentation",
    "frequency", "normalized_entropy", "global_normalized_entropy", "itfdf_similarity",
    "confluence", "predictive_information", "bayesian_posterior", "bayesian_prior",
    "bayesian_likelihood", "tfidf_score", "weighted_similarity", "weighted_evidence",
    "weighted_confidence", "weighted_snr",
)
FILTER_STAGES: tuple[str, ...] = ("minhash", "length", "jaccard", "bloom", "rapidfuzz")
INDEXER_TYPES: tuple[str, ...] = ("VI", "LSH", "ANNOY", "FAISS")
STM_MODES: tuple[str, ...] = ("CLEAR", "ROLLING")

# api.md §3.2.1: the order in which the effective configuration is reported.
PARAMETER_ORDER: tuple[str, ...] = (
    "max_pattern_length", "persistence", "recall_threshold", "indexer_type",
    "max_predictions", "sort_symbols", "process_predictions", "use_token_matching",
    "fuzzy_token_threshold", "stm_mode", "rank_sort_algo", "affinity_emotive",
    "filter_pipeline", "length_min_ratio", "length_max_ratio", "jaccard_threshold",
    "jaccard_min_overlap", "minhash_threshold", "minhash_bands", "minhash_rows",
    "minhash_num_hashes", "bloom_false_positive_rate", "max_candidates_per_stage",
    "enable_filter_metrics",
)


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Effective engine settings; defaults are those of engine.md §4."""

    max_pattern_length: int = 0
    persistence: int = 5
    recall_threshold: float = 0.1
    indexer_type: str = "VI"
    max_predictions: int = 100
    sort_symbols: bool = True
    process_predictions: bool = True
    use_token_matching: bool = True
    fuzzy_token_threshold: float = 0.0
    stm_mode: str = "CLEAR"
    rank_sort_algo: str = "potential"
    affinity_emotive: str | None = None
    filter_pipeline: tuple[str, ...] = ()
    length_min_ratio: float = 0.5
    length_max_ratio: float = 2.0
    jaccard_threshold: float = 0.3
    jaccard_min_overlap: int = 2
    minhash_threshold: float = 0.7
    minhash_bands: int = 20
    minhash_rows: int = 5
    minhash_num_hashes: int = 100
    bloom_false_positive_rate: float = 0.01
    max_candidates_per_stage: int = 100000
    enable_filter_metrics: bool = True

    def merged(self, overrides: Mapping[str, Any] | None) -> "EngineConfig":
        """Return a copy with ``overrides`` applied after validating them as a whole.

        Raises :class:`~engine.errors.InvalidConfiguration` naming every bad key.
        """
        if not overrides:
            return self
        clean = validate_overrides(overrides)
        values = {k: v for k, v in clean.items() if v is not None}
        if "filter_pipeline" in values:
            values["filter_pipeline"] = tuple(values["filter_pipeline"])
        return msgspec.structs.replace(self, **values)

    def validated(self) -> "EngineConfig":
        """Return ``self`` after checking every field; raises InvalidConfiguration."""
        validate_overrides(self.as_dict())
        return self

    def as_dict(self) -> dict[str, Any]:
        """Every parameter in the api.md §3.2.1 order (filter_pipeline as a list)."""
        out = {name: getattr(self, name) for name in PARAMETER_ORDER}
        out["filter_pipeline"] = list(self.filter_pipeline)
        return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def _int_range(lo: int | None, hi: int | None):
    def check(v: Any) -> str | None:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            if hi is None:
                return f"Must be an integer >= {lo}"
            return f"Must be an integer between {lo} and {hi}"
        return None
    return check


def _number_range(lo: float, hi: float | None):
    def check(v: Any) -> str | None:
        if not _is_number(v) or v < lo or (hi is not None and v > hi):
            if hi is None:
                return f"Must be a number >= {lo}"
            return f"Must be a number between {lo} and {hi}"
        return None
    return check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "Must be a boolean (true/false)"


def _one_of(choices: tuple[str, ...]):
    def check(v: Any) -> str | None:
        return None if v in choices and isinstance(v, str) else f"Must be one of: {', '.join(choices)}"
    return check


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else "Must be a string"


def _pipeline(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s in FILTER_STAGES for s in v):
        return f"Must be a list of: {', '.join(FILTER_STAGES)}"
    return None


_CHECKS = {
    "max_pattern_length": _int_range(0, None),
    "persistence": _int_range(1, 100),
    "recall_threshold": _number_range(0.0, 1.0),
    "indexer_type": _one_of(INDEXER_TYPES),
    "max_predictions": _int_range(1, 10000),
    "sort_symbols": _boolean,
    "process_predictions": _boolean,
    "use_token_matching": _boolean,
    "fuzzy_token_threshold": _number_range(0.0, 1.0),
    "stm_mode": _string,
    "rank_sort_algo": _one_of(RANK_SORT_KEYS),
    "affinity_emotive": _string,
    "filter_pipeline": _pipeline,
    "length_min_ratio": _number_range(0.0, 1.0),
    "length_max_ratio": _number_range(1.0, None),
    "jaccard_threshold": _number_range(0.0, 1.0),
    "jaccard_min_overlap": _int_range(1, None),
    "minhash_threshold": _number_range(0.0, 1.0),
    "minhash_bands": _int_range(1, 100),
    "minhash_rows": _int_range(1, 20),
    "minhash_num_hashes": _int_range(10, 256),
    "bloom_false_positive_rate": _number_range(0.0001, 0.1),
    "max_candidates_per_stage": _int_range(100, None),
    "enable_filter_metrics": _boolean,
}


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a map of configuration overrides as a whole (api.md §3.2.2).

    Returns the accepted overrides: unknown keys (and ``sort``) dropped, any string
    ``stm_mode`` other than ``ROLLING`` stored as ``CLEAR``, ``None`` kept (it means
    "remove this override"). Raises :class:`InvalidConfiguration` listing every key
    whose value is outside its documented type or range; nothing is applied then.
    """
    from engine.errors import InvalidConfiguration

    accepted: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in overrides.items():
        check = _CHECKS.get(key)
        if check is None:
            continue
        if value is None:
            accepted[key] = None
            continue
        problem = check(value)
        if problem is not None:
            errors[key] = problem
            continue
        if key == "stm_mode" and value not in STM_MODES:
            value = "CLEAR"
        if key == "filter_pipeline":
            value = list(value)
        accepted[key] = value
    if errors:
        raise InvalidConfiguration(errors)
    return accepted
