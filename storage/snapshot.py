"""Knowledge-base snapshots: the state of one KB as data, and the backup file around it.

A :class:`KbSnapshot` is everything a rebuilt :class:`~engine.KnowledgeBase` holds:
every pattern record (events, frequency, emotive window, metadata, finalize-training
results) in learn order, and the affinity table, which cannot be derived from the
records. Symbol statistics and global totals *are* derived from the records
(``PatternIndex.add_record``), so loading a snapshot into an empty knowledge base
reproduces its predictions exactly — learn order included, so tie-breaks agree.

Why a state snapshot and not the learn log: every backend can produce it (export
goes through ``PatternStore.rebuild``, which each backend must implement exactly),
it is as large as the knowledge base rather than its history, and a backend that
keeps state instead of a log (ClickHouse + Redis, api.md §4.1) can persist it
directly (``PatternStore.restore``).

A :class:`KbBackup` is the one-file backup of a knowledge base: a snapshot plus its
vectors (``VectorStore.points``) and a header; it is JSON, so floats round-trip
exactly (shortest repr) and a person can read it.
"""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING

import anyio.to_thread
import msgspec

from engine.observation import pattern_hash

if TYPE_CHECKING:
    from engine import KnowledgeBase
    from storage.base import PatternStore, VectorStore

__all__ = [
    "BACKUP_FORMAT",
    "BACKUP_VERSION",
    "BackupError",
    "KbBackup",
    "KbSnapshot",
    "PatternEntry",
    "VectorEntry",
    "check_backup",
    "export_backup",
    "load_snapshot",
    "restore_backup",
    "take_snapshot",
]

BACKUP_FORMAT = "kato-kb-backup"
BACKUP_VERSION = 1


class BackupError(ValueError):
    """A backup file is not one this server can restore; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class PatternEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One stored pattern (``name`` is the bare 40-hex sha1, without ``PTRN|``)."""

    name: str
    pattern_data: list[list[str]]
    frequency: int
    emotives: list[dict[str, float]] = []
    metadata: dict[str, list[str]] = {}
    # (entropy, normalized_entropy, global_normalized_entropy) as finalize-training left them.
    finalized: tuple[float, float, float] | None = None


class KbSnapshot(msgspec.Struct, kw_only=True):
    """The whole learned state of one knowledge base, patterns in learn order."""

    patterns: list[PatternEntry]
    affinity: dict[str, dict[str, float]] = {}


class VectorEntry(msgspec.Struct):
    """One indexed vector: its ``VCTR|`` symbol name and components."""

    name: str
    vector: list[float]


