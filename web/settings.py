"""Service settings: environment -> one frozen Struct. The only place env vars are read.

Names and defaults follow api.md §5.1/§5.2 (the reference's variable names, matched
case-insensitively) with three decisions of ours: the server listens on
``127.0.0.1:8000`` by default (``KATO_HOST``/``KATO_PORT``, ``PORT`` as fallback)
so a fresh ``kato serve`` is not exposed on the network; logs are JSON unless
``LOG_FORMAT=human``; ``MAX_SESSIONS`` is accepted as an alias of
``KATO_MAX_SESSIONS``; ``KATO_WORKERS`` (``kato serve --workers``) is the number of
server processes, which on the embedded default switches sessions and vectors to
the shared SQLite stores (storage/factory.py). Ours too: the input limits ``KATO_MAX_*`` (web/limits.py)
and the rate limit ``KATO_RATE_LIMIT`` (requests per second per API key or client,
0 = off; web/ratelimit.py). Out-of-range values stop the server at start-up with a
message naming the variable (:class:`SettingsError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from engine import EngineConfig, InvalidConfiguration
from web.limits import Limits

__all__ = ["Settings", "SettingsError"]


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service reads from its environment."""

    service_name: str = "kato"
    processor_id: str = "kato"
    processor_name: str = "KatoProcessor"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: str = "json"
    storage: str = "embedded"
    data_dir: str = "var/kato"
    workers: int = 1
    engine: EngineConfig = EngineConfig()
    session_ttl: int = 3600
    session_auto_extend: bool = True
    session_lock_timeout: float = 60.0
    max_sessions: int = 0
    max_request_bytes: int = 104857600
    limits: Limits = Limits()
    rate_limit: float = 0.0
    rate_limit_burst: int = 0
    inline_budget_ms: float = 0.5
    # External storage (api.md §5.1): Redis, ClickHouse, Qdrant shared by many processes.
    redis_url: str | None = None
    clickhouse_host: str = "localhost"
    clickhouse_port: int = 8123
    clickhouse_db: str = "kato"
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    clickhouse_secure: bool = False
    clickhouse_chdb_path: str | None = None
    qdrant_host: str | None = "localhost"
    qdrant_port: int = 6333
    qdrant_api_key: str | None = None
    qdrant_https: bool = False
    qdrant_path: str | None = None
    api_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read the settings from ``environ`` (default ``os.environ``); raises SettingsError."""
        env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
        r = _Reader(env)
        service_name = r.text("SERVICE_NAME", "kato")
        if len(service_name) > 40:
            # api.md §1.6 CHOICE A30: a longer name would make kb_id slicing odd.
            raise SettingsError("SERVICE_NAME must be at most 40 characters")
        engine = _engine_defaults(r)
        settings = cls(
            service_name=service_name,
            processor_id=r.text("PROCESSOR_ID", service_name),
            processor_name=r.text("PROCESSOR_NAME", "KatoProcessor"),
            host=r.text("KATO_HOST", "127.0.0.1"),
            port=r.integer("KATO_PORT", r.integer("PORT", 8000, 1, 65535), 1, 65535),
            log_level=r.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
            log_format=r.choice("LOG_FORMAT", "json", ("json", "human")),
            storage=r.choice("KATO_STORAGE", _storage_default(r), ("embedded", "external")),
            data_dir=r.text("KATO_DATA_DIR", "var/kato"),
            workers=r.integer("KATO_WORKERS", 1, 1, 64),
            engine=engine,
            session_ttl=r.integer("SESSION_TTL", 3600, 60, 86400),
            session_auto_extend=r.boolean("SESSION_AUTO_EXTEND", True),
            session_lock_timeout=r.number("KATO_SESSION_LOCK_TIMEOUT", 60.0, 0.001, None),
            max_sessions=r.integer("KATO_MAX_SESSIONS", r.integer("MAX_SESSIONS", 0, 0, None), 0, None),
            max_request_bytes=r.integer("KATO_MAX_REQUEST_BYTES", 104857600, 1024, None),
            limits=_limits(r),
            rate_limit=r.number("KATO_RATE_LIMIT", 0.0, 0.0, None),
            rate_limit_burst=r.integer("KATO_RATE_LIMIT_BURST", 0, 0, None),
            inline_budget_ms=r.number("KATO_INLINE_BUDGET_MS", 0.5, 0.0, None),
            redis_url=_redis_url(r),
            clickhouse_host=r.text("CLICKHOUSE_HOST", "localhost"),
            clickhouse_port=r.integer("CLICKHOUSE_PORT", 8123, 1, 65535),
            clickhouse_db=r.text("CLICKHOUSE_DB", "kato"),
            clickhouse_user=r.text("CLICKHOUSE_USER", "default"),
            clickhouse_password=r.text("CLICKHOUSE_PASSWORD", ""),
            clickhouse_secure=r.boolean("CLICKHOUSE_SECURE", False),
            clickhouse_chdb_path=r.text("KATO_CLICKHOUSE_CHDB_PATH", "") or None,
            qdrant_host=r.text("QDRANT_HOST", "localhost"),
            qdrant_port=r.integer("QDRANT_PORT", 6333, 1, 65535),
            qdrant_api_key=r.text("QDRANT_API_KEY", "") or None,
            qdrant_https=r.boolean("QDRANT_HTTPS", False),
            qdrant_path=r.text("KATO_QDRANT_PATH", "") or None,
            api_key=r.text("KATO_API_KEY", "") or None,  # web/auth.py: unset = open API
        )
        if settings.workers > 1 and settings.storage == "embedded" and settings.data_dir == ":memory:":
            raise SettingsError("KATO_WORKERS above 1 needs KATO_DATA_DIR on disk: workers share it")
        return settings


def _limits(r: "_Reader") -> Limits:
    """Input limits enforced at decoding (web/limits.py); each at least 1."""
    d = Limits()
    return Limits(
        max_symbol_length=r.integer("KATO_MAX_SYMBOL_LENGTH", d.max_symbol_length, 1, None),
        max_symbols_per_event=r.integer("KATO_MAX_SYMBOLS_PER_EVENT", d.max_symbols_per_event, 1, None),
        max_sequence_length=r.integer("KATO_MAX_SEQUENCE_LENGTH", d.max_sequence_length, 1, None),
        max_vector_dimension=r.integer("KATO_MAX_VECTOR_DIMENSION", d.max_vector_dimension, 1, None),
        max_emotives=r.integer("KATO_MAX_EMOTIVES", d.max_emotives, 1, None),
    )


def _storage_default(r: "_Reader") -> str:
    """``external`` as soon as a server backend is named (api.md §5.2), else ``embedded``."""
    named = ("REDIS_URL", "CLICKHOUSE_HOST", "KATO_CLICKHOUSE_CHDB_PATH")
    if any(r.text(name, "") for name in named) or (r.boolean("REDIS_ENABLED", False) and r.text("REDIS_HOST", "")):
        return "external"
    return "embedded"


def _redis_url(r: "_Reader") -> str | None:
    """``REDIS_URL``, or one built from ``REDIS_HOST``/``REDIS_PORT`` when ``REDIS_ENABLED``;
    ``REDIS_TLS`` turns ``redis://`` into ``rediss://`` (api.md §5.1)."""
    url = r.text("REDIS_URL", "")
    if not url and r.boolean("REDIS_ENABLED", False) and r.text("REDIS_HOST", ""):
        url = f"redis://{r.text('REDIS_HOST', '')}:{r.integer('REDIS_PORT', 6379, 1, 65535)}/0"
    if url and r.boolean("REDIS_TLS", False) and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    return url or None


