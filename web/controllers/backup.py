"""``/kb``: a knowledge base exported to / restored from one backup file."""

from __future__ import annotations

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import FromQuery

from storage.snapshot import KbBackup
from web.backup import RestoreConflict, export_kb, import_kb
from web.deps import runtime
from web.nodes import kb_id_for, resolve_node
from web.schemas.backup import RestoreResult
from web.schemas.errors import Detail

__all__ = ["BackupController"]


def _conflict(request: Request, exc: RestoreConflict) -> Response:
    return Response(Detail(str(exc)), status_code=409, media_type=MediaType.JSON)


class BackupController(Controller):
    """Node resolved as for ``/pattern`` (``?node_id``, ``x-test-id``, ``x-node-id``, ``default_node``)."""

    path = "/kb"
    tags = ["backup"]
    exception_handlers = {RestoreConflict: _conflict}

    @get("/export", summary="Export a knowledge base as one file")
    async def export(self, request: Request) -> Response[KbBackup]:
        """Every pattern, the affinity table and the vectors of the node, as JSON.

        Learns of that node wait while the file is made; predictions do not.
        """
        rt = runtime(request)
        node = resolve_node(request.query_params, request.headers)
        kb_id = kb_id_for(node, rt.settings.service_name)
        backup = await export_kb(rt, node, kb_id)
        return Response(backup, media_type=MediaType.JSON,
                        headers={"Content-Disposition": f'attachment; filename="{kb_id}.kato-kb.json"'})

    @post("/import", status_code=200, summary="Restore a knowledge base from a backup file",
          opt={"body": KbBackup})
    async def restore(self, request: Request, replace: FromQuery[bool] = False) -> RestoreResult:
        """Make the file the node's knowledge base. 409 when the node already learned
        something and ``replace=true`` is not given; 422 for a file that cannot be restored."""
        rt = runtime(request)
        node = resolve_node(request.query_params, request.headers)
        kb_id = kb_id_for(node, rt.settings.service_name)
        return await import_kb(rt, node, kb_id, await request.body(), replace)