class KbBackup(msgspec.Struct, kw_only=True):
    """The backup file of one knowledge base (``GET /kb/export``, ``kato backup``)."""

    format: str
    version: int
    kb_id: str
    node_id: str
    exported_at: str
    kato_version: str
    pattern_count: int
    vector_count: int
    patterns: list[PatternEntry]
    affinity: dict[str, dict[str, float]]
    vectors: list[VectorEntry]

    @classmethod
    def build(cls, kb_id: str, node_id: str, snapshot: KbSnapshot, vectors: list[VectorEntry],
              kato_version: str) -> "KbBackup":
        """A backup of ``snapshot`` and ``vectors``, stamped now (UTC)."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        return cls(format=BACKUP_FORMAT, version=BACKUP_VERSION, kb_id=kb_id, node_id=node_id,
                   exported_at=now, kato_version=kato_version, pattern_count=len(snapshot.patterns),
                   vector_count=len(vectors), patterns=snapshot.patterns, affinity=snapshot.affinity,
                   vectors=vectors)

    def snapshot(self) -> KbSnapshot:
        """The knowledge-base part of the backup."""
        return KbSnapshot(patterns=self.patterns, affinity=self.affinity)


def take_snapshot(kb: KnowledgeBase) -> KbSnapshot:
    """The state of ``kb``, read under its lock: no learn (local or applied from
    another process) lands half-way through."""
    patterns = []
    with kb.reading():
        index = kb.index
        for name in index.iter_names():
            rec = index.record(name)
            finalized = index.finalized_metrics(name)
            patterns.append(PatternEntry(
                name=name, pattern_data=rec["pattern_data"], frequency=rec["frequency"],
                emotives=rec["emotives"], metadata=rec["metadata"],
                finalized=None if finalized is None else tuple(float(v) for v in finalized)))
        affinity = index.affinity_table()
    return KbSnapshot(patterns=patterns, affinity=affinity)


def load_snapshot(kb: KnowledgeBase, snapshot: KbSnapshot) -> int:
    """Load ``snapshot`` into the empty ``kb``; returns the number of patterns."""
    n = kb.load(({"name": p.name, "pattern_data": p.pattern_data, "frequency": p.frequency,
                  "emotives": p.emotives, "metadata": p.metadata} for p in snapshot.patterns),
                snapshot.affinity)
    for p in snapshot.patterns:
        if p.finalized is not None:
            kb.index.set_finalized(p.name, tuple(p.finalized))
    return n


def check_backup(backup: KbBackup) -> None:
    """Refuse a file that would not restore the knowledge base it describes.

    Checks the format and version, that the counts in the header match the content
    (a truncated or hand-edited file), that each name is the hash of its events
    (re-learns must find the pattern again), that names are unique and every number
    is finite. Raises :class:`BackupError`.
    """
    if backup.format != BACKUP_FORMAT:
        raise BackupError("format", f"expected {BACKUP_FORMAT!r}, got {backup.format!r}")
    if backup.version != BACKUP_VERSION:
        raise BackupError("version", f"this server reads version {BACKUP_VERSION}, got {backup.version}")
    if backup.pattern_count != len(backup.patterns):
        raise BackupError("pattern_count", f"header says {backup.pattern_count}, file holds {len(backup.patterns)}")
    if backup.vector_count != len(backup.vectors):
        raise BackupError("vector_count", f"header says {backup.vector_count}, file holds {len(backup.vectors)}")
    seen: set[str] = set()
    for i, p in enumerate(backup.patterns):
        where = f"patterns[{i}]"
        if p.name in seen:
            raise BackupError(f"{where}.name", f"pattern {p.name} appears twice")
        seen.add(p.name)
        if pattern_hash(p.pattern_data) != p.name:
            raise BackupError(f"{where}.name", f"{p.name} is not the hash of its pattern_data")
        if p.frequency < 1:
            raise BackupError(f"{where}.frequency", "must be at least 1")
        numbers = [v for e in p.emotives for v in e.values()] + list(p.finalized or ())
        if not all(math.isfinite(v) for v in numbers):
            raise BackupError(where, "emotives and finalized values must be finite")
    for symbol, table in backup.affinity.items():
        if not all(math.isfinite(v) for v in table.values()):
            raise BackupError(f"affinity.{symbol}", "values must be finite")
    for i, v in enumerate(backup.vectors):
        if not v.vector or not all(math.isfinite(x) for x in v.vector):
            raise BackupError(f"vectors[{i}]", "must be a non-empty list of finite numbers")


async def export_backup(kb: KnowledgeBase, vectors: VectorStore, node_id: str, kato_version: str) -> KbBackup:
    """The backup of the loaded ``kb`` and its vectors; learns must be kept out meanwhile."""
    snapshot = await anyio.to_thread.run_sync(take_snapshot, kb)
    points = [VectorEntry(name, vector) for name, vector in await vectors.points(kb.kb_id)]
    backup = KbBackup.build(kb.kb_id, node_id, snapshot, points, kato_version)
    check_backup(backup)  # never hand out a file that restore would refuse
    return backup


async def restore_backup(patterns: PatternStore, vectors: VectorStore, kb_id: str, backup: KbBackup) -> None:
    """Make ``backup`` the content of ``kb_id`` in the stores (checked first; raises BackupError).

    Patterns are replaced in one step by ``PatternStore.restore``; the vectors are
    dropped and re-indexed after it. The caller drops its in-memory copy afterwards.
    """
    check_backup(backup)
    await patterns.restore(kb_id, backup.snapshot())
    await vectors.drop(kb_id)
    if backup.vectors:
        index = vectors.index(kb_id)
        await anyio.to_thread.run_sync(index.upsert, [(v.name, v.vector) for v in backup.vectors])
