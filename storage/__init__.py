"""Stores behind the KATO service: sessions, learned patterns, vectors.

:func:`open_stores` picks the implementations from the settings. The embedded
default needs no server: sessions in process memory, patterns in SQLite (durable),
vectors in qdrant-client's local mode. Other backends implement the same
Protocols of :mod:`storage.base`.
"""

from storage.base import (
    PatternStore,
    SessionBusy,
    SessionStore,
    StoreUnavailable,
    Stores,
    VectorStore,
)
from storage.records import SessionRecord
from storage.factory import open_stores

__all__ = [
    "PatternStore",
    "SessionBusy",
    "SessionRecord",
    "SessionStore",
    "StoreUnavailable",
    "Stores",
    "VectorStore",
    "open_stores",
]
