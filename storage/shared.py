"""The pattern store several processes share: ClickHouse rows + Redis state + a change stream.

Layout (api.md §4.3, §4.4): one ``patterns_data`` row per distinct pattern in
ClickHouse; frequencies, emotive windows, metadata, symbol statistics, affinities,
global totals and finalize-training results under ``{kb_id}:`` in Redis. Ours,
outside the ``{kb_id}:`` prefix so clear-all does not reset them:
``kato:kbgen:{kb_id}`` (the generation, api.md §4.10), ``kato:kblog:{kb_id}``
(a Redis stream with one entry per change, entry id ``<generation>-0``),
``kato:kbepoch:{kb_id}`` (number of clear-alls) and ``kato:kbclear:{kb_id}``
(held while a clear-all runs). Under the prefix, ours: ``{kb_id}:patterns``
(sorted set name -> generation of its first learn: the learn order) and
``{kb_id}:affinity_order`` (symbols in the order they first got an affinity).

Write path of a learn (api.md §4.6, made exact across processes):

1. A pattern new to the knowledge base is claimed (``{kb_id}:claim:{name}``, SET NX
   with a lease); the winner inserts its ClickHouse row through the batching
   writer and waits for ClickHouse's acknowledgement; others wait for the winner.
   A failed insert releases the claim and fails the learn with 503.
2. One Lua script then applies the whole learn atomically: new-or-re-learn is
   decided by the frequency key, counters move by atomic increments, the emotive
   window and metadata are merged, affinities are summed in IEEE doubles exactly
   as the engine sums them, ``kato:kbgen`` is incremented and the learn (its
   ``LearnedPattern``) is appended to the stream under that generation.

So the stream holds every committed change in the order Redis applied it, and
Redis' state *is* the replay of the stream. Every process applies the stream to
its in-memory ``KnowledgeBase`` in that order, its own learns included: the
engine's ``apply`` of a :class:`SharedKnowledgeBase` commits (steps 1–2) and
returns once the applier reached the learn's generation. Hence every process
holds exactly the same knowledge base as every other and as a rebuild would,
down to emotive-window order and the last bit of affinity sums.

Keeping in step: a background follower blocks on ``XREAD`` over the streams of
the open knowledge bases and applies new entries as they arrive (about a
millisecond behind), and :meth:`SharedPatternStore.sync` — called by the web
layer before each use of a knowledge base — compares ``kato:kbgen`` and applies
whatever is missing first, so a learn acknowledged by any process is visible to
the next request on every process (no stale window). A gap in the stream (the
stream is capped at ``stream_maxlen`` entries) or a generation that went
backwards makes the process rebuild that knowledge base from the stores.

Rebuild (first open): one Lua script reads the Redis state of the knowledge base
atomically together with its generation, then the rows of its patterns come from
ClickHouse; ``KnowledgeBase.load`` restores them in learn order, affinities and
finalize-training results included, and the stream is followed from that
generation on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import msgspec

from engine import KnowledgeBase, LearnedPattern
from engine.emotives import accumulate_metadata, average_emotives, merge_metadata
from engine.vectors import VectorIndex
from storage.base import BackendHealth, StoreUnavailable
from storage.clickhouse import ClickHouseRows, pattern_row
from storage.redis import RedisConnector
from storage.snapshot import KbSnapshot

__all__ = ["SharedPatternStore", "SharedKnowledgeBase", "Change"]

log = logging.getLogger("kato.storage.shared")

T = TypeVar("T")

STREAM_MAXLEN = 10_000      # entries kept per knowledge base; a process further behind rebuilds
CLAIM_LEASE_MS = 30_000     # a crashed row writer blocks that one new pattern at most this long
WAIT_TIMEOUT = 60.0         # longest a learn waits on a claim, a clear-all or its own application
FOLLOW_BLOCK_MS = 1000


class Change(msgspec.Struct, array_like=True, omit_defaults=True):
    """One entry of a knowledge base's change stream."""

    kind: Literal["learn", "finalize", "clear", "reload"]
    learned: LearnedPattern | None = None


_change_encoder = msgspec.msgpack.Encoder()
_change_decoder = msgspec.msgpack.Decoder(Change)

# --------------------------------------------------------------------- scripts

