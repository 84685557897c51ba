"""Backup and restore bodies (``/kb/export``, ``/kb/import``); the file itself is storage.snapshot.KbBackup."""

from __future__ import annotations

import msgspec

__all__ = ["RestoreResult"]


class RestoreResult(msgspec.Struct, kw_only=True):
    """``POST /kb/import``: what the knowledge base of ``node_id`` now holds.

    ``replaced`` is the number of patterns the knowledge base held before (0 when
    it was empty).
    """

    status: str
    node_id: str
    kb_id: str
    patterns: int
    vectors: int
    replaced: int
