"""Embedded vector store: qdrant-client in local mode (no Qdrant server).

Layout as api.md §4.5: one collection ``vectors_{kb_id}`` per knowledge base,
Euclidean distance, created lazily by the first upsert with that vector's length
as its dimension; point id ``uuid5(NAMESPACE_DNS, name)``, payload
``{"vctr_name": name}``. A vector of another length is never an error: search
returns no neighbours and upsert skips it with a structured warning and a count
(§4.5.4); an empty vector is never indexed. Local mode persists under
``<data_dir>/qdrant`` and ignores HNSW/optimizer settings (it searches exactly),
so none are sent. The directory is locked by one client: one process per data dir.

Failures: every client error becomes ``StoreUnavailable("qdrant_local")`` (503
naming it; /health reports the store down, "degraded": strings keep working, as
api.md §2.5.2 chooses). A client that reports itself closed is dropped and the
next call opens the folder again, so the service recovers on its own once the
folder can be opened (e.g. another process that held its lock let go). An index
learns its collection's dimension on first use, so a knowledge base of strings
loads and learns while the vector store is down.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy
from qdrant_client import QdrantClient, models

from storage.base import BackendHealth, StoreUnavailable

__all__ = ["LocalQdrantStore", "LocalQdrantIndex", "point_id"]

log = logging.getLogger("kato.storage.qdrant")

T = TypeVar("T")


def point_id(name: str) -> str:
    """The Qdrant point id of a vector symbol (api.md §4.5.2)."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


class LocalQdrantIndex:
    """The engine's ``VectorIndex`` over one collection of the local client."""

    def __init__(self, store: "LocalQdrantStore", kb_id: str) -> None:
        self._store = store
        self.kb_id = kb_id
        self.collection = f"vectors_{kb_id}"
        self.dimension: int | None = None
        self._loaded = False

    def _load_dimension(self) -> None:
        if self._loaded:
            return

        def read(client: QdrantClient) -> int | None:
            if client.collection_exists(self.collection):
                return client.get_collection(self.collection).config.params.vectors.size
            return None

        self.dimension = self._store.call(read)
        self._loaded = True

    def search(self, vector: numpy.ndarray, k: int) -> list[str]:
        """Names of up to ``k`` nearest stored vectors; [] on dimension mismatch."""
        self._load_dimension()
        if self.dimension is None or vector.ndim != 1 or vector.shape[0] != self.dimension:
            return []
        query = [float(x) for x in vector]
        hits = self._store.call(lambda client: client.query_points(
            self.collection, query=query, limit=k, with_payload=True).points)
        return [hit.payload["vctr_name"] for hit in hits]

    def upsert(self, items: list[tuple[str, list[float]]]) -> None:
        """Index ``(name, vector)`` pairs; other dimensions and empty vectors are skipped."""
        points = []
        for name, vec in items:
            if not vec:
                continue
            self._load_dimension()
            if self.dimension is None:
                self._create(len(vec))
            if len(vec) != self.dimension:
                self._store.unindexed_count += 1
                log.warning("vector not indexed: dimension mismatch", extra={
                    "kb_id": self.kb_id, "expected_dimension": self.dimension,
                    "actual_dimension": len(vec), "vector_name": name})
                continue
            points.append(models.PointStruct(id=point_id(name), vector=list(vec), payload={"vctr_name": name}))
        if points:
            self._store.call(lambda client: client.upsert(self.collection, points=points, wait=True))

    def _create(self, size: int) -> None:
        def create(client: QdrantClient) -> None:
            if not client.collection_exists(self.collection):
                client.create_collection(
                    self.collection, vectors_config=models.VectorParams(size=size, distance=models.Distance.EUCLID))

        self._store.call(create)
        self.dimension = size

    def clear(self) -> None:
        """Delete the collection; the next vector fixes a new dimension."""
        def drop(client: QdrantClient) -> None:
            if client.collection_exists(self.collection):
                client.delete_collection(self.collection)

        self._store.call(drop)
        self.dimension = None
        self._loaded = True


class LocalQdrantStore:
    """One local-mode client for every knowledge base of the process."""

    backend = "qdrant_local"

    def __init__(self, path: str | Path | None) -> None:
        self.lock = threading.RLock()
        self.unindexed_count = 0
        self._indexes: dict[str, LocalQdrantIndex] = {}
        self._path = None if path is None else Path(path)
        self._closed = False
        self.client: QdrantClient | None = None
        self._open()

    def _open(self) -> QdrantClient:
        reason = None
        # qdrant-client leaves its lock file open when the folder is taken: the file is
        # closed as the failed client is freed (here), so its ResourceWarning says nothing.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                if self._path is None:
                    self.client = QdrantClient(location=":memory:")
                else:
                    self._path.mkdir(parents=True, exist_ok=True)
                    self.client = QdrantClient(path=str(self._path))
            except Exception as exc:  # noqa: BLE001 - e.g. the folder is locked by another process
                reason = _first_line(exc)
            if reason is not None:
                gc.collect()
        if reason is not None:
            raise StoreUnavailable(self.backend, reason)
        return self.client

    def call(self, fn: Callable[[QdrantClient], T]) -> T:
        """``fn(client)`` under the store's lock (local mode is not thread-safe).

        Any client error is StoreUnavailable; a client found closed is reopened by a
        later call (not for ``:memory:``, whose content a new client would not have).
        """
        with self.lock:
            if self._closed:
                raise StoreUnavailable(self.backend, "the vector store is closed")
            client = self.client
            if client is None:
                client = self._open()
            try:
                return fn(client)
            except Exception as exc:  # noqa: BLE001 - local mode raises plain RuntimeError/ValueError
                if self._path is not None and "closed" in str(exc).lower():
                    self.client = None
                raise StoreUnavailable(self.backend, _first_line(exc)) from exc

    def index(self, kb_id: str) -> LocalQdrantIndex:
        """The index of ``kb_id`` (one object per knowledge base)."""
        idx = self._indexes.get(kb_id)
        if idx is None:
            idx = self._indexes[kb_id] = LocalQdrantIndex(self, kb_id)
        return idx

    async def drop(self, kb_id: str) -> None:
        """Delete the collection of ``kb_id``."""
        self.index(kb_id).clear()

    async def points(self, kb_id: str) -> list[tuple[str, list[float]]]:
        """Every ``(name, vector)`` of ``kb_id``, in point-id order (backup export)."""
        collection = self.index(kb_id).collection

        def read(client: QdrantClient) -> list[tuple[str, list[float]]]:
            out: list[tuple[str, list[float]]] = []
            if not client.collection_exists(collection):
                return out
            offset = None
            while True:
                hits, offset = client.scroll(collection, limit=1024, offset=offset,
                                             with_payload=True, with_vectors=True)
                out.extend((hit.payload["vctr_name"], [float(x) for x in hit.vector]) for hit in hits)
                if offset is None:
                    return out

        return self.call(read)

    def unindexed(self) -> int:
        """Vectors skipped because of a dimension mismatch since start."""
        return self.unindexed_count

    async def ping(self) -> BackendHealth:
        """List collections; reports the error text instead of raising."""
        start = time.perf_counter()
        try:
            self.call(lambda client: client.get_collections())
        except StoreUnavailable as exc:
            return BackendHealth(ok=False, latency_ms=_ms(start), error=exc.reason)
        return BackendHealth(ok=True, latency_ms=_ms(start))

    async def close(self) -> None:
        """Close the client (releases the folder lock); the store answers no call after it."""
        with self.lock:
            self._closed = True
            client, self.client = self.client, None
            if client is not None:
                client.close()


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
