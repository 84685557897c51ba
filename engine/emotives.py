"""Emotive averaging and metadata accumulation (engine.md §1.5, §2.2, §2.3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["average_emotives", "accumulate_metadata", "merge_metadata"]


def average_emotives(records: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per emotive key, the mean of its values over the dicts that carry it.

    Keys appear in first-seen order; each mean is a left-fold sum divided by the
    number of values. An empty input gives ``{}``.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for key, value in record.items():
            if key in sums:
                sums[key] = sums[key] + value
                counts[key] += 1
            else:
                sums[key] = value
                counts[key] = 1
    return {key: float(total / counts[key]) for key, total in sums.items()}


def accumulate_metadata(records: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per key, the sorted set of ``str(value)`` over every dict (engine.md §2.3)."""
    seen: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.items():
            seen.setdefault(key, set()).add(str(value))
    return {key: sorted(values) for key, values in seen.items()}


def merge_metadata(stored: Mapping[str, list[str]], new: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Key-wise union of two accumulated metadata maps, each value list sorted."""
    out = {key: set(values) for key, values in stored.items()}
    for key, values in new.items():
        out.setdefault(key, set()).update(values)
    return {key: sorted(values) for key, values in out.items()}