# KEYS: 1 frequency 2 emotives 3 metadata 4 kbgen 5 stream 6 patterns 7 symbols:freq 8 symbols:pmf
#       9 total_symbols 10 total_pattern_frequencies 11 total_unique 12 kbclear 13 kbepoch
#       14 affinity_order 15 the row claim (deleted when ARGV[16] owns it). Per-symbol keys
#       ({kb_id}:symbol_to_patterns:s, {kb_id}:affinity:s) are built here from ARGV[15],
#       the KB prefix: a learn touches dozens of them and
#       passing each one would double what every learn sends (standalone Redis; not Cluster).
# ARGV: 1 name 2 length 3 persistence 4 row epoch ('' = no row written by the caller)
#       5 new-pattern emotives JSON 6 number of new emotive entries 7 new-pattern metadata JSON
#       8 expected stored metadata ('' = unknown) 9 merged metadata JSON 10 has metadata (1/0)
#       11 change payload 12 stream maxlen 13 n symbols 14 m averaged emotives 15 KB key prefix
#       16 claim token ('' = none),
#       then n (symbol, count) pairs, then the new emotive entries (JSON each), then m (key, value) pairs
_LEARN = r"""
local function split_top(s)
  local out, depth, instr, esc, start = {}, 0, false, false, 1
  for i = 1, #s do
    local c = string.byte(s, i)
    if instr then
      if esc then esc = false elseif c == 92 then esc = true elseif c == 34 then instr = false end
    elseif c == 34 then instr = true
    elseif c == 91 or c == 123 then
      depth = depth + 1
      if depth == 2 then start = i end
    elseif c == 93 or c == 125 then
      if depth == 2 then out[#out + 1] = string.sub(s, start, i) end
      depth = depth - 1
    end
  end
  return out
end
if redis.call('EXISTS', KEYS[12]) == 1 then return {'clearing'} end
local name, length, persistence = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n, m, n_emo = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[6])
local prefix = ARGV[15]
local freq = redis.call('GET', KEYS[1])
local is_new = not freq
if is_new then
  local epoch = redis.call('GET', KEYS[13]) or '0'
  if ARGV[4] ~= epoch then return {'need_row'} end
elseif ARGV[10] == '1' then
  local current = redis.call('GET', KEYS[3]) or '{}'
  if ARGV[8] ~= current then return {'meta', current} end
end
local gen = redis.call('INCR', KEYS[4])
if is_new then
  freq = 1
  redis.call('SET', KEYS[1], 1)
  redis.call('SET', KEYS[2], ARGV[5])
  redis.call('SET', KEYS[3], ARGV[7])
  redis.call('ZADD', KEYS[6], gen, name)
  redis.call('INCRBY', KEYS[10], 1)
  redis.call('INCRBY', KEYS[11], 1)
else
  freq = redis.call('INCR', KEYS[1])
  if n_emo > 0 or ARGV[10] == '1' then
    local entries = split_top(redis.call('GET', KEYS[2]) or '[]')
    for i = 1, n_emo do entries[#entries + 1] = ARGV[16 + 2 * n + i] end
    local first = math.max(1, #entries - persistence + 1)
    local kept = {}
    for i = first, #entries do kept[#kept + 1] = entries[i] end
    redis.call('SET', KEYS[2], '[' .. table.concat(kept, ', ') .. ']')
    if ARGV[10] == '1' then redis.call('SET', KEYS[3], ARGV[9]) end
  end
end
for i = 1, n do
  local sym, count = ARGV[15 + 2 * i], ARGV[16 + 2 * i]
  redis.call('HINCRBY', KEYS[7], sym, count)
  redis.call('SADD', prefix .. 'symbol_to_patterns:' .. sym, name)
  if is_new then redis.call('HINCRBY', KEYS[8], sym, 1) end
end
redis.call('INCRBY', KEYS[9], length)
if m > 0 then
  local base = 16 + 2 * n + n_emo
  for i = 1, n do
    local sym = ARGV[15 + 2 * i]
    local key = prefix .. 'affinity:' .. sym
    if redis.call('EXISTS', key) == 0 then redis.call('RPUSH', KEYS[14], sym) end
    for j = 1, m do
      local field = ARGV[base + 2 * j - 1]
      local old = tonumber(redis.call('HGET', key, field) or '0')
      redis.call('HSET', key, field, string.format('%.17g', old + tonumber(ARGV[base + 2 * j])))
    end
  end
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], gen .. '-0', 'c', ARGV[11])
if ARGV[16] ~= '' and redis.call('GET', KEYS[15]) == ARGV[16] then redis.call('DEL', KEYS[15]) end
return {'ok', freq, gen}
"""

# KEYS: 1 frequency 2 claim 3 kbclear 4 kbepoch; ARGV: 1 token 2 lease ms
_CLAIM = r"""
if redis.call('EXISTS', KEYS[3]) == 1 then return {'clearing'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'won', redis.call('GET', KEYS[4]) or '0'}
end
return {'busy'}
"""

_RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: 1 kbgen 2 stream 3 kbepoch 4 kbclear; ARGV: 1 token 2 payload 3 maxlen
_CLEAR_COMMIT = r"""
redis.call('INCR', KEYS[3])
local gen = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], gen .. '-0', 'c', ARGV[2])
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
return gen
"""

# KEYS: 1 kbgen 2 stream 3 finalized-gen 4 kbclear; ARGV: 1 expected generation 2 key prefix
#       3 payload 4 maxlen, then per pattern: name, entropy, normalized, global normalized, tf_vector
_FINALIZE = r"""
if redis.call('EXISTS', KEYS[4]) == 1 then return {'clearing'} end
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return {'retry'} end
local p = ARGV[2]
for i = 5, #ARGV, 5 do
  local name = ARGV[i]
  redis.call('SET', p .. 'entropy:' .. name, ARGV[i + 1])
  redis.call('SET', p .. 'normalized_entropy:' .. name, ARGV[i + 2])
  redis.call('SET', p .. 'global_normalized_entropy:' .. name, ARGV[i + 3])
  redis.call('SET', p .. 'tf_vector:' .. name, ARGV[i + 4])
end
local gen = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], gen .. '-0', 'c', ARGV[3])
redis.call('SET', KEYS[3], gen)
return {'ok', gen}
"""

