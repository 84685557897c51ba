"""Qdrant vector store for server deployments (api.md §4.5), shared by many processes.

One collection ``vectors_{kb_id}`` per knowledge base, Euclidean distance, created
by the first vector indexed (its length fixes the dimension) with the HNSW and
optimizer settings of §4.5.1; point id ``uuid5(NAMESPACE_DNS, name)``, payload
``{"vctr_name": name}``; upserts wait for Qdrant's acknowledgement. The
vector-symbol behaviour of engine.md §1.3 is unchanged: the engine sees the same
synchronous ``VectorIndex`` as with the embedded store.

Several processes share a collection, so the dimension is never trusted from a
cache alone: an index that knows no collection looks again before searching or
creating (another process may have created it), and a collection that vanished
(another process's clear-all) is forgotten and recreated on the next upsert.
Errors reaching Qdrant become ``StoreUnavailable("qdrant")`` (503).

With ``path`` instead of a host, qdrant-client's local mode is used (one process
per folder, HNSW settings not applicable): the test suite runs this class that way.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from storage.base import BackendHealth, StoreUnavailable
from storage.qdrant_local import point_id

__all__ = ["QdrantStore", "QdrantIndex"]

log = logging.getLogger("kato.storage.qdrant")

_RECHECK_SECONDS = 1.0  # how long "no collection" is believed before asking Qdrant again

_HNSW = models.HnswConfigDiff(m=16, ef_construct=128, full_scan_threshold=10000)
_OPTIMIZERS = models.OptimizersConfigDiff(
    deleted_threshold=0.2, vacuum_min_vector_number=1000, default_segment_number=4, max_segment_size=500000,
    memmap_threshold=20000, indexing_threshold=10000, flush_interval_sec=5)


def _missing(exc: Exception) -> bool:
    return isinstance(exc, UnexpectedResponse) and exc.status_code == 404 or "not found" in str(exc).lower()


class QdrantIndex:
    """The engine's ``VectorIndex`` over ``vectors_{kb_id}``."""

    def __init__(self, store: "QdrantStore", kb_id: str) -> None:
        self._store = store
        self.kb_id = kb_id
        self.collection = f"vectors_{kb_id}"
        self.dimension: int | None = None
        self._checked = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.dimension is not None or now - self._checked < _RECHECK_SECONDS:
            return
        self._checked = now
        client = self._store.client
        if self._store.call(lambda: client.collection_exists(self.collection)):
            info = self._store.call(lambda: client.get_collection(self.collection))
            self.dimension = info.config.params.vectors.size

    def forget(self) -> None:
        """Drop the cached dimension (another process cleared the knowledge base)."""
        self.dimension = None
        self._checked = 0.0

    def search(self, vector: numpy.ndarray, k: int) -> list[str]:
        """Names of up to ``k`` nearest vectors; [] without a collection or on dimension mismatch."""
        self._refresh()
        if self.dimension is None or vector.ndim != 1 or vector.shape[0] != self.dimension:
            return []
        query = [float(x) for x in vector]
        try:
            hits = self._store.call(lambda: self._store.client.query_points(
                self.collection, query=query, limit=k, with_payload=True).points, passthrough_missing=True)
        except _Missing:
            self.forget()
            return []
        return [hit.payload["vctr_name"] for hit in hits]

    def upsert(self, items: list[tuple[str, list[float]]]) -> None:
        """Index ``(name, vector)`` pairs; other dimensions and empty vectors are skipped (§4.5.4)."""
        points = []
        for name, vec in items:
            if not vec:
                continue
            if self.dimension is None:
                self._checked = 0.0
                self._refresh()
                if self.dimension is None:
                    self._create(len(vec))
            if len(vec) != self.dimension:
                self._store.unindexed_count += 1
                log.warning("vector not indexed: dimension mismatch", extra={
                    "kb_id": self.kb_id, "expected_dimension": self.dimension,
                    "actual_dimension": len(vec), "vector_name": name})
                continue
            points.append(models.PointStruct(id=point_id(name), vector=list(vec), payload={"vctr_name": name}))
        if not points:
            return
        try:
            self._store.call(lambda: self._store.client.upsert(self.collection, points=points, wait=True),
                             passthrough_missing=True)
        except _Missing:   # cleared by another process meanwhile: recreate and index again
            self.forget()
            self.upsert(items)

    def _create(self, size: int) -> None:
        client = self._store.client
        extra: dict[str, Any] = {} if self._store.local else {
            "hnsw_config": _HNSW, "optimizers_config": _OPTIMIZERS, "on_disk_payload": True}
        try:
            self._store.call(lambda: client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=size, distance=models.Distance.EUCLID),
                **extra))
            self.dimension = size
        except StoreUnavailable:
            # Another process may have created it first: take its dimension.
            self._checked = 0.0
            self._refresh()
            if self.dimension is None:
                raise

    def clear(self) -> None:
        """Delete the collection; the next vector fixes a new dimension."""
        client = self._store.client
        if self._store.call(lambda: client.collection_exists(self.collection)):
            self._store.call(lambda: client.delete_collection(self.collection))
        self.forget()


