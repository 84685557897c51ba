"""The two timestamp formats of the reference (api.md §1.2)."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["iso_z", "iso_offset"]


def iso_z(epoch: float) -> str:
    """Session datetimes: ``2025-05-01T12:00:00.005000Z``; no fraction when it is zero."""
    dt = datetime.fromtimestamp(epoch, timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{dt.microsecond:06d}Z" if dt.microsecond else f"{text}Z"


def iso_offset(epoch: float) -> str:
    """String timestamps of health/status/events: ``isoformat()`` with ``+00:00``."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()
