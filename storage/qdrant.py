"""Qdrant vector store (api.md §4.5): a Qdrant server, or qdrant-client's local mode.

One collection ``vectors_{kb_id}`` per knowledge base, Euclidean distance, created
by the first vector indexed (its length fixes the dimension); point id
``uuid5(NAMESPACE_DNS, name)``, payload ``{"vctr_name": name}``; upserts wait for
the acknowledgement. A vector of another length is never an error: search returns
no neighbours and upsert skips it with a structured warning and a count (§4.5.4);
an empty vector is never indexed. The vector-symbol behaviour of engine.md §1.3 is
unchanged: the engine sees the same synchronous ``VectorIndex`` with either mode.

**Server** (``host``): collections get the HNSW and optimizer settings of §4.5.1.
Several processes share a collection, so the dimension is never trusted from a
cache alone: an index that knows no collection looks again before searching or
creating (another process may have created it), and a collection that vanished
(another process's clear-all) is forgotten and recreated on the next upsert.

**Local mode** (``path``, or ``None`` for in memory): the embedded default, and
the tests' stand-in for a server. It searches exactly (no HNSW settings are
sent), is not thread-safe (calls are serialised) and locks its folder: one
process per folder. A client found closed is dropped and the next call opens the
folder again, so the service recovers on its own once the folder can be opened
(e.g. another process that held its lock let go).

Failures: every client error becomes ``StoreUnavailable(store.backend)``, 503
naming it; /health reports the store down, "degraded" (strings keep working, as
api.md §2.5.2 chooses). An index learns its collection's dimension on first use,
so a knowledge base of strings loads and learns while the vector store is down.
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
from typing import Any, TypeVar

import numpy
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from storage.base import BackendHealth, StoreUnavailable

__all__ = ["QdrantStore", "QdrantIndex", "point_id"]

log = logging.getLogger("kato.storage.qdrant")

T = TypeVar("T")

_RECHECK_SECONDS = 1.0  # how long "no collection" is believed before asking Qdrant again

_HNSW = models.HnswConfigDiff(m=16, ef_construct=128, full_scan_threshold=10000)
_OPTIMIZERS = models.OptimizersConfigDiff(
    deleted_threshold=0.2, vacuum_min_vector_number=1000, default_segment_number=4, max_segment_size=500000,
    memmap_threshold=20000, indexing_threshold=10000, flush_interval_sec=5)


def point_id(name: str) -> str:
    """The Qdrant point id of a vector symbol (api.md §4.5.2)."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


def _missing(exc: Exception) -> bool:
    return isinstance(exc, UnexpectedResponse) and exc.status_code == 404 or "not found" in str(exc).lower()


class _Missing(Exception):
    pass


class QdrantIndex:
    """The engine's ``VectorIndex`` over ``vectors_{kb_id}``."""

    def __init__(self, store: QdrantStore, kb_id: str) -> None:
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

        def read(client: QdrantClient) -> int | None:
            if client.collection_exists(self.collection):
                return client.get_collection(self.collection).config.params.vectors.size
            return None

        self.dimension = self._store.call(read)

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
            hits = self._store.call(lambda client: client.query_points(
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
            self._store.call(lambda client: client.upsert(self.collection, points=points, wait=True),
                             passthrough_missing=True)
        except _Missing:   # cleared by another process meanwhile: recreate and index again
            self.forget()
            self.upsert(items)

    def _create(self, size: int) -> None:
        extra: dict[str, Any] = {} if self._store.local else {
            "hnsw_config": _HNSW, "optimizers_config": _OPTIMIZERS, "on_disk_payload": True}
        try:
            self._store.call(lambda client: client.create_collection(
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
        def drop(client: QdrantClient) -> None:
            if client.collection_exists(self.collection):
                client.delete_collection(self.collection)

        self._store.call(drop)
        self.forget()


class QdrantStore:
    """VectorStore over a Qdrant server (``host``) or qdrant-client local mode (``path``).

    ``backend`` is the name errors and /health use: ``qdrant`` by default, the
    embedded default calls its store ``qdrant_local``. A local folder that cannot
    be opened (locked by another process) raises StoreUnavailable here.
    """

    def __init__(self, host: str | None = None, port: int = 6333, api_key: str | None = None,
                 https: bool = False, path: str | Path | None = None, timeout: float = 10.0,
                 backend: str = "qdrant") -> None:
        self.backend = backend
        self.local = host is None
        self.unindexed_count = 0
        self._indexes: dict[str, QdrantIndex] = {}
        self._lock = threading.RLock()
        self._path = None if path is None else Path(path)
        self._closed = False
        self.client: QdrantClient | None = None
        if self.local:
            self._open_local()
        else:
            # No version check: it is a request at construction, which would hold up the
            # service's start (and warn) while Qdrant is unreachable; calls report that.
            self.client = QdrantClient(host=host, port=port, api_key=api_key, https=https,
                                       timeout=int(timeout), prefer_grpc=False, check_compatibility=False)

    def _open_local(self) -> QdrantClient:
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
        assert self.client is not None
        return self.client

    def call(self, fn: Callable[[QdrantClient], T], passthrough_missing: bool = False) -> T:
        """``fn(client)`` with client errors raised as StoreUnavailable(backend).

        Local mode is not thread-safe, so its calls are serialised; a local client
        found closed is reopened by a later call (not ``:memory:``, whose content a
        new client would not have). With ``passthrough_missing`` a missing
        collection raises ``_Missing`` instead.
        """
        if self._closed:
            raise StoreUnavailable(self.backend, "the vector store is closed")
        if not self.local:
            return self._guarded(fn, self.client, passthrough_missing)
        with self._lock:
            if self._closed:
                raise StoreUnavailable(self.backend, "the vector store is closed")
            client = self.client if self.client is not None else self._open_local()
            try:
                return self._guarded(fn, client, passthrough_missing)
            except StoreUnavailable as exc:
                if self._path is not None and "closed" in exc.reason.lower():
                    self.client = None
                raise

    def _guarded(self, fn: Callable[[QdrantClient], T], client: Any, passthrough_missing: bool) -> T:
        try:
            return fn(client)
        except Exception as exc:  # noqa: BLE001 - connection, timeout, HTTP errors; local mode's RuntimeError
            if passthrough_missing and _missing(exc):
                raise _Missing() from exc
            raise StoreUnavailable(self.backend, _first_line(exc)) from exc

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
        """Close the client (a local one releases its folder); the store answers no call after it."""
        with self._lock:
            self._closed = True
            client, self.client = self.client, None
            if client is not None:
                client.close()


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