def _engine_defaults(r: "_Reader") -> EngineConfig:
    """Process-wide engine defaults (api.md §5.1); validated like session overrides."""
    values = {
        "max_pattern_length": r.integer("MAX_PATTERN_LENGTH", 0, 0, None),
        "persistence": r.integer("PERSISTENCE", 5, 1, 100),
        "recall_threshold": r.number("RECALL_THRESHOLD", 0.1, 0.0, 1.0),
        "stm_mode": r.choice("STM_MODE", "CLEAR", ("CLEAR", "ROLLING")),
        "indexer_type": r.choice("INDEXER_TYPE", "VI", ("VI", "LSH", "ANNOY", "FAISS")),
        "max_predictions": r.integer("MAX_PREDICTIONS", 100, 1, 10000),
        "sort_symbols": r.boolean("SORT_SYMBOLS", True),
        "process_predictions": r.boolean("PROCESS_PREDICTIONS", True),
        "use_token_matching": r.boolean("USE_TOKEN_MATCHING", True),
        "rank_sort_algo": r.text("RANK_SORT_ALGO", "potential"),
    }
    try:
        return EngineConfig().merged(values)
    except InvalidConfiguration as exc:
        key, msg = next(iter(exc.errors.items()))
        raise SettingsError(f"{key.upper()}: {msg}") from None


class _Reader:
    """Typed access to an upper-cased environment map."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        raw = self._raw(name)
        return default if raw is None else raw

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        for choice in choices:
            if raw.upper() == choice.upper():
                return choice
        raise SettingsError(f"{name} must be one of {', '.join(choices)} (got {raw!r})")

    def integer(self, name: str, default: int, lo: int | None, hi: int | None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer (got {raw!r})") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise SettingsError(f"{name} must be between {lo} and {hi if hi is not None else 'inf'} (got {value})")
        return value

    def number(self, name: str, default: float, lo: float | None, hi: float | None) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number (got {raw!r})") from None
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise SettingsError(f"{name} must be between {lo} and {hi if hi is not None else 'inf'} (got {raw})")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be a boolean (got {raw!r})")
