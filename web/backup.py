"""Backup and restore of one knowledge base as one file, on a running service.

Both hold the knowledge base's gate exclusively, so no learn of that node
interleaves (an export is one consistent state; a restore is not mixed with a
learn). Predictions are not held: during a restore they may still see the old
knowledge base. After a restore the in-memory copy is dropped, so the next
request rebuilds it from the stores — the restored state is served exactly as a
restart would serve it.
"""

from __future__ import annotations

from engine import KnowledgeBase
from storage import open_stores
from storage.snapshot import BackupError, KbBackup, export_backup, restore_backup
from web import __version__
from web.decoding import decode_body, field_error
from web.nodes import kb_id_for
from web.runtime import Runtime
from web.settings import Settings
from web.schemas.backup import RestoreResult

__all__ = ["RestoreConflict", "export_kb", "import_kb", "export_offline", "import_offline"]


class RestoreConflict(Exception):
    """The target knowledge base holds patterns and ``replace`` was not given (409)."""


async def export_kb(rt: Runtime, node_id: str, kb_id: str) -> KbBackup:
    """The backup of ``node_id``'s knowledge base (an empty one when it never learned)."""
    entry = await rt.kbs.get(kb_id, node_id)
    async with entry.gate.exclusive():
        return await export_backup(entry.kb, rt.stores.vectors, node_id, __version__)


async def import_kb(rt: Runtime, node_id: str, kb_id: str, raw: bytes, replace: bool) -> RestoreResult:
    """Restore the backup file ``raw`` as ``node_id``'s knowledge base.

    Raises RequestValidationError (422) for a file that cannot be restored and
    RestoreConflict when the knowledge base is not empty and ``replace`` is false.
    The backup's own ``kb_id``/``node_id`` are informational: restoring under
    another node clones a knowledge base.
    """
    backup = decode_body(raw, KbBackup)
    entry = await rt.kbs.get(kb_id, node_id)
    async with entry.gate.exclusive():
        held = len(entry.kb)
        if held and not replace:
            raise RestoreConflict(f"knowledge base {kb_id} holds {held} patterns; "
                                  "pass replace=true to overwrite it")
        try:
            await restore_backup(rt.stores.patterns, rt.stores.vectors, kb_id, backup)
        except BackupError as exc:
            raise field_error(["body", exc.field], str(exc), None) from None
        finally:
            # Whatever happened, memory must not show a state the stores do not hold.
            rt.kbs.evict(kb_id)
            rt.offload.forget(kb_id)
    return RestoreResult(status="restored", node_id=node_id, kb_id=kb_id, patterns=len(backup.patterns),
                         vectors=len(backup.vectors), replaced=held)


async def export_offline(settings: Settings, node_id: str) -> KbBackup:
    """``kato backup``: the backup of ``node_id`` read straight from the configured stores.

    For the embedded default the server must be stopped (its data dir is locked by
    one process); with server backends it may run.
    """
    kb_id = kb_id_for(node_id, settings.service_name)
    stores = open_stores(settings)
    try:
        kb = KnowledgeBase(kb_id, vectors=stores.vectors.index(kb_id))
        await stores.patterns.rebuild(kb)
        return await export_backup(kb, stores.vectors, node_id, __version__)
    finally:
        await stores.close()


async def import_offline(settings: Settings, node_id: str, raw: bytes, replace: bool) -> RestoreResult:
    """``kato restore``: like ``POST /kb/import`` (same checks and errors), on the stores directly."""
    backup = decode_body(raw, KbBackup)
    kb_id = kb_id_for(node_id, settings.service_name)
    stores = open_stores(settings)
    try:
        kb = KnowledgeBase(kb_id, vectors=stores.vectors.index(kb_id))
        await stores.patterns.rebuild(kb)
        held = len(kb)
        if held and not replace:
            raise RestoreConflict(f"knowledge base {kb_id} holds {held} patterns; "
                                  "pass --replace to overwrite it")
        await restore_backup(stores.patterns, stores.vectors, kb_id, backup)
    finally:
        await stores.close()
    return RestoreResult(status="restored", node_id=node_id, kb_id=kb_id, patterns=len(backup.patterns),
                         vectors=len(backup.vectors), replaced=held)
