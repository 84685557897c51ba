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
    workers: int
    session_ttl: int
    redis_url: str | None
    clickhouse_host: str
    clickhouse_port: int
    clickhouse_db: str
    clickhouse_user: str
    clickhouse_password: str
    clickhouse_secure: bool
    clickhouse_chdb_path: str | None
    qdrant_host: str | None
    qdrant_port: int
    qdrant_api_key: str | None
    qdrant_https: bool
    qdrant_path: str | None


def open_stores(settings: StorageSettings) -> Stores:
    """Open the stores for ``settings.storage``.

    ``embedded`` (the default): in-process sessions, SQLite patterns at
    ``<data_dir>/patterns.sqlite3``, local-mode Qdrant at ``<data_dir>/qdrant``.
    ``embedded`` with ``data_dir == ":memory:"`` keeps everything in memory (tests).
    ``embedded`` with ``workers > 1``: the worker processes share sessions
    (``<data_dir>/sessions.sqlite3``) and vectors (rows of the learn log), since
    process memory and local Qdrant cannot be shared.
    ``external``: sessions in Redis, patterns in ClickHouse + Redis, vectors in
    Qdrant, shared by every process on them (:func:`open_external_stores`).
    Raises ValueError for an unknown kind.
    """
    from storage.memory import MemorySessionStore
    from storage.qdrant import QdrantStore
    from storage.sqlite import SqlitePatternStore

    if settings.storage == "external":
        return open_external_stores(settings)
    if settings.storage != "embedded":
        raise ValueError(f"KATO_STORAGE={settings.storage!r} is not supported (use 'embedded' or 'external')")
    if settings.data_dir == ":memory:":
        patterns = SqlitePatternStore(":memory:")
        vectors = QdrantStore(path=None, backend="qdrant_local")
    else:
        root = Path(settings.data_dir)
        patterns = SqlitePatternStore(root / "patterns.sqlite3")
        if settings.workers > 1:
            from storage.sqlite import LoggedVectorStore
            from storage.sqlite_sessions import SqliteSessionStore

            try:
                sessions = SqliteSessionStore(root / "sessions.sqlite3")
            except Exception:
                patterns.close_now()
                raise
            return Stores(sessions=sessions, patterns=patterns, vectors=LoggedVectorStore(patterns))
        try:
            vectors = QdrantStore(path=root / "qdrant", backend="qdrant_local")
        except Exception:
            patterns.close_now()
            raise
    return Stores(sessions=MemorySessionStore(), patterns=patterns, vectors=vectors)


def open_external_stores(settings: StorageSettings) -> Stores:
    """Redis (``REDIS_URL``), ClickHouse (``CLICKHOUSE_*``) and Qdrant (``QDRANT_*``).

    Nothing connects here; the first use does (and creates the ClickHouse schema).
    Two settings of ours are for tests and single-process use only:
    ``KATO_CLICKHOUSE_CHDB_PATH`` runs the ClickHouse engine in process (chdb) at
    that path instead of over HTTP, and ``KATO_QDRANT_PATH`` uses qdrant-client's
    local mode in that folder instead of a Qdrant server.
    """
    import clickhouse_connect

    from storage.clickhouse import ClickHouseRows
    from storage.qdrant import QdrantStore
    from storage.redis import RedisConnector, RedisSessionStore
    from storage.shared import SharedPatternStore

    chdb_path = settings.clickhouse_chdb_path
    if chdb_path:
        def client():
            return clickhouse_connect.get_client(interface="chdb", path=chdb_path)
    else:
        def client():
            return clickhouse_connect.get_client(
                host=settings.clickhouse_host, port=settings.clickhouse_port, username=settings.clickhouse_user,
                password=settings.clickhouse_password, secure=settings.clickhouse_secure, compress=False,
                connect_timeout=5, send_receive_timeout=60,
                # One client serves the store's worker threads (inserts, reads, /health pings at
                # once); a client-side session would refuse concurrent queries with an error.
                autogenerate_session_id=False)

    redis = RedisConnector(settings.redis_url or "redis://localhost:6379/0")
    patterns = SharedPatternStore(ClickHouseRows(client, settings.clickhouse_db), redis, owns_redis=False)
    if settings.qdrant_path:
        vectors = QdrantStore(path=settings.qdrant_path)
    else:
        vectors = QdrantStore(host=settings.qdrant_host or "localhost", port=settings.qdrant_port,
                              api_key=settings.qdrant_api_key, https=settings.qdrant_https)
    sessions = RedisSessionStore(redis, default_ttl=settings.session_ttl, owns_connector=True)
    return Stores(sessions=sessions, patterns=patterns, vectors=vectors)
