"""Stub of the compiled engine.predict extension (engine/predict.pyx)."""

from typing_extensions import Self, disjoint_base

from engine.config import EngineConfig
from engine.patterns import PatternIndex
from engine.results import FuturePotential, Prediction, PredictionSet, SingleSymbolPrediction

RANK_KEY_INDEX: dict[str, int]

@disjoint_base
class _Scorer:
    """State of one prediction request (internal)."""

    def __new__(cls, index: PatternIndex, stm: list[list[str]], config: EngineConfig) -> Self: ...
    def ensemble(self) -> tuple[list[int], list[list[str]], list[FuturePotential]]: ...
    def rank(self, kept: list[int], key: str) -> list[int]: ...
    def build(self, ranked: list[int], kept: list[int], match_lists: list[list[str]]) -> list[Prediction]: ...
    def single(self) -> list[SingleSymbolPrediction]: ...

def weighted_metrics(
    index: PatternIndex,
    emotive: str,
    matches: list[str],
    state: list[str],
    pattern_flat: list[str],
    present_flat: list[str],
    extras_flat: list[str],
) -> tuple[float, float, float, float]:
    """(weighted_similarity, weighted_evidence, weighted_confidence, weighted_snr), §3.11."""
def predict(index: PatternIndex, stm: list[list[str]], config: EngineConfig) -> PredictionSet:
    """Ranked predictions for ``stm`` under ``config`` (engine.md §3)."""
