"""Choose and open the stores named by the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from storage.base import Stores

__all__ = ["open_stores", "StorageSettings"]


class StorageSettings(Protocol):
    """What store selection reads from the service settings."""

    storage: str
    data_dir: str


def open_stores(settings: StorageSettings) -> Stores:
    """Open the stores for ``settings.storage``.

    ``embedded`` (the default): in-process sessions, SQLite patterns at
    ``<data_dir>/patterns.sqlite3``, local-mode Qdrant at ``<data_dir>/qdrant``.
    ``embedded`` with ``data_dir == ":memory:"`` keeps everything in memory (tests).
    Raises ValueError for an unknown kind (the external backends come later).
    """
    from storage.memory import MemorySessionStore
    from storage.qdrant_local import LocalQdrantStore
    from storage.sqlite import SqlitePatternStore

    if settings.storage != "embedded":
        raise ValueError(f"KATO_STORAGE={settings.storage!r} is not supported yet (use 'embedded')")
    if settings.data_dir == ":memory:":
        patterns = SqlitePatternStore(":memory:")
        vectors = LocalQdrantStore(None)
    else:
        root = Path(settings.data_dir)
        patterns = SqlitePatternStore(root / "patterns.sqlite3")
        try:
            vectors = LocalQdrantStore(root / "qdrant")
        except Exception:
            patterns._db.close()
            raise
    return Stores(sessions=MemorySessionStore(), patterns=patterns, vectors=vectors)