class _Missing(Exception):
    pass


class QdrantStore:
    """VectorStore over a Qdrant server (``host``) or qdrant-client local mode (``path``)."""

    backend = "qdrant"

    def __init__(self, host: str | None = None, port: int = 6333, api_key: str | None = None,
                 https: bool = False, path: str | Path | None = None, timeout: float = 10.0) -> None:
        self.local = host is None
        self.unindexed_count = 0
        self._indexes: dict[str, QdrantIndex] = {}
        self._lock = threading.RLock()
        try:
            if self.local:
                if path is None:
                    self.client = QdrantClient(location=":memory:")
                else:
                    Path(path).mkdir(parents=True, exist_ok=True)
                    self.client = QdrantClient(path=str(path))
            else:
                # No version check: it is a request at construction, which would hold up the
                # service's start (and warn) while Qdrant is unreachable; calls report that.
                self.client = QdrantClient(host=host, port=port, api_key=api_key, https=https,
                                           timeout=int(timeout), prefer_grpc=False, check_compatibility=False)
        except Exception as exc:  # noqa: BLE001 - e.g. the local folder is locked by another process
            raise StoreUnavailable(self.backend, str(exc)) from exc

    def call(self, fn: Any, passthrough_missing: bool = False) -> Any:
        """``fn()`` with client errors raised as StoreUnavailable("qdrant").

        Local mode is not thread-safe, so its calls are serialised.
        """
        try:
            if self.local:
                with self._lock:
                    return fn()
            return fn()
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - connection, timeout, HTTP errors
            if passthrough_missing and _missing(exc):
                raise _Missing() from exc
            raise StoreUnavailable(self.backend, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    def index(self, kb_id: str) -> QdrantIndex:
        """The index of ``kb_id`` (one object per knowledge base)."""
        idx = self._indexes.get(kb_id)
        if idx is None:
            idx = self._indexes[kb_id] = QdrantIndex(self, kb_id)
        return idx

    async def drop(self, kb_id: str) -> None:
        """Delete the collection of ``kb_id``."""
        self.index(kb_id).clear()

    async def points(self, kb_id: str) -> list[tuple[str, list[float]]]:
        """Every ``(name, vector)`` of ``kb_id`` (backup export)."""
        collection = self.index(kb_id).collection
        out: list[tuple[str, list[float]]] = []
        if not self.call(lambda: self.client.collection_exists(collection)):
            return out
        offset = None
        while True:
            hits, offset = self.call(lambda: self.client.scroll(collection, limit=1024, offset=offset,
                                                                with_payload=True, with_vectors=True))
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
            self.call(self.client.get_collections)
        except StoreUnavailable as exc:
            return BackendHealth(ok=False, latency_ms=_ms(start), error=exc.reason)
        return BackendHealth(ok=True, latency_ms=_ms(start))

    async def close(self) -> None:
        """Close the client."""
        self.call(self.client.close)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
