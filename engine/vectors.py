"""Vector index interface used for vector symbols (engine.md §1.3, api.md §4.5).

The engine only needs two operations: the names of the ``k`` nearest learned
vectors, and indexing vectors when a learn happens. :class:`ExactVectorIndex` is
the in-process default (exact Euclidean search over a numpy matrix); storage
provides a Qdrant-backed implementation of the same protocol.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy

__all__ = ["VectorIndex", "ExactVectorIndex", "NEIGHBOURS"]

NEIGHBOURS = 3  # engine.md §1.3: three nearest learned vectors

log = logging.getLogger("engine.vectors")


class VectorIndex(Protocol):
    """Nearest-neighbour search over the vectors learned in one knowledge base."""

    def search(self, vector: numpy.ndarray, k: int) -> list[str]:
        """Names of up to ``k`` nearest stored vectors, nearest first.

        Returns ``[]`` when nothing is stored yet or the dimension differs from the
        index's (api.md §4.5.4: the observation is still accepted).
        """

    def upsert(self, items: list[tuple[str, list[float]]]) -> None:
        """Store ``(name, vector)`` pairs; idempotent per name. Vectors of another
        dimension than the first one stored, or empty vectors, are skipped."""

    def clear(self) -> None:
        """Forget every stored vector."""


class ExactVectorIndex:
    """Exact Euclidean nearest neighbours; ties go to the earlier-stored vector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._names: list[str] = []
        self._known: set[str] = set()
        self._rows: list[numpy.ndarray] = []
        self._matrix: numpy.ndarray | None = None
        self.dimension: int | None = None
        self.unindexed = 0

    def __len__(self) -> int:
        return len(self._names)

    def search(self, vector: numpy.ndarray, k: int) -> list[str]:
        with self._lock:
            if not self._names or vector.ndim != 1 or vector.shape[0] != self.dimension:
                return []
            if self._matrix is None:
                self._matrix = numpy.vstack(self._rows)
            dist = numpy.linalg.norm(self._matrix - vector.astype(numpy.float64), axis=1)
            order = numpy.argsort(dist, kind="stable")[:k]
            return [self._names[i] for i in order]

    def upsert(self, items: list[tuple[str, list[float]]]) -> None:
        with self._lock:
            for name, vec in items:
                if name in self._known or not vec:
                    continue
                if self.dimension is None:
                    self.dimension = len(vec)
                elif len(vec) != self.dimension:
                    self.unindexed += 1
                    log.warning("vector not indexed: dimension mismatch",
                                extra={"expected": self.dimension, "actual": len(vec), "vector_name": name})
                    continue
                self._known.add(name)
                self._names.append(name)
                self._rows.append(numpy.asarray(vec, dtype=numpy.float64))
                self._matrix = None

    def clear(self) -> None:
        with self._lock:
            self._reset()
