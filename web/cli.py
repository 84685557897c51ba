"""``kato serve``: run the service with uvicorn (one worker on the embedded default)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kato`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="kato", description="KATO sequence-learning service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (embedded storage unless configured)")
    serve.add_argument("--host", help="listen address (default KATO_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default KATO_PORT or 8000)")
    serve.add_argument("--data-dir", help="embedded storage directory (default KATO_DATA_DIR or var/kato)")
    args = parser.parse_args(argv)

    import os

    import msgspec
    import uvicorn

    from web.logging import uvicorn_log_config
    from web.settings import Settings, SettingsError

    if args.data_dir:
        os.environ["KATO_DATA_DIR"] = args.data_dir
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"kato: invalid setting: {exc}", file=sys.stderr)
        return 2
    settings = msgspec.structs.replace(settings, host=args.host or settings.host,
                                       port=args.port or settings.port)
    from web.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, workers=1,
                log_config=uvicorn_log_config(settings.log_level, settings.log_format),
                access_log=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
