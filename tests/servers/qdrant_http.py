"""Qdrant's REST interface in front of qdrant-client's own engine (local mode), for tests.

No Docker engine (and no Qdrant server package) exists on the machines that run
the suite, and qdrant-client's local mode — Qdrant's data model and exact search,
in Python — locks its folder to one process. So that several KATO server
processes can share vectors, as with a Qdrant server in production, this script
hosts one local-mode client at ``--path`` and serves the part of Qdrant's REST API
that ``QdrantClient(host=..., prefer_grpc=False)`` uses for KATO's calls:

* ``GET /collections``, ``GET /collections/{c}``, ``GET /collections/{c}/exists``;
* ``PUT /collections/{c}`` (create; HNSW/optimizer settings are accepted and not
  applied: local mode searches exactly), ``DELETE /collections/{c}``;
* ``PUT /collections/{c}/points`` (upsert), ``POST /collections/{c}/points/query``,
  ``POST /collections/{c}/points/scroll``;
* ``GET /healthz``.

Bodies are validated with qdrant-client's own REST models and answered as
``{"result": ..., "status": "ok", "time": ...}``; a missing collection is 404, as
Qdrant answers it. With ``--api-key``, requests without that ``api-key`` header
are 401. Usage: ``python -m tests.servers.qdrant_http --path DIR --port N``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from qdrant_client import QdrantClient, models

from tests.servers.loopback import serve

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/collections$"), "collections"),
    ("GET", re.compile(r"^/collections/([^/]+)/exists$"), "exists"),
    ("GET", re.compile(r"^/collections/([^/]+)$"), "info"),
    ("PUT", re.compile(r"^/collections/([^/]+)$"), "create"),
    ("DELETE", re.compile(r"^/collections/([^/]+)$"), "delete"),
    ("PUT", re.compile(r"^/collections/([^/]+)/points$"), "upsert"),
    ("POST", re.compile(r"^/collections/([^/]+)/points/query$"), "query"),
    ("POST", re.compile(r"^/collections/([^/]+)/points/scroll$"), "scroll"),
]


class Engine:
    """One local-mode client; calls are serialised (local mode is not thread-safe)."""

    def __init__(self, path: str) -> None:
        self.client = QdrantClient(path=path)
        self.lock = threading.Lock()

    def collections(self, _: str, __: Any) -> Any:
        return self.client.get_collections()

    def exists(self, name: str, _: Any) -> Any:
        return {"exists": self.client.collection_exists(name)}

    def info(self, name: str, _: Any) -> Any:
        return self.client.get_collection(name)

    def create(self, name: str, body: Any) -> Any:
        request = models.CreateCollection.model_validate(body)
        return self.client.create_collection(name, vectors_config=request.vectors)

    def delete(self, name: str, _: Any) -> Any:
        return self.client.delete_collection(name)

    def upsert(self, name: str, body: Any) -> Any:
        request = models.PointsList.model_validate(body)
        points = [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in request.points]
        return self.client.upsert(name, points=points, wait=True)

    def query(self, name: str, body: Any) -> Any:
        request = models.QueryRequest.model_validate(body)
        return self.client.query_points(name, query=request.query, limit=request.limit or 10,
                                        with_payload=request.with_payload or False,
                                        with_vectors=request.with_vector or False)

    def scroll(self, name: str, body: Any) -> Any:
        request = models.ScrollRequest.model_validate(body)
        points, offset = self.client.scroll(name, limit=request.limit or 10, offset=request.offset,
                                            with_payload=request.with_payload or False,
                                            with_vectors=request.with_vector or False)
        return {"points": points, "next_page_offset": offset}


def _json(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=False)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


class Handler(BaseHTTPRequestHandler):
    engine: Engine
    api_key: str | None = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/healthz":
            self._reply(200, {"title": "qdrant test server"})
            return
        if self.api_key is not None and self.headers.get("api-key") != self.api_key:
            self._reply(401, {"status": {"error": "Unauthorized: invalid api-key"}})
            return
        for route_method, pattern, action in _ROUTES:
            match = pattern.match(path)
            if route_method == method and match:
                name = unquote(match.group(1)) if match.groups() else ""
                handler: Callable[[str, Any], Any] = getattr(self.engine, action)
                try:
                    with self.engine.lock:
                        result = handler(name, json.loads(raw) if raw else None)
                except Exception as exc:  # noqa: BLE001 - every engine error goes back to the client
                    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    status = 404 if "not found" in text.lower() else 400
                    self._reply(status, {"status": {"error": text}, "time": time.perf_counter() - started})
                    return
                self._reply(200, {"result": _json(result), "status": "ok", "time": time.perf_counter() - started})
                return
        self._reply(404, {"status": {"error": f"no route {method} {path}"}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="local-mode data directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    Handler.engine = Engine(args.path)
    Handler.api_key = args.api_key
    return serve(Handler, args.port, Handler.engine.client.close)


if __name__ == "__main__":
    sys.exit(main())
