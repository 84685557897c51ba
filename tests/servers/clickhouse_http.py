"""ClickHouse's HTTP interface in front of the real ClickHouse engine (chdb), for tests.

No Docker engine exists on the machines that run the suite, and chdb — the real
ClickHouse engine as a library — can be opened by one process per data path. So
that several KATO server processes can share one ClickHouse, as in production,
this script hosts chdb at ``--path`` and serves the part of ClickHouse's HTTP
interface that clickhouse-connect's ordinary HTTP client uses:

* ``GET /ping`` -> ``Ok.``;
* ``GET|POST /`` with the SQL in the ``query`` URL parameter and/or the body,
  bound parameters as ``param_<name>`` (handed to ClickHouse as query
  parameters, never spliced), the result in the format the SQL names (the client
  asks for ``Native``) or TabSeparated;
* ``INSERT ... FORMAT <fmt>`` with the data after the statement's line in the
  body (uncompressed: KATO's client sends ``compress=False``), ingested as
  ``INSERT ... FROM INFILE`` exactly as clickhouse-connect's own chdb backend does;
* errors as HTTP 500 with ClickHouse's ``Code: N. DB::Exception`` text and the
  ``X-ClickHouse-Exception-Code`` header.

Per-request settings parameters are not applied (KATO sends only
``async_insert=0``, ClickHouse's default); transport parameters (``database``,
``query_id``, ``wait_end_of_query``, ...) are accepted. The SQL itself runs on
ClickHouse unchanged. Usage: ``python -m tests.servers.clickhouse_http --path DIR --port N``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

import chdb

from tests.servers.loopback import serve

_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(rb"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
_CODE = re.compile(r"Code:\s*(\d+)")


class Engine:
    """One chdb connection; calls are serialised (a handle runs one query at a time)."""

    def __init__(self, path: str) -> None:
        self.conn = chdb.connect(path)
        self.lock = threading.Lock()
        self.database: str | None = None

    def run(self, sql: bytes, params: dict[str, str], database: str | None) -> tuple[bytes, str]:
        match = _FORMAT.search(sql)
        fmt = match.group(1).decode() if match else "TabSeparated"
        with self.lock:
            if database and database != self.database:
                self.conn.query(f"USE `{database}`", "TabSeparated")
                self.database = database
            result = self.conn.query(sql.decode(), fmt, params=params)
        return result.bytes() or b"", fmt

    def insert(self, target: bytes, fmt: str, data: bytes, database: str | None) -> None:
        with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as tmp:
            tmp.write(data)
        try:
            path = tmp.name.replace("\\", "\\\\").replace("'", "\\'")
            self.run(f"INSERT INTO {target.decode()} FROM INFILE '{path}' FORMAT {fmt}".encode(), {}, database)
        finally:
            os.unlink(tmp.name)


class Handler(BaseHTTPRequestHandler):
    engine: Engine
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path.rstrip("/") == "/ping":
            self._reply(200, b"Ok.\n")
            return
        self._query(b"")

    def do_POST(self) -> None:  # noqa: N802
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()  # clickhouse-connect streams inserts
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding"):
            self._reply(400, b"Code: 1. DB::Exception: compressed request bodies are not supported by the "
                             b"test server (use compress=False)", {"X-ClickHouse-Exception-Code": "1"})
            return
        self._query(body)

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _query(self, body: bytes) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        params = {k[len("param_"):]: v for k, v in query.items() if k.startswith("param_")}
        database = query.get("database") or None
        sql = query.get("query", "").encode()
        try:
            if sql and body:
                statement, data = sql, body
            else:
                statement, _, data = (sql or body).partition(b"\n") if (sql or body).lstrip()[:6].upper() == b"INSERT" \
                    else (sql or body, b"", b"")
            insert = _INSERT.match(statement)
            if insert:
                self.engine.insert(insert.group(1), insert.group(2).decode(), data, database)
                self._reply(200, b"", {"X-ClickHouse-Summary": "{}"})
                return
            if sql and body:
                statement = sql + b"\n" + body
            out, fmt = self.engine.run(statement, params, database)
            self._reply(200, out, {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC",
                                   "X-ClickHouse-Summary": "{}"})
        except Exception as exc:  # noqa: BLE001 - every engine error goes back to the client
            text = str(exc)
            idx = text.find("Code: ")
            text = text[idx:] if idx >= 0 else f"Code: 1000. DB::Exception: {text}"
            code = _CODE.search(text)
            self._reply(500, text.encode(), {"X-ClickHouse-Exception-Code": code.group(1) if code else "1000"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="chdb data directory")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    Handler.engine = Engine(args.path)
    return serve(Handler, args.port, Handler.engine.conn.close)


if __name__ == "__main__":
    sys.exit(main())
