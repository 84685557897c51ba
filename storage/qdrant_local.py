"""Embedded vector store: qdrant-client in local mode (no Qdrant server).

Layout as api.md §4.5: one collection ``vectors_{kb_id}`` per knowledge base,
Euclidean distance, created lazily by the first upsert with that vector's length
as its dimension; point id ``uuid5(NAMESPACE_DNS, name)``, payload
``{"vctr_name": name}``. A vector of another length is never an error: search
returns no neighbours and upsert skips it with a structured warning and a count
(§4.5.4); an empty vector is never indexed. Local mode persists under
``<data_dir>/qdrant`` and ignores HNSW/optimizer settings (it searches exactly),
so none are sent. The directory is locked by one client: one process per data dir.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import numpy
from qdrant_client import QdrantClient, models

from storage.base import BackendHealth, StoreUnavailable

__all__ = ["LocalQdrantStore", "LocalQdrantIndex", "point_id"]

log = logging.getLogger("kato.storage.qdrant")


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
        self._load_dimension()

    def _load_dimension(self) -> None:
        client = self._store.client
        with self._store.lock:
            if client.collection_exists(self.collection):
                self.dimension = client.get_collection(self.collection).config.params.vectors.size

    def search(self, vector: numpy.ndarray, k: int) -> list[str]:
        """Names of up to ``k`` nearest stored vectors; [] on dimension mismatch."""
        if self.dimension is None or vector.ndim != 1 or vector.shape[0] != self.dimension:
            return []
        with self._store.lock:
            hits = self._store.client.query_points(
                self.collection, query=[float(x) for x in vector], limit=k, with_payload=True).points
        return [hit.payload["vctr_name"] for hit in hits]

    def upsert(self, items: list[tuple[str, list[float]]]) -> None:
        """Index ``(name, vector)`` pairs; other dimensions and empty vectors are skipped."""
        points = []
        for name, vec in items:
            if not vec:
                continue
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
            with self._store.lock:
                self._store.client.upsert(self.collection, points=points, wait=True)

    def _create(self, size: int) -> None:
        with self._store.lock:
            if not self._store.client.collection_exists(self.collection):
                self._store.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=size, distance=models.Distance.EUCLID))
        self.dimension = size

    def clear(self) -> None:
        """Delete the collection; the next vector fixes a new dimension."""
        with self._store.lock:
            if self._store.client.collection_exists(self.collection):
                self._store.client.delete_collection(self.collection)
        self.dimension = None


class LocalQdrantStore:
    """One local-mode client for every knowledge base of the process."""

    backend = "qdrant_local"

    def __init__(self, path: str | Path | None) -> None:
        self.lock = threading.RLock()
        self.unindexed_count = 0
        self._indexes: dict[str, LocalQdrantIndex] = {}
        try:
            if path is None:
                self.client = QdrantClient(location=":memory:")
            else:
                Path(path).mkdir(parents=True, exist_ok=True)
                self.client = QdrantClient(path=str(path))
        except Exception as exc:  # noqa: BLE001 - e.g. the folder is locked by another process
            raise StoreUnavailable(self.backend, str(exc)) from exc

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
        out: list[tuple[str, list[float]]] = []
        offset = None
        with self.lock:
            if not self.client.collection_exists(collection):
                return out
            while True:
                hits, offset = self.client.scroll(collection, limit=1024, offset=offset,
                                                  with_payload=True, with_vectors=True)
                out.extend((hit.payload["vctr_name"], [float(x) for x in hit.vector]) for hit in hits)
                if offset is None:
                    return out

    def unindexed(self) -> int:
        """Vectors skipped because of a dimension mismatch since start."""
        return self.unindexed_count

    async def ping(self) -> BackendHealth:
        """List collections; reports the error text instead of raising."""
        start = time.perf_counter()
        try:
            with self.lock:
                self.client.get_collections()
        except Exception as exc:  # noqa: BLE001 - health must describe, not raise
            return BackendHealth(ok=False, latency_ms=_ms(start), error=str(exc))
        return BackendHealth(ok=True, latency_ms=_ms(start))

    async def close(self) -> None:
        """Close the client (releases the folder lock)."""
        with self.lock:
            self.client.close()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
