"""Typed use of the compiled engine modules, checked by mypy in tests/test_typing.py.

Every call goes through a stub (engine/*.pyi); ``assert_type`` makes mypy fail if a
stub's declared type drifts. ``main()`` is also executed by the test, so the calls
written here are valid at runtime too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, assert_type

from engine import EngineConfig, KnowledgeBase, Observation, PredictionSet, SessionState
from engine.matching import char_lcs, get_matching_blocks, lcs_length
from engine.metrics import pattern_entropies, similarity
from engine.patterns import PatternIndex
from engine.predict import RANK_KEY_INDEX, predict, weighted_metrics
from engine.symbols import SymbolTable


def symbols() -> None:
    table = SymbolTable()
    sid = table.intern("a")
    assert_type(sid, int)
    assert_type(table.find("missing"), int)
    assert_type(table.symbol(sid), str)
    assert_type(len(table), int)


def kernels() -> None:
    assert_type(lcs_length(["a", "b"], ["b"]), int)
    assert_type(lcs_length("abc", (1, 2)), int)
    blocks = get_matching_blocks(["a", "b", "c"], ["b", "c"])
    assert_type(blocks, list[tuple[int, int, int]])
    assert blocks == [(1, 0, 2)]
    assert_type(char_lcs("cart", "cat"), int)
    assert_type(similarity(1, 3), float)


def index() -> PatternIndex:
    idx = PatternIndex()
    name = "5b93697e1e591a765dd0b3c91ae7b57fa44589d9"
    frequency = idx.learn(name, [["A"], ["B"], ["C"]], [{"joy": 1.0}], [{"k": "v"}], 5)
    assert_type(frequency, int)
    assert_type(idx.record(name), dict[str, Any] | None)
    assert_type(idx.iter_names(), Iterator[str])
    assert_type(idx.symbol_stats(), list[tuple[str, int, int]])
    assert_type(idx.finalize(), int)
    assert_type(idx.finalized_metrics(name), tuple[float, float, float] | None)
    assert_type(pattern_entropies(idx, 0), tuple[float, float, float])
    assert_type(idx.total_unique_patterns, int)
    assert_type(idx.symbols, SymbolTable)
    assert name in idx
    return idx


def predictions(idx: PatternIndex) -> None:
    result = predict(idx, [["A"], ["B"]], EngineConfig())
    assert_type(result, PredictionSet)
    assert_type(RANK_KEY_INDEX["potential"], int)
    weights = weighted_metrics(idx, "joy", ["A"], ["A", "B"], ["A", "B", "C"], ["A", "B"], [])
    assert_type(weights, tuple[float, float, float, float])


def public_api() -> None:
    kb = KnowledgeBase("typing")
    session = SessionState()
    kb.observe(session, Observation(strings=["A"]), EngineConfig())
    kb.observe(session, Observation(strings=["B"]), EngineConfig())
    name, _ = kb.learn(session, EngineConfig())
    assert_type(name, str)
    assert_type(kb.index, PatternIndex)
    assert_type(kb.predict([["A"], ["B"]], EngineConfig()), PredictionSet)


def main() -> None:
    symbols()
    kernels()
    predictions(index())
    public_api()


if __name__ == "__main__":
    main()
