"""ClickHouse: the ``patterns_data`` rows of every knowledge base (api.md §4.3).

One row per distinct pattern of a knowledge base, never updated: the events as
``Array(Array(String))`` plus the precomputed filter columns (length, token set,
MinHash signature and LSH bands, first/last token). The schema is created by the
service at start (``CREATE ... IF NOT EXISTS``, idempotent) in ``CLICKHOUSE_DB``.
Every value reaches ClickHouse as a bound parameter (``{name:Type}``) or as
the data of an insert (``JSONCompactEachRow`` lines) — never formatted into SQL text.

Inserts go through :class:`RowWriter`: learns queue their row and wait; one
flusher sends everything queued as a single insert as soon as
the previous insert finished (group commit), so the batch grows with the load
and each learn is acknowledged only once ClickHouse has acknowledged its batch
(synchronous insert, no ``async_insert``). A failed batch fails every learn in it.

``clickhouse-connect`` is synchronous, so calls run on worker threads of this
module's own limiter (never the engine's). The client is the ordinary HTTP one
(``CLICKHOUSE_HOST``/``PORT``); ``interface="chdb"`` runs the real ClickHouse
engine in process (one process per data path) for tests and single-process use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import numpy

from storage.base import BackendHealth, StoreUnavailable

__all__ = ["ClickHouseRows", "RowWriter", "PatternRow", "minhash_signature", "lsh_bands", "pattern_row",
           "pattern_rows"]

log = logging.getLogger("kato.storage.clickhouse")

T = TypeVar("T")

COLUMNS = ["kb_id", "name", "pattern_data", "length", "token_set", "token_count", "minhash_sig", "lsh_bands",
           "first_token", "last_token"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS {db}.patterns_data (
        kb_id String,
        name String,
        pattern_data Array(Array(String)),
        length UInt32,
        token_set Array(String),
        token_count UInt32,
        minhash_sig Array(UInt32),
        lsh_bands Array(UInt64),
        first_token String,
        last_token String,
        created_at DateTime('UTC') DEFAULT now(),
        updated_at DateTime('UTC') DEFAULT now(),
        INDEX idx_length length TYPE minmax GRANULARITY 4,
        INDEX idx_token_bloom token_set TYPE bloom_filter(0.01) GRANULARITY 4,
        INDEX idx_token_count token_count TYPE minmax GRANULARITY 4
    ) ENGINE = MergeTree() PARTITION BY kb_id ORDER BY (kb_id, length, name)
    SETTINGS index_granularity = 8192""",
    """CREATE TABLE IF NOT EXISTS {db}.lsh_buckets (
        kb_id String, band_index UInt8, band_hash UInt64, pattern_name String
    ) ENGINE = MergeTree() PARTITION BY kb_id ORDER BY (kb_id, band_hash, pattern_name)""",
    """CREATE TABLE IF NOT EXISTS {db}.pattern_stats (
        kb_id String, date Date, total_patterns UInt64, avg_length Float64, avg_token_count Float64,
        min_length UInt32, max_length UInt32
    ) ENGINE = MergeTree() PARTITION BY kb_id ORDER BY (kb_id, date)""",
]

# datasketch MinHash(num_perm=100, seed=1): permutations drawn from RandomState(1).
_MERSENNE = numpy.uint64((1 << 61) - 1)
_MAX_HASH = numpy.uint64((1 << 32) - 1)
_NUM_PERM = 100


def _permutations() -> tuple[numpy.ndarray, numpy.ndarray]:
    gen = numpy.random.RandomState(1)
    pairs = numpy.array([(gen.randint(1, _MERSENNE, dtype=numpy.uint64), gen.randint(0, _MERSENNE, dtype=numpy.uint64))
                         for _ in range(_NUM_PERM)], dtype=numpy.uint64).T
    return pairs[0], pairs[1]


_PERM_A, _PERM_B = _permutations()


_PERMUTED_MAX = 65_536   # symbols whose permuted hash values are kept (see _symbol_rows)


