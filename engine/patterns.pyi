"""Stub of the compiled engine.patterns extension (engine/patterns.pyx)."""

from typing_extensions import disjoint_base

from collections.abc import Iterator
from typing import Any

from engine.symbols import SymbolTable

@disjoint_base
class PatternIndex:
    """Every learned pattern of one knowledge base and the statistics the metrics need."""

    @property
    def symbols(self) -> SymbolTable: ...
    @property
    def total_unique_patterns(self) -> int: ...
    @property
    def total_pattern_frequencies(self) -> int: ...
    @property
    def total_symbols_in_patterns_frequencies(self) -> int: ...
    @property
    def learned_symbols(self) -> int: ...
    def __init__(self) -> None: ...
    def _reset(self) -> None: ...
    def clear(self) -> None:
        """Forget every pattern and statistic (symbol ids are kept)."""
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def learn(
        self,
        name: str,
        events: list[list[str]],
        emotives: list[dict[str, float]],
        metadata: list[dict[str, Any]],
        persistence: int,
    ) -> int:
        """Apply one learn (engine.md §2.2); returns the pattern's new frequency."""
    def add_record(
        self,
        name: str,
        events: list[list[str]],
        frequency: int,
        emotives: list[dict[str, float]],
        metadata: dict[str, list[str]],
    ) -> None:
        """Load one stored pattern (index rebuild); statistics are derived from it."""
    def set_affinity(self, affinity: dict[str, dict[str, float]]) -> None: ...
    def _add_affinity(self, counts: dict[str, int], averaged: dict[str, float]) -> None: ...
    def record(self, name: str) -> dict[str, Any] | None:
        """name, pattern_data, length, frequency, emotives, metadata of ``name``, or None."""
    def iter_names(self) -> Iterator[str]: ...
    def symbol_stats(self) -> list[tuple[str, int, int]]:
        """(symbol, symbol_frequency, pattern_member_frequency) per learned symbol."""
    def affinity_table(self) -> dict[str, dict[str, float]]: ...
    def finalize(self) -> int: ...
    def finalized_metrics(self, name: str) -> tuple[float, float, float] | None: ...
    def set_finalized(self, name: str, values: tuple[float, float, float]) -> None: ...
