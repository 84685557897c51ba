"""Pattern and symbol bodies (api.md §2.3, §2.4)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "PatternBody",
    "PatternFound",
    "PatternMissing",
    "PatternResponse",
    "AffinityAll",
    "AffinityOne",
    "SymbolStat",
    "SymbolStats",
    "DeprecatedPercept",
    "DeprecatedCognition",
]


class PatternBody(msgspec.Struct, kw_only=True):
    """A learned pattern with its counters, emotive window and metadata."""

    name: str
    pattern_data: list[list[str]]
    length: int
    frequency: int
    emotives: list[dict[str, float]]
    metadata: dict[str, list[str]]


class PatternFound(msgspec.Struct, tag_field="status", tag="okay"):
    """Inner wrapper of a found pattern (``status: "okay"``)."""

    pattern: PatternBody


class PatternMissing(msgspec.Struct, tag_field="status", tag="error"):
    """Inner wrapper of an unknown pattern (``status: "error"``; still HTTP 200, as the reference)."""

    message: str


class PatternResponse(msgspec.Struct):
    """``GET /pattern/{id}``; ``node_id`` is the kb_id."""

    pattern: PatternFound | PatternMissing
    node_id: str


class AffinityAll(msgspec.Struct):
    """``GET /symbols/affinity``."""

    affinities: dict[str, dict[str, float]]
    node_id: str


class AffinityOne(msgspec.Struct):
    """``GET /symbols/{symbol}/affinity``; ``{}`` for an unknown symbol."""

    symbol: str
    affinity: dict[str, float]
    node_id: str


class SymbolStat(msgspec.Struct):
    """Frequency and pattern membership of one symbol."""

    name: str
    frequency: int
    pattern_member_frequency: int


class SymbolStats(msgspec.Struct):
    """``GET /symbols/stats``."""

    symbols: dict[str, SymbolStat]
    node_id: str


class DeprecatedPercept(msgspec.Struct):
    """``GET /percept-data`` (deprecated stub)."""

    percept_data: dict[str, Any]
    node_id: str
    warning: str


class DeprecatedCognition(msgspec.Struct):
    """``GET /cognition-data`` (deprecated stub)."""

    cognition_data: dict[str, Any]
    node_id: str
    warning: str