def minhash_signature(symbols: Sequence[str]) -> list[int]:
    """The 100 values of a datasketch ``MinHash(num_perm=100, seed=1)`` updated with each symbol's UTF-8."""
    distinct = list(dict.fromkeys(symbols))
    if not distinct:
        return [int(_MAX_HASH)] * _NUM_PERM
    return _symbol_rows(distinct).min(axis=0).tolist()


def lsh_bands(signature: Sequence[int]) -> list[int]:
    """``abs(hash(tuple(sig[5i:5i+5])))`` for the 20 bands (CPython's tuple hash of ints)."""
    return [abs(hash(tuple(signature[5 * i:5 * i + 5]))) for i in range(20)]


PatternRow = tuple  # the COLUMNS of one row, in order

_json = msgspec.json.Encoder()

# CPython's tuple hash (Objects/tupleobject.c, xxHash-based since 3.8) on 64-bit builds.
_XXPRIME_1 = numpy.uint64(11400714785074694791)
_XXPRIME_2 = numpy.uint64(14029467366897019727)
_XXPRIME_5 = 2870177450012600261
_HASH_OF_MINUS_ONE = numpy.uint64(1546275796)


def _band_hashes(signatures: numpy.ndarray) -> numpy.ndarray:
    """:func:`lsh_bands` of every row of an (n, 100) uint64 array at once: (n, 20) uint64.

    ``hash(int)`` of a value below 2**61 - 1 is the value itself, so CPython's tuple hash
    of five signature values is plain uint64 arithmetic (wrapping, as in C); ``abs`` of
    the signed result is taken in uint64, where it cannot overflow.
    """
    lanes = signatures.reshape(-1, 5)
    acc = numpy.full(len(lanes), _XXPRIME_5, dtype=numpy.uint64)
    for i in range(5):
        acc += lanes[:, i] * _XXPRIME_2
        acc = (acc << numpy.uint64(31)) | (acc >> numpy.uint64(33))
        acc *= _XXPRIME_1
    acc += numpy.uint64(5 ^ (_XXPRIME_5 ^ 3527539))
    acc[acc == numpy.uint64(2**64 - 1)] = _HASH_OF_MINUS_ONE    # hash() never returns -1
    negative = acc >= numpy.uint64(2**63)
    acc[negative] = numpy.uint64(0) - acc[negative]
    return acc.reshape(len(signatures), 20)


# symbol -> row index into _ROWS, the 100 permuted hash values of each symbol: symbols
# recur across patterns, and the signature of a pattern is the element-wise minimum over
# its distinct symbols' rows. Filled under _ROWS_LOCK (rows are built on several threads).
_ROW_OF: dict[str, int] = {}
_ROWS = numpy.empty((0, _NUM_PERM), dtype=numpy.uint32)   # the values are 32-bit: half the memory traffic
_ROWS_LOCK = threading.Lock()


def _symbol_rows(symbols: list[str]) -> numpy.ndarray:
    """The permuted hash values of each of ``symbols``: a (len(symbols), 100) uint32 array."""
    global _ROWS
    with _ROWS_LOCK:
        try:
            index = [_ROW_OF[sym] for sym in symbols]   # the common case, one lookup per symbol
        except KeyError:
            if len(_ROW_OF) >= _PERMUTED_MAX:
                _ROW_OF.clear()
                _ROWS = _ROWS[:0]
            new = list(dict.fromkeys(sym for sym in symbols if sym not in _ROW_OF))
            hv = numpy.array([struct.unpack("<I", hashlib.sha1(sym.encode("utf-8")).digest()[:4])[0] for sym in new],
                             dtype=numpy.uint64)
            # uint64 products wrap, exactly as datasketch's do (arrays do not warn).
            values = numpy.bitwise_and((_PERM_A * hv[:, None] + _PERM_B) % _MERSENNE, _MAX_HASH).astype(numpy.uint32)
            base = len(_ROW_OF)
            _ROW_OF.update(zip(new, range(base, base + len(new))))
            _ROWS = numpy.concatenate([_ROWS, values])
            index = [_ROW_OF[sym] for sym in symbols]
        return _ROWS[index]