# KEYS: 1 kbgen 2 patterns 3 affinity_order 4 finalized-gen; ARGV: 1 key prefix
# Compact reply (a 100k-pattern KB must not become 300k reply items): names joined by
# newlines, frequencies by commas, and only the non-empty emotive windows / metadata
# and the finalize results as (index, value...) lists.
_SNAPSHOT = r"""
local p = ARGV[1]
local gen = tonumber(redis.call('GET', KEYS[1]) or '0')
local names = redis.call('ZRANGE', KEYS[2], 0, -1)
local freqs, emos, metas, fins = {}, {}, {}, {}
local finalized = redis.call('EXISTS', KEYS[4]) == 1
for i, name in ipairs(names) do
  freqs[i] = redis.call('GET', p .. 'frequency:' .. name) or '1'
  local e = redis.call('GET', p .. 'emotives:' .. name)
  if e and e ~= '[]' then emos[#emos + 1] = i; emos[#emos + 1] = e end
  local m = redis.call('GET', p .. 'metadata:' .. name)
  if m and m ~= '{}' then metas[#metas + 1] = i; metas[#metas + 1] = m end
  if finalized then
    local en = redis.call('GET', p .. 'entropy:' .. name)
    if en then
      fins[#fins + 1] = i
      fins[#fins + 1] = en
      fins[#fins + 1] = redis.call('GET', p .. 'normalized_entropy:' .. name) or '0'
      fins[#fins + 1] = redis.call('GET', p .. 'global_normalized_entropy:' .. name) or '0'
    end
  end
end
local symbols = redis.call('LRANGE', KEYS[3], 0, -1)
local aff = {}
for i, sym in ipairs(symbols) do aff[i] = redis.call('HGETALL', p .. 'affinity:' .. sym) end
return {gen, table.concat(names, '\n'), table.concat(freqs, ','), emos, metas, fins, symbols, aff}
"""


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH glob characters (api.md §4.8: ``[``, ``]``, ``^`` survive kb_id derivation)."""
    return "".join("\\" + c if c in "*?[]^\\" else c for c in text)


def _dumps(value: Any) -> str:
    return json.dumps(value)  # Python's default separators: byte-identical with the reference (api.md §4.4)


class _Keys:
    """Every Redis key of one knowledge base."""

    __slots__ = ("kb_id", "prefix", "gen", "stream", "epoch", "clear", "patterns", "affinity_order", "finalized")

    def __init__(self, kb_id: str) -> None:
        self.kb_id = kb_id
        self.prefix = f"{kb_id}:"
        self.gen = f"kato:kbgen:{kb_id}"
        self.stream = f"kato:kblog:{kb_id}"
        self.epoch = f"kato:kbepoch:{kb_id}"
        self.clear = f"kato:kbclear:{kb_id}"
        self.patterns = f"{kb_id}:patterns"
        self.affinity_order = f"{kb_id}:affinity_order"
        self.finalized = f"{kb_id}:finalized_generation"

    def of(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"


class _Attached:
    """A knowledge base this process holds and keeps in step with the stream."""

    __slots__ = ("kb", "keys", "gen", "lock", "loop")

    def __init__(self, kb: "SharedKnowledgeBase", loop: asyncio.AbstractEventLoop) -> None:
        self.kb = kb
        self.keys = _Keys(kb.kb_id)
        self.gen = 0
        self.lock = asyncio.Lock()   # one applier at a time; held across fetch + apply
        self.loop = loop


class SharedKnowledgeBase(KnowledgeBase):
    """A knowledge base whose learns commit to the shared store before they are applied.

    ``apply`` (called by the engine for every learn) commits the learn and returns
    the pattern's frequency once the store's applier has applied everything up to
    it, in stream order; ``finalize`` commits a finalize-training marker the same
    way. Both block the calling thread, so they must run on a worker thread, never
    on the event loop. ``clear`` does nothing: clear-all reaches the index through
    the change stream (:meth:`SharedPatternStore.clear`).
    """

    def __init__(self, kb_id: str, store: "SharedPatternStore", vectors: VectorIndex | None = None) -> None:
        super().__init__(kb_id, vectors=vectors)
        self.store = store
        self.attached: _Attached | None = None

    def apply(self, record: LearnedPattern) -> int:
        """Commit one learn to the stores; returns its frequency after every earlier change."""
        return self.store._blocking(self, self.store._learn(self, record))

    def finalize(self) -> int:
        """Commit finalize-training at the current generation; returns the number of patterns."""
        return self.store._blocking(self, self.store._finalize_attached(self))

    def clear(self) -> None:
        """No-op: the store's clear-all already emptied the index through the stream."""

    # The applier's primitives (worker thread).
    def _apply_change(self, change: Change) -> None:
        if change.kind == "learn":
            assert change.learned is not None
            KnowledgeBase.apply(self, change.learned)
        elif change.kind == "finalize":
            KnowledgeBase.finalize(self)
        else:
            with self._lock.write():
                self.index.clear()
            forget = getattr(self.vectors, "forget", None)
            if forget is not None:
                forget()

    def _replace_index(self, fresh: KnowledgeBase) -> None:
        with self._lock.write():
            self.index = fresh.index


