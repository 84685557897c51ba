"""Serve a test server's handler on 127.0.0.1 until SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["serve"]


def serve(handler: type[BaseHTTPRequestHandler], port: int, close: Callable[[], None]) -> int:
    """Serve ``handler`` on ``127.0.0.1:port`` (a thread per connection); ``close()`` on the way out."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        close()
    return 0
