"""Request-body documentation for handlers that decode their own bodies.

Handlers read raw bytes and decode them with web.decoding (the reference's lax
rules and 422 shape), so Litestar cannot infer their request bodies. A handler
names its body Struct in ``opt={"body": Type}``; this module adds the matching
``requestBody`` (msgspec's JSON schema) to the generated OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, RequestBody

__all__ = ["document_request_bodies"]


def document_request_bodies(app: Litestar, replace: dict[type, type] | None = None) -> None:
    """Add a requestBody to every operation whose handler declares ``opt["body"]``.

    ``replace`` maps a declared type to the one actually decoded (web/limits.py: the
    same Struct with this app's limits), so the document shows the limits.
    """
    replace = replace or {}
    targets: list[tuple[str, str, Any]] = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            body = handler.opt.get("body")
            if body is not None:
                for method in handler.http_methods:
                    targets.append((route.path_format, method.lower(), replace.get(body, body)))
    if not targets:
        return
    types = list(dict.fromkeys(t for _, _, t in targets))
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(types, schemas))
    openapi = app.openapi_schema
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    openapi.components.schemas.update(components)
    for path, method, body in targets:
        operation = getattr(openapi.paths[path], method, None) if openapi.paths and path in openapi.paths else None
        if operation is not None:
            operation.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=by_type[body])}, required=True)
