"""Shared field types of the response bodies."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["PredictionList"]

# The engine's Prediction and SingleSymbolPrediction Structs are encoded as they are
# (no conversion in the hot path). They are not a tagged union, which msgspec's
# schema generation requires, so the OpenAPI schema describes the items in words.
PredictionList = Annotated[
    list[Any],
    msgspec.Meta(description="Ranked prediction objects (engine.md §3.6); when the STM holds exactly one "
                             "symbol, the single-symbol shape of engine.md §3.9 with flat past/present/future."),
]