def pattern_rows(kb_id: str, patterns: Sequence[tuple[str, list[list[str]]]]) -> list[PatternRow]:
    """The ``patterns_data`` rows (api.md §4.3) of ``(name, events)`` pairs, in order.

    The same values as :func:`minhash_signature` and :func:`lsh_bands` row by row, computed
    for all rows at once with a few numpy calls instead of several per row (a row of a
    new pattern cost about as much CPU as the rest of its learn).
    """
    symbols = [[s for event in events for s in event] for _, events in patterns]
    token_sets = [sorted(set(syms)) for syms in symbols]
    filled = [i for i, tokens in enumerate(token_sets) if tokens]
    signatures = numpy.full((len(patterns), _NUM_PERM), _MAX_HASH, dtype=numpy.uint32)
    if filled:
        permuted = _symbol_rows([sym for i in filled for sym in token_sets[i]])
        starts = numpy.cumsum([0] + [len(token_sets[i]) for i in filled[:-1]])
        signatures[filled] = numpy.minimum.reduceat(permuted, starts, axis=0)
    bands = _band_hashes(signatures.astype(numpy.uint64)).tolist()
    rows = []
    for (name, events), syms, tokens, signature, band in zip(patterns, symbols, token_sets, signatures.tolist(),
                                                             bands):
        rows.append((kb_id, name, events, len(syms), tokens, len(tokens), signature, band,
                     events[0][0] if events and events[0] else "", events[-1][-1] if events and events[-1] else ""))
    return rows


def pattern_row(kb_id: str, name: str, events: list[list[str]]) -> PatternRow:
    """The ``patterns_data`` row of one pattern (api.md §4.3)."""
    return pattern_rows(kb_id, [(name, events)])[0]


