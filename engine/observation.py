"""Observation -> event (engine.md §1.2–§1.3) and pattern naming (§2.1)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy

from engine.errors import InvalidObservation, VectorSumError
from engine.session import Observation

__all__ = ["validate_observation", "sum_vectors", "vector_name", "make_event", "pattern_hash"]


def validate_observation(obs: Observation) -> None:
    """Check field types and finiteness; raise InvalidObservation naming the field.

    Non-finite numbers (NaN, ±inf) are refused in vectors and emotives: they cannot
    be written as JSON and would poison every average they enter.
    """
    if not isinstance(obs.strings, list) or not all(isinstance(s, str) for s in obs.strings):
        raise InvalidObservation("strings", "must be a list of strings")
    if not isinstance(obs.vectors, list):
        raise InvalidObservation("vectors", "must be a list of lists of numbers")
    for i, vec in enumerate(obs.vectors):
        if not isinstance(vec, list) or not all(_is_finite_number(x) for x in vec):
            raise InvalidObservation(f"vectors[{i}]", "must be a list of finite numbers")
    if not isinstance(obs.emotives, dict):
        raise InvalidObservation("emotives", "must be an object of numbers")
    for key, value in obs.emotives.items():
        if not isinstance(key, str) or not _is_finite_number(value):
            raise InvalidObservation(f"emotives.{key}", "must be a finite number")
    if not isinstance(obs.metadata, dict) or not all(isinstance(k, str) for k in obs.metadata):
        raise InvalidObservation("metadata", "must be an object with string keys")
    for key, value in obs.metadata.items():
        if not _storable(value):
            raise InvalidObservation(f"metadata.{key}", "integers must lie in [-2**63, 2**64 - 1]")


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _storable(value: Any) -> bool:
    """False when an int anywhere in a metadata value is wider than 64 bits.

    The pattern stores keep metadata as MessagePack / ClickHouse / BSON-like values,
    none of which hold wider integers; refusing them here is a 4xx instead of a
    failed learn.
    """
    if isinstance(value, int):
        return _INT_MIN <= value <= _INT_MAX
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(_storable(v) for v in value.values())
    return True


def _is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def sum_vectors(vectors: list[list[float]]) -> numpy.ndarray:
    """Element-wise sum, left to right, with numpy semantics (a length-1 vector broadcasts).

    Raises VectorSumError when the lengths cannot be broadcast.
    """
    total = numpy.array(vectors[0])
    for vec in vectors[1:]:
        arr = numpy.array(vec)
        try:
            total = total + arr
        except ValueError:
            raise VectorSumError(
                f"cannot sum vectors of lengths {total.shape[0]} and {arr.shape[0]}"
            ) from None
    return total


def vector_name(summed: numpy.ndarray) -> str:
    """``VCTR|`` + sha1 of numpy's ``str`` of the summed vector (engine.md §1.3)."""
    return "VCTR|" + hashlib.sha1(str(summed).encode("utf-8")).hexdigest()


def make_event(
    obs: Observation,
    sort_symbols: bool,
    neighbours: Callable[[numpy.ndarray], list[str]] | None,
) -> tuple[list[str], tuple[str, list[float]] | None]:
    """The event of an observation and its pending vector (name, summed vector).

    Vector symbols come first, then string symbols; each part is sorted on its own
    when ``sort_symbols``. Without sorting the vector part is the vector's own name
    followed by its nearest learned neighbours in distance order (a choice: the
    reference's order there is that of a Python set).
    """
    strings = sorted(obs.strings) if sort_symbols else list(obs.strings)
    if not obs.vectors:
        return strings, None
    summed = sum_vectors(obs.vectors)
    name = vector_name(summed)
    symbols = [name]
    if neighbours is not None:
        for other in neighbours(summed):
            if other not in symbols:
                symbols.append(other)
    if sort_symbols:
        symbols.sort()
    return symbols + strings, (name, [float(x) for x in numpy.atleast_1d(summed)])


def pattern_hash(events: list[list[str]]) -> str:
    """Bare pattern name: sha1 of Python's ``str`` of the event list (engine.md §2.1)."""
    return hashlib.sha1(str(events).encode("utf-8")).hexdigest()
