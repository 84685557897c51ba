"""``kato serve``: run the service with uvicorn; ``--workers N`` (``KATO_WORKERS``) runs
N processes behind one port, sharing the embedded stores of the data directory.

``kato backup`` / ``kato restore``: one knowledge base to / from one file, straight
on the configured stores (web/backup.py); a running server offers the same as
``GET /kb/export`` / ``POST /kb/import``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "freeze_startup_heap"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kato`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="kato", description="KATO sequence-learning service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (embedded storage unless configured)")
    serve.add_argument("--host", help="listen address (default KATO_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default KATO_PORT or 8000)")
    serve.add_argument("--data-dir", help="embedded storage directory (default KATO_DATA_DIR or var/kato)")
    serve.add_argument("--workers", type=int, help="server processes (default KATO_WORKERS or 1)")
    for name, help_text in (("backup", "write one node's knowledge base to a file (server stopped, if embedded)"),
                            ("restore", "make a backup file the knowledge base of a node")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--node", default="default_node", help="node id (default: default_node)")
        cmd.add_argument("--data-dir", help="embedded storage directory (default KATO_DATA_DIR or var/kato)")
        if name == "backup":
            cmd.add_argument("--output", "-o", required=True, help="file to write ('-' for stdout)")
        else:
            cmd.add_argument("--input", "-i", required=True, help="backup file to read ('-' for stdin)")
            cmd.add_argument("--replace", action="store_true", help="overwrite a node that already learned")
    args = parser.parse_args(argv)
    if args.command in ("backup", "restore"):
        return _backup_command(args)

    import os

    import msgspec
    import uvicorn

    from web.logging import uvicorn_log_config
    from web.settings import Settings, SettingsError

    # Workers read their settings from the environment (uvicorn starts them afresh).
    if args.data_dir:
        os.environ["KATO_DATA_DIR"] = args.data_dir
    if args.workers is not None:
        os.environ["KATO_WORKERS"] = str(args.workers)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"kato: invalid setting: {exc}", file=sys.stderr)
        return 2
    settings = msgspec.structs.replace(settings, host=args.host or settings.host,
                                       port=args.port or settings.port)
    options = dict(host=settings.host, port=settings.port, workers=settings.workers,
                   log_config=uvicorn_log_config(settings.log_level, settings.log_format),
                   access_log=False, timeout_graceful_shutdown=10)
    if settings.workers > 1:
        from web.workers import run_workers

        del options["host"], options["port"], options["workers"]
        return run_workers(settings.workers, settings.host, settings.port, options)
    from web.app import create_app

    app = create_app(settings)
    app.on_startup.append(freeze_startup_heap)  # runs after the lifespan opened the stores
    uvicorn.run(app, **options)
    return 0


def worker_app() -> object:
    """The app of one ``kato serve --workers N`` process (uvicorn's factory); settings from the environment."""
    from web.app import create_app

    app = create_app()
    app.on_startup.append(freeze_startup_heap)
    return app


GC_YOUNG_THRESHOLD = 10_000  # net container allocations between young collections (default 700)


def freeze_startup_heap(app: object) -> None:
    """Move everything alive at start-up out of the cycle collector's reach.

    After the stores are open the process holds ~140k GC-tracked objects (Litestar,
    qdrant-client, numpy, …) that live as long as it does; every full collection
    walked them all, ~85 ms with the event loop stopped — the p99 of the mixed HTTP
    workload. ``gc.freeze()`` moves them to the permanent generation: they are
    never collected as cycles (refcounting still frees them), and collections
    only scan what requests allocate.

    The youngest generation is then collected every 10,000 net allocations instead
    of 700: a request allocates hundreds of containers (predictions, Litestar's
    request objects) that refcounting frees anyway, and at 700 a collection ran
    every ~14 requests and scanned the ones still in flight. Measured with
    ``python3 -m bench.asgi_mixed``: 18–20 µs of collection per request (38–56 µs
    with two workers' stores), under 1 µs after. The cyclic garbage that waits
    longer is bounded by the threshold (about a MB).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def _backup_command(args: argparse.Namespace) -> int:
    import asyncio

    import msgspec

    from storage.base import StoreUnavailable
    from storage.snapshot import BackupError
    from web.backup import RestoreConflict, export_offline, import_offline
    from web.decoding import RequestValidationError
    from web.logging import configure_logging
    from web.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"kato: invalid setting: {exc}", file=sys.stderr)
        return 2
    if args.data_dir:
        settings = msgspec.structs.replace(settings, data_dir=args.data_dir)
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "backup":
            data = msgspec.json.encode(asyncio.run(export_offline(settings, args.node)))
            if args.output == "-":
                sys.stdout.buffer.write(data)
            else:
                with open(args.output, "wb") as fh:
                    fh.write(data)
            return 0
        if args.input == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.input, "rb") as fh:
                raw = fh.read()
        result = asyncio.run(import_offline(settings, args.node, raw, args.replace))
    except (OSError, StoreUnavailable, RestoreConflict, BackupError, RequestValidationError) as exc:
        print(f"kato {args.command}: {exc}", file=sys.stderr)
        return 1
    print(f"kato restore: restored {result.patterns} patterns and {result.vectors} vectors "
          f"into {result.kb_id} (replaced {result.replaced})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