class ClickHouseRows:
    """Schema, batched inserts and reads of ``patterns_data`` in one database."""

    backend = "clickhouse"

    def __init__(self, client_factory: Callable[[], Any], database: str = "kato") -> None:
        if not database.replace("_", "").isalnum():
            # The database name is an identifier (it cannot be a bound parameter).
            raise ValueError(f"CLICKHOUSE_DB must be letters, digits and '_' (got {database!r})")
        self.database = database
        self.table = f"{database}.patterns_data"
        self._factory = client_factory
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(4)
        self.writer = RowWriter(self)
        self._schema_ready = False

    # ------------------------------------------------------------- plumbing

    def _connect(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` on this thread; any client failure is StoreUnavailable("clickhouse")."""
        try:
            client = self._connect()
            if not self._schema_ready:
                self._create_schema(client)
            return fn(client)
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver raises many kinds; all mean "cannot serve"
            raise StoreUnavailable(self.backend, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    async def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` on a worker thread of this store's limiter."""
        return await anyio.to_thread.run_sync(self._call, fn, limiter=self._limiter)

    def _create_schema(self, client: Any) -> None:
        client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        for ddl in _SCHEMA:
            client.command(ddl.format(db=self.database))
        self._schema_ready = True

    async def open(self) -> None:
        """Connect and create the schema (idempotent)."""
        await self.call(lambda client: None)

    # --------------------------------------------------------------- writes

    def insert_rows(self, rows: list[PatternRow]) -> None:
        """One synchronous column-oriented insert of ``rows`` (worker thread).

        A row may also be given as ``(kb_id, name, events)``: its filter columns are
        computed here, for all such rows at once, on the insert's thread (not on the event
        loop, nor on each learner's).
        """
        short = [i for i, row in enumerate(rows) if len(row) == 3]
        if short:
            rows = list(rows)
            by_kb: dict[str, list[int]] = {}
            for i in short:
                by_kb.setdefault(rows[i][0], []).append(i)
            for kb_id, indexes in by_kb.items():
                for i, row in zip(indexes, pattern_rows(kb_id, [(rows[i][1], rows[i][2]) for i in indexes])):
                    rows[i] = row
        # JSON lines encoded by msgspec cost a third of the CPU of clickhouse-connect's
        # native-format encoding, which dominated every learn of a new pattern. One
        # thread: most inserts are one group commit of learns (100–250 rows), where the
        # pipeline's extra threads cost about a fifth of the insert's CPU (6 ms with chdb
        # here); the largest (5,000 rows, restore and import) take about 80 ms either way.
        body = b"\n".join(_json.encode(row) for row in rows)
        self._call(lambda client: client.raw_insert(self.table, COLUMNS, body,
                                                    settings={"async_insert": 0, "max_threads": 1},
                                                    fmt="JSONCompactEachRow"))

    async def drop(self, kb_id: str) -> None:
        """Drop the knowledge base's partition (a missing partition is not an error)."""
        await self.call(lambda client: client.command(
            f"ALTER TABLE {self.table} DROP PARTITION {{kb:String}}", parameters={"kb": kb_id}))

    # ---------------------------------------------------------------- reads

    async def events(self, kb_id: str, names: Sequence[str] | None = None) -> dict[str, list[list[str]]]:
        """name -> events of ``kb_id`` (all rows, or only ``names``); duplicate rows collapse."""
        def read(client: Any) -> dict[str, list[list[str]]]:
            if names is None:
                result = client.query(f"SELECT name, pattern_data FROM {self.table} WHERE kb_id = {{kb:String}}",
                                      parameters={"kb": kb_id}, column_oriented=True)
            else:
                result = client.query(
                    f"SELECT name, pattern_data FROM {self.table} WHERE kb_id = {{kb:String}} "
                    f"AND name IN {{names:Array(String)}}", parameters={"kb": kb_id, "names": list(names)},
                    column_oriented=True)
            cols = result.result_columns
            if not cols:
                return {}
            return dict(zip(cols[0], cols[1]))

        return await self.call(read)

    async def count(self, kb_id: str) -> int:
        """Number of rows of ``kb_id``."""
        return int(await self.call(lambda client: client.query(
            f"SELECT count() FROM {self.table} WHERE kb_id = {{kb:String}}", parameters={"kb": kb_id}
        ).result_rows[0][0]))

    async def ping(self) -> BackendHealth:
        """``SELECT 1``; reports the error text instead of raising."""
        start = time.perf_counter()
        try:
            await self.call(lambda client: client.query("SELECT 1"))
        except StoreUnavailable as exc:
            return BackendHealth(ok=False, latency_ms=_ms(start), error=exc.reason)
        return BackendHealth(ok=True, latency_ms=_ms(start))

    async def close(self) -> None:
        """Flush queued rows, then close the client."""
        await self.writer.close()
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the clickhouse client failed", exc_info=True)


class RowWriter:
    """Group-commit writer: rows queued while an insert runs go out together in the next one."""

    def __init__(self, rows: ClickHouseRows, max_rows: int = 5000) -> None:
        self._rows = rows
        self.max_rows = max_rows
        # (row, the future of the write() it came with, that write's rows not yet inserted)
        self._queue: list[tuple[PatternRow, asyncio.Future, list[int]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.rows_written = 0

    async def write(self, rows: Sequence[PatternRow]) -> None:
        """Queue ``rows`` (each a row or ``(kb_id, name, events)``); returns once every insert
        holding one of them was acknowledged (raises StoreUnavailable if one failed)."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop or self._task.done():
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._flush_forever())
        fut = loop.create_future()
        left = [len(rows)]
        self._queue += [(row, fut, left) for row in rows]
        assert self._wakeup is not None
        self._wakeup.set()
        await fut

    async def _flush_forever(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:self.max_rows], self._queue[self.max_rows:]
                try:
                    await anyio.to_thread.run_sync(self._rows.insert_rows, [row for row, _, _ in batch],
                                                   limiter=self._rows._limiter)
                except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
                    error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable("clickhouse", repr(exc))
                    for _, fut, _ in batch:
                        if not fut.done():
                            fut.set_exception(error)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self.batches += 1
                self.rows_written += len(batch)
                for _, fut, left in batch:
                    left[0] -= 1
                    if not left[0] and not fut.done():
                        fut.set_result(None)

    async def close(self) -> None:
        """Wait for queued rows of this loop to be written, then stop the flusher."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            if self._loop is asyncio.get_running_loop():
                pending = list({id(fut): fut for _, fut, _ in self._queue}.values())
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        except RuntimeError:
            pass


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