def _apply_changes(kb: SharedKnowledgeBase, changes: list[Change]) -> None:
    for change in changes:
        kb._apply_change(change)


class _Snapshot(msgspec.Struct):
    generation: int
    names: list[str]
    records: list[dict[str, Any]]
    affinity: dict[str, dict[str, float]]
    finalized: dict[str, tuple[float, float, float]]


class SharedPatternStore:
    """PatternStore over ClickHouse (rows) and Redis (state, generation, change stream)."""

    backend = "clickhouse"

    def __init__(self, rows: ClickHouseRows, redis: RedisConnector, owns_redis: bool = True,
                 stream_maxlen: int = STREAM_MAXLEN) -> None:
        self.rows = rows
        self.redis = redis
        self._owns_redis = owns_redis
        self.stream_maxlen = stream_maxlen
        self._attached: dict[str, _Attached] = {}
        self._follower: asyncio.Task | None = None
        self._follow_wakeup: asyncio.Event | None = None
        self._apply_limiter = anyio.CapacityLimiter(8)
        self._closing = False
        self._token_prefix = uuid.uuid4().hex + ":"
        self._pending: list[tuple[str, list[str], list[Any], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self._sender_loop: asyncio.AbstractEventLoop | None = None
        self._tokens = 0
        self._scripts: dict[str, Any] = {}
        self.reloads = 0

    # ------------------------------------------------------------ plumbing

    def _script(self, source: str) -> Any:
        client = self.redis.client
        cached = self._scripts.get(source)
        if cached is None or cached[0] is not client:
            cached = self._scripts[source] = (client, client.register_script(source))
        return cached[1]

    async def _eval(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script; calls queued by concurrent learns go to Redis in one pipeline."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((source, list(keys), list(args), fut))
        if self._sender is None or self._sender.done() or self._sender_loop is not loop:
            self._sender_loop = loop
            self._sender = loop.create_task(self._send_pending())
        return await fut

    async def _send_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:512], self._pending[512:]

            async def run(r: Any) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                for source, keys, args, _ in batch:
                    await self._script(source)(keys=keys, args=args, client=pipe)  # queues it
                return await pipe.execute(raise_on_error=False)

            try:
                results = await self.redis.run(run)
            except BaseException as exc:  # noqa: BLE001 - every caller must hear about it
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (*_, fut), result in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _token(self) -> str:
        """A claim token unique across processes (process-random prefix + counter)."""
        self._tokens += 1
        return f"{self._token_prefix}{self._tokens}"

    def _blocking(self, kb: SharedKnowledgeBase, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's event loop from an engine worker thread and wait."""
        att = kb.attached
        if att is None:
            coro.close()
            raise RuntimeError(f"knowledge base {kb.kb_id} is not open (PatternStore.rebuild first)")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is att.loop:
            coro.close()
            raise RuntimeError("a shared knowledge base learns on a worker thread, not on the event loop")
        future = asyncio.run_coroutine_threadsafe(coro, att.loop)
        try:
            return future.result(WAIT_TIMEOUT * 2)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StoreUnavailable("redis", f"commit to {kb.kb_id} took over {WAIT_TIMEOUT * 2:.0f}s") from None

    # ------------------------------------------------------- KB lifecycle

    def knowledge_base(self, kb_id: str, vectors: VectorIndex | None = None) -> SharedKnowledgeBase:
        """A new, empty knowledge base bound to this store (load it with :meth:`rebuild`)."""
        return SharedKnowledgeBase(kb_id, self, vectors)

    def detach(self, kb: KnowledgeBase) -> None:
        """Stop following ``kb`` (the web layer dropped its in-memory copy)."""
        att = self._attached.get(kb.kb_id)
        if att is not None and att.kb is kb:
            del self._attached[kb.kb_id]
            if isinstance(kb, SharedKnowledgeBase):
                kb.attached = None

    async def rebuild(self, kb: KnowledgeBase) -> int:
        """Load ``kb`` from ClickHouse + Redis; a SharedKnowledgeBase is then kept in step."""
        snap = await self._snapshot(kb.kb_id)
        await anyio.to_thread.run_sync(self._load, kb, snap, limiter=self._apply_limiter)
        if isinstance(kb, SharedKnowledgeBase):
            att = _Attached(kb, asyncio.get_running_loop())
            att.gen = snap.generation
            kb.attached = att
            self._attached[kb.kb_id] = att
            self._start_follower()
            await self._catch_up(att)
            return att.gen
        return snap.generation

    @staticmethod
    def _load(kb: KnowledgeBase, snap: _Snapshot) -> None:
        kb.load(snap.records, snap.affinity)
        for name, values in snap.finalized.items():
            kb.index.set_finalized(name, values)

    async def _snapshot(self, kb_id: str) -> _Snapshot:
        keys = _Keys(kb_id)
        gen, joined, freqs, emos, metas, fins, symbols, aff = await self._eval(
            _SNAPSHOT, [keys.gen, keys.patterns, keys.affinity_order, keys.finalized], [keys.prefix])
        names = joined.decode().split("\n") if joined else []
        events = await self.rows.events(kb_id) if names else {}
        emotives = {int(emos[i]) - 1: json.loads(emos[i + 1]) for i in range(0, len(emos), 2)}
        metadata = {int(metas[i]) - 1: json.loads(metas[i + 1]) for i in range(0, len(metas), 2)}
        records = []
        for i, (name, freq) in enumerate(zip(names, freqs.split(b","))):
            pattern = events.get(name)
            if pattern is None:
                # Rows are inserted before the learn commits, so this means ClickHouse lost data.
                raise StoreUnavailable("clickhouse", f"row of pattern {name} of {kb_id} is missing")
            records.append({"name": name, "pattern_data": pattern, "frequency": int(freq),
                            "emotives": emotives.get(i, []), "metadata": metadata.get(i, {})})
        affinity: dict[str, dict[str, float]] = {}
        for sym, flat in zip(symbols, aff):
            affinity[sym.decode()] = {flat[j].decode(): float(flat[j + 1]) for j in range(0, len(flat), 2)}
        finalized = {names[int(fins[i]) - 1]: (float(fins[i + 1]), float(fins[i + 2]), float(fins[i + 3]))
                     for i in range(0, len(fins), 4)}
        return _Snapshot(generation=int(gen), names=names, records=records, affinity=affinity,
                         finalized=finalized)

    async def _reload(self, att: _Attached) -> None:
        """Rebuild ``att`` in place from the stores (caller holds ``att.lock``)."""
        snap = await self._snapshot(att.kb.kb_id)
        fresh = KnowledgeBase(att.kb.kb_id)
        await anyio.to_thread.run_sync(self._load, fresh, snap, limiter=self._apply_limiter)
        att.kb._replace_index(fresh)
        att.gen = snap.generation
        self.reloads += 1
        log.info("knowledge base reloaded from the stores", extra={"kb_id": att.kb.kb_id,
                                                                   "generation": att.gen})

    # ---------------------------------------------------------- following

    async def sync(self, kb: KnowledgeBase) -> int:
        """Bring ``kb`` up to ``kato:kbgen`` (read-your-writes across processes); returns its generation."""
        att = kb.attached if isinstance(kb, SharedKnowledgeBase) else None
        if att is None:
            return 0
        current = int(await self.redis.run(lambda r: r.get(att.keys.gen)) or 0)
        if current > att.gen:
            await self._catch_up(att, until=current)
        elif current < att.gen:
            async with att.lock:
                await self._reload(att)   # Redis lost data: serve what the stores hold
        return att.gen

    async def _catch_up(self, att: _Attached, until: int | None = None) -> None:
        """Apply stream entries after ``att.gen`` in order (up to the end, or at least ``until``)."""
        async with att.lock:
            while until is None or att.gen < until:
                start = att.gen + 1
                raw = await self.redis.run(lambda r: r.xrange(att.keys.stream, min=f"{start}-0", max="+", count=1000))
                if not raw:
                    if until is not None:
                        await self._reload(att)   # our own entry is gone: trimmed away
                        continue
                    return
                changes: list[Change] = []
                for entry_id, fields in raw:
                    if int(entry_id.split(b"-")[0]) != start + len(changes):
                        break
                    changes.append(_change_decoder.decode(fields[b"c"]))
                if len(changes) < len(raw) or not changes:
                    await self._reload(att)       # a gap: entries were trimmed before we read them
                    continue
                reload_at = next((i for i, c in enumerate(changes) if c.kind == "reload"), None)
                if reload_at is not None:
                    # A restored backup replaced the knowledge base: load it from the stores.
                    await self._reload(att)
                    continue
                await anyio.to_thread.run_sync(_apply_changes, att.kb, changes, limiter=self._apply_limiter)
                att.gen = start + len(changes) - 1
                if until is None and len(raw) < 1000:
                    return

    def _start_follower(self) -> None:
        if self._follower is None or self._follower.done():
            self._follow_wakeup = asyncio.Event()
            self._follower = asyncio.get_running_loop().create_task(self._follow())
        else:
            assert self._follow_wakeup is not None
            self._follow_wakeup.set()

    async def _follow(self) -> None:
        conn = self.redis.dedicated(socket_timeout=FOLLOW_BLOCK_MS / 1000.0 + 5.0)
        try:
            while not self._closing:
                atts = list(self._attached.values())
                if not atts:
                    assert self._follow_wakeup is not None
                    await self._follow_wakeup.wait()
                    self._follow_wakeup.clear()
                    continue
                by_stream = {att.keys.stream.encode(): att for att in atts}
                try:
                    ready = await conn.xread({att.keys.stream: f"{att.gen}-0" for att in atts},
                                             count=1, block=FOLLOW_BLOCK_MS)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - Redis down: try again shortly, never die
                    # redis-py may report a cancelled read as a connection error: stop then.
                    if self._closing or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        raise asyncio.CancelledError() from None
                    await asyncio.sleep(0.5)
                    continue
                for stream, _ in ready or []:
                    att = by_stream.get(stream)
                    if att is not None and self._attached.get(att.kb.kb_id) is att:
                        try:
                            await self._catch_up(att)
                        except StoreUnavailable:
                            await asyncio.sleep(0.5)
                        except Exception:  # noqa: BLE001
                            log.exception("applying changes failed", extra={"kb_id": att.kb.kb_id})
        finally:
            try:
                await conn.aclose(close_connection_pool=True)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------- writes

    async def _learn(self, kb: SharedKnowledgeBase, record: LearnedPattern) -> int:
        att = kb.attached
        assert att is not None
        freq, gen = await self._commit(kb.kb_id, record, known=record.name in kb.index)
        await self._catch_up(att, until=gen)
        return freq

    async def append(self, kb_id: str, learned: Sequence[LearnedPattern]) -> None:
        """Commit learns made elsewhere (a plain KnowledgeBase), in order; new rows in one batch."""
        if not learned:
            return
        keys = _Keys(kb_id)
        claims: dict[str, tuple[str, str]] = {}

        async def claim(record: LearnedPattern) -> None:
            token = self._token()
            epoch = await self._claim_row(keys, record, token)
            if epoch is not None:
                claims[record.name] = (token, epoch)

        try:
            firsts = {rec.name: rec for rec in reversed(learned)}
            await asyncio.gather(*(claim(rec) for rec in firsts.values()))
            if any(rec.metadata for rec in learned):
                # A re-learn with metadata takes two script calls; keep strict order.
                for record in learned:
                    await self._commit(kb_id, record, known=True, row_epoch=claims.get(record.name, ("", ""))[1])
            else:
                # Started in order, their scripts are queued in order and go out in one
                # pipeline, which Redis runs in order. (Only a clear-all racing this call
                # could make one of them retry, i.e. land later.)
                await asyncio.gather(*(self._commit(kb_id, record, known=True,
                                                    row_epoch=claims.get(record.name, ("", ""))[1])
                                       for record in learned))
        finally:
            for name, (token, _) in claims.items():
                await self._release(keys.of("claim", name), token)

    async def _release(self, key: str, token: str) -> None:
        try:
            await self._eval(_RELEASE, [key], [token])
        except StoreUnavailable:
            pass  # the lease expires on its own

    async def _claim_row(self, keys: _Keys, record: LearnedPattern, token: str) -> str | None:
        """Make sure the pattern's row is in ClickHouse. Returns the clear epoch when this call
        wrote it (the claim is then held by ``token``), None when the pattern already exists."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        claim_key = keys.of("claim", record.name)
        pause = 0.002
        while True:
            status = await self._eval(_CLAIM, [keys.of("frequency", record.name), claim_key, keys.clear, keys.epoch],
                                      [token, CLAIM_LEASE_MS])
            kind = status[0].decode()
            if kind == "exists":
                return None
            if kind == "won":
                try:
                    await self.rows.writer.write((keys.kb_id, record.name, record.events))
                except BaseException:
                    await self._release(claim_key, token)
                    raise
                return status[1].decode()
            if time.monotonic() > deadline:
                raise StoreUnavailable("redis", f"pattern {record.name} stayed claimed for {WAIT_TIMEOUT:.0f}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _commit(self, kb_id: str, record: LearnedPattern, known: bool,
                      row_epoch: str = "") -> tuple[int, int]:
        """Steps 1–2 of the module docstring; returns (frequency, generation)."""
        keys = _Keys(kb_id)
        name = record.name
        counts: dict[str, int] = {}
        for event in record.events:
            for sym in event:
                counts[sym] = counts.get(sym, 0) + 1
        length = sum(counts.values())
        persistence = record.persistence
        accumulated = accumulate_metadata(record.metadata) if record.metadata else {}
        averaged = average_emotives(record.emotives) if record.emotives else {}
        entries = [_dumps(e) for e in record.emotives]
        new_emotives = "[" + ", ".join(entries[-persistence:]) + "]"
        payload = _change_encoder.encode(Change(kind="learn", learned=record))
        symbols = list(counts)
        key_list = [keys.of("frequency", name), keys.of("emotives", name), keys.of("metadata", name), keys.gen,
                    keys.stream, keys.patterns, keys.of("symbols", "freq"), keys.of("symbols", "pmf"),
                    keys.of("global", "total_symbols_in_patterns_frequencies"),
                    keys.of("global", "total_pattern_frequencies"), keys.of("global", "total_unique_patterns"),
                    keys.clear, keys.epoch, keys.affinity_order, keys.of("claim", name)]
        tail: list[Any] = []
        for sym in symbols:
            tail += [sym, counts[sym]]
        tail += entries
        for emotive, value in averaged.items():
            tail += [emotive, repr(float(value))]
        expected_meta, merged_meta = "", ""
        claim_token: str | None = None
        deadline = time.monotonic() + WAIT_TIMEOUT
        try:
            if not known and not row_epoch:
                # Probably new to the knowledge base: write its row before committing.
                claim_token = self._token()
                epoch = await self._claim_row(keys, record, claim_token)
                if epoch is None:
                    claim_token = None
                row_epoch = epoch or ""
            while True:
                args = [name, length, persistence, row_epoch, new_emotives, len(entries), _dumps(accumulated),
                        expected_meta, merged_meta, 1 if record.metadata else 0, payload, self.stream_maxlen,
                        len(symbols), len(averaged), keys.prefix, claim_token or "", *tail]
                status = await self._eval(_LEARN, key_list, args)
                kind = status[0].decode()
                if kind == "ok":
                    claim_token = None   # released by the script
                    return int(status[1]), int(status[2])
                if kind == "meta":
                    expected_meta = status[1].decode()
                    merged_meta = _dumps(merge_metadata(json.loads(expected_meta), accumulated))
                    continue
                if kind == "need_row":
                    if claim_token is not None:
                        await self._release(keys.of("claim", name), claim_token)
                    claim_token = self._token()
                    epoch = await self._claim_row(keys, record, claim_token)
                    if epoch is None:
                        claim_token = None
                    row_epoch = epoch or ""
                    continue
                # "clearing": a clear-all of this knowledge base is running
                if time.monotonic() > deadline:
                    raise StoreUnavailable("redis", f"clear-all of {kb_id} did not finish in {WAIT_TIMEOUT:.0f}s")
                await asyncio.sleep(0.01)
        finally:
            if claim_token is not None:
                await self._release(keys.of("claim", name), claim_token)

    async def clear(self, kb_id: str) -> None:
        """clear-all (api.md §4.8): drop the partition, delete ``{kb_id}:*``, one ``clear`` change."""
        await self._replace(kb_id, None)

    async def restore(self, kb_id: str, snapshot: KbSnapshot) -> None:
        """Make ``snapshot`` the whole content of ``kb_id`` (backup restore).

        Runs like clear-all (learns of every process wait meanwhile), then writes the
        rows in one batch and the Redis state in pipelines, then one ``reload``
        change makes every process load the restored state from the stores.
        """
        await self._replace(kb_id, snapshot)

    async def _replace(self, kb_id: str, snapshot: KbSnapshot | None) -> None:
        keys = _Keys(kb_id)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not await self.redis.run(lambda r: r.set(keys.clear, token, nx=True, px=int(WAIT_TIMEOUT * 1000))):
            if time.monotonic() > deadline:
                raise StoreUnavailable("redis", f"another clear-all or restore of {kb_id} is running")
            await asyncio.sleep(0.02)
        try:
            await self.rows.drop(kb_id)
            pattern = _glob_escape(keys.prefix) + "*"

            async def scan_delete(r: Any) -> None:
                batch: list[bytes] = []
                async for key in r.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        await r.unlink(*batch)
                        batch = []
                if batch:
                    await r.unlink(*batch)

            await self.redis.run(scan_delete)
            if snapshot is not None and snapshot.patterns:
                await self._write_snapshot(keys, snapshot)
            change = Change(kind="clear" if snapshot is None else "reload")
            gen = int(await self._eval(_CLEAR_COMMIT, [keys.gen, keys.stream, keys.epoch, keys.clear],
                                       [token, _change_encoder.encode(change), self.stream_maxlen]))
        except BaseException:
            await self._release(keys.clear, token)
            raise
        att = self._attached.get(kb_id)
        if att is not None:
            await self._catch_up(att, until=gen)

    async def _write_snapshot(self, keys: _Keys, snapshot: KbSnapshot) -> None:
        rows = [pattern_row(keys.kb_id, p.name, p.pattern_data) for p in snapshot.patterns]
        for i in range(0, len(rows), 5000):
            await anyio.to_thread.run_sync(self.rows.insert_rows, rows[i:i + 5000], limiter=self.rows._limiter)
        base = int(await self.redis.run(lambda r: r.get(keys.gen)) or 0)
        n = len(snapshot.patterns)
        symbol_freq: dict[str, int] = {}
        pmf: dict[str, int] = {}
        total_symbols = 0

        async def write(r: Any) -> None:
            nonlocal total_symbols
            pipe = r.pipeline(transaction=False)
            for i, p in enumerate(snapshot.patterns):
                counts: dict[str, int] = {}
                for event in p.pattern_data:
                    for sym in event:
                        counts[sym] = counts.get(sym, 0) + 1
                total_symbols += sum(counts.values()) * p.frequency
                for sym, c in counts.items():
                    symbol_freq[sym] = symbol_freq.get(sym, 0) + c * p.frequency
                    pmf[sym] = pmf.get(sym, 0) + 1
                    pipe.sadd(keys.of("symbol_to_patterns", sym), p.name)
                pipe.set(keys.of("frequency", p.name), p.frequency)
                pipe.set(keys.of("emotives", p.name), _dumps(p.emotives))
                pipe.set(keys.of("metadata", p.name), _dumps(p.metadata))
                # Learn order inside (base, base + 1): before any later learn's generation.
                pipe.zadd(keys.patterns, {p.name: base + i / n})
                if p.finalized is not None:
                    for kind, value in zip(("entropy", "normalized_entropy", "global_normalized_entropy"),
                                           p.finalized):
                        pipe.set(keys.of(kind, p.name), repr(float(value)))
                if len(pipe) >= 5000:
                    await pipe.execute()
            if symbol_freq:
                pipe.hset(keys.of("symbols", "freq"), mapping=symbol_freq)
                pipe.hset(keys.of("symbols", "pmf"), mapping=pmf)
            pipe.set(keys.of("global", "total_symbols_in_patterns_frequencies"), total_symbols)
            pipe.set(keys.of("global", "total_pattern_frequencies"), n)
            pipe.set(keys.of("global", "total_unique_patterns"), n)
            for sym, table in snapshot.affinity.items():
                pipe.rpush(keys.affinity_order, sym)
                if table:
                    pipe.hset(keys.of("affinity", sym), mapping={e: repr(float(v)) for e, v in table.items()})
            if any(p.finalized is not None for p in snapshot.patterns):
                pipe.set(keys.finalized, base)
            await pipe.execute()

        await self.redis.run(write)

    async def _finalize_attached(self, kb: SharedKnowledgeBase) -> int:
        att = kb.attached
        assert att is not None
        return await self._finalize(att.keys, att)

    async def mark_finalized(self, kb_id: str) -> None:
        """Commit finalize-training of ``kb_id`` now (a no-op for an open shared knowledge base,
        whose ``finalize`` already committed it)."""
        if kb_id in self._attached:
            return
        await self._finalize(_Keys(kb_id), None)

    async def _finalize(self, keys: _Keys, att: _Attached | None) -> int:
        """Compute finalize-training at generation G and commit its results iff the KB is still at G."""
        payload = _change_encoder.encode(Change(kind="finalize"))
        for _ in range(5):
            if att is None:
                kb: KnowledgeBase = KnowledgeBase(keys.kb_id)
                gen = await self.rebuild(kb)
                n = await anyio.to_thread.run_sync(KnowledgeBase.finalize, kb, limiter=self._apply_limiter)
                status = await self._commit_finalize(keys, kb, gen, payload)
                if status is not None:
                    return n
                continue
            await self._catch_up(att)
            async with att.lock:
                gen = att.gen
                n = await anyio.to_thread.run_sync(KnowledgeBase.finalize, att.kb, limiter=self._apply_limiter)
                status = await self._commit_finalize(keys, att.kb, gen, payload)
                if status is not None:
                    att.gen = status
                    return n
        if att is not None:
            async with att.lock:
                await self._reload(att)   # our local finalize results were never committed
        raise StoreUnavailable("redis", f"knowledge base {keys.kb_id} kept changing during finalize-training")

    async def _commit_finalize(self, keys: _Keys, kb: KnowledgeBase, gen: int, payload: bytes) -> int | None:
        args: list[Any] = [gen, keys.prefix, payload, self.stream_maxlen]
        for name in kb.index.iter_names():
            values = kb.index.finalized_metrics(name)
            if values is None:
                continue
            record = kb.index.record(name)
            length = record["length"] or 1
            counts: dict[str, int] = {}
            for event in record["pattern_data"]:
                for sym in event:
                    counts[sym] = counts.get(sym, 0) + 1
            tf = {sym: c / length for sym, c in counts.items()}
            args += [name, repr(float(values[0])), repr(float(values[1])), repr(float(values[2])), _dumps(tf)]
        status = await self._eval(_FINALIZE, [keys.gen, keys.stream, keys.finalized, keys.clear], args)
        return int(status[1]) if status[0] == b"ok" else None

    # -------------------------------------------------------------- misc

    async def open(self) -> None:
        """Connect to ClickHouse and create the schema (idempotent); called at service start."""
        await self.rows.open()

    async def generation(self, kb_id: str) -> int:
        """``kato:kbgen:{kb_id}`` (0 for a knowledge base that never changed)."""
        return int(await self.redis.run(lambda r: r.get(_Keys(kb_id).gen)) or 0)

    async def ping(self) -> BackendHealth:
        """ClickHouse ``SELECT 1`` (Redis is reported by the session store's ping)."""
        return await self.rows.ping()

    async def close(self) -> None:
        """Stop following, flush queued rows, close the clients."""
        self._closing = True
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            if self._follow_wakeup is not None:
                self._follow_wakeup.set()
            try:
                await asyncio.wait_for(follower, FOLLOW_BLOCK_MS / 1000.0 + 5.0)
            except (asyncio.CancelledError, RuntimeError, TimeoutError):
                pass
        for att in self._attached.values():
            att.kb.attached = None
        self._attached.clear()
        await self.rows.close()
        if self._owns_redis:
            await self.redis.close()
