"""Prediction bodies (engine.md §3.13, api.md §2.2.7)."""

from __future__ import annotations

import msgspec

from engine import FuturePotential
from web.schemas.types import PredictionList

__all__ = ["PredictionsResponse"]


class PredictionsResponse(msgspec.Struct, kw_only=True):
    """``GET /sessions/{id}/predictions``: computed now for the session's STM."""

    predictions: PredictionList
    future_potentials: list[FuturePotential]
    session_id: str
    processor_id: None
    count: int
    time: None
    unique_id: None
