"""The pattern store several processes share: ClickHouse rows + Redis state + a change stream.

Layout (api.md §4.3, §4.4): one ``patterns_data`` row per distinct pattern in
ClickHouse; frequencies, emotive windows, metadata, symbol statistics, affinities,
global totals and finalize-training results under ``{kb_id}:`` in Redis. Ours,
outside the ``{kb_id}:`` prefix so clear-all does not reset them:
``kato:kbgen:{kb_id}`` (the generation, api.md §4.10), ``kato:kblog:{kb_id}``
(a Redis stream with one entry per change, entry id ``<generation>-0``),
``kato:kbepoch:{kb_id}`` (number of clear-alls), ``kato:kbcall:{kb_id}:{id}`` (a learn
script call's reply, for WAIT_TIMEOUT) and ``kato:kbclear:{kb_id}``
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

Group commit (what makes a learn cost a fraction of its round trips): learners do
not commit one learn each. ``apply`` prepares its learn on the calling worker thread
(script fields, stream payload), queues it on its knowledge base and blocks;
``commit`` does the same on the event loop and awaits it (POST /learn and observe's
auto-learn: no thread hand-over, half the CPU of a learn). The event loop turns
everything queued into one batch, with at most ``MAX_BATCHES`` batches in flight
per knowledge base (the rest keep queueing, so batches grow with the load). The
two batches in flight form a pipeline: the next batch starts once the previous one
has its rows and sends its learn script, so the next batch's ClickHouse insert runs
while Redis runs the previous batch's script (Redis and ClickHouse each work on one
batch while the other works on the other). A
batch runs steps 1–2 for all its learns at once: one claim script for all its
new patterns, their rows in one ClickHouse insert (whose thread computes the
filter columns of all its rows at once), then one learn script per
``LEARN_CHUNK`` learns. That script decides and applies each learn in list order
exactly as the one-learn script would — its own generation, its own stream entry —
and only sums the writes no learn of the batch reads (symbol counters, symbol
sets, totals). A learn the script refuses (its stored metadata changed since the
batch read it, or the pattern vanished in a clear-all) retries in the next call;
concurrent learns have no order among themselves, so that is the order it lands
in. A learn whose new pattern another caller is writing waits for it in a later
batch. Then one catch-up applies the stream up to the batch's last generation,
the batch's own learns straight from memory (the script's reply gave their
generations; nothing to read back), and every learner of the batch is woken
with its frequency, or with the error that failed it. Nothing is acknowledged
before its row is in ClickHouse and its learn script committed; a Redis failure
fails every unacknowledged learn of the batch with 503, and a claim whose release
met the outage is released as soon as Redis is back (not after its lease).
``append`` (import) commits the same way but strictly in its order: the script
stops at the first refused learn.

Keeping in step: a background follower blocks on ``XREAD`` over the streams of
the open knowledge bases and applies new entries as they arrive (about a
millisecond behind; up to FOLLOW_BUSY_PAUSE while this process has learn batches
in flight in one of them, when their own catch-ups apply the stream), and
:meth:`SharedPatternStore.sync` — called by the web layer before each use of a
knowledge base — compares ``kato:kbgen`` and applies whatever is missing first,
so a learn acknowledged by any process is visible to the next request on every
process (no stale window). A gap in the stream (the stream is capped at
``stream_maxlen`` entries) or a generation that went
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
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import msgspec

from engine import KnowledgeBase, LearnedPattern
from engine.emotives import accumulate_metadata, average_emotives, merge_metadata
from engine.vectors import VectorIndex
from storage.base import BackendHealth, StoreUnavailable
from storage.clickhouse import ClickHouseRows
from storage.redis import RedisConnector
from storage.snapshot import KbSnapshot

__all__ = ["SharedPatternStore", "SharedKnowledgeBase", "Change"]

log = logging.getLogger("kato.storage.shared")

T = TypeVar("T")

STREAM_MAXLEN = 10_000      # entries kept per knowledge base; a process further behind rebuilds
CLAIM_LEASE_MS = 30_000     # a crashed row writer blocks that one new pattern at most this long
WAIT_TIMEOUT = 60.0         # longest a learn waits on a claim, a clear-all or its own application
FOLLOW_BLOCK_MS = 1000
FOLLOW_BUSY_PAUSE = 0.05    # how often the follower looks at a knowledge base this process is learning into
                            # (its batches apply the stream up to their own entries, sync() before each use)
MAX_BATCHES = 2             # batches of learns in flight per knowledge base (the rest queue up)
GATHER_AFTER = 16           # a batch slot that frees after a batch of at least this many learns...
GATHER_SHARE = 0.9          # ...waits until this share of that many is queued again,
GATHER_QUIET = 0.001        # ...or no learn came for this long,
GATHER_SECONDS = 0.010      # ...or this long passed (a group commit delay, as PostgreSQL's commit_delay)
LEARN_CHUNK = 256           # learns per learn-script call: bounds how long one call holds Redis


class Change(msgspec.Struct, array_like=True, omit_defaults=True):
    """One entry of a knowledge base's change stream."""

    kind: Literal["learn", "finalize", "clear", "reload"]
    learned: LearnedPattern | None = None


_encoder = msgspec.msgpack.Encoder()
_change_decoder = msgspec.msgpack.Decoder(Change)
_reply_decoder = msgspec.msgpack.Decoder(list[Any])   # per-learn arrays, or the one string "clearing"

# --------------------------------------------------------------------- scripts

# KEYS: 1 kbgen 2 stream 3 patterns 4 symbols:freq 5 symbols:pmf 6 total_symbols
#       7 total_pattern_frequencies 8 total_unique 9 kbclear 10 kbepoch 11 affinity_order
#       12 this call's reply (kato:kbcall:{kb_id}:{unique call id}): the client resends a
#          script whose reply timed out, so a call that already committed answers its stored
#          reply instead of committing its learns a second time (kept WAIT_TIMEOUT).
# ARGV: 1 KB key prefix 2 stream maxlen 3 claim token ('' = none) 4 ordered (1/0)
#       5 the learns (msgpack: one array per learn, fields below), then one change payload per learn.
# A learn: 1 name 2 length 3 persistence 4 row epoch ('' = no row written by the caller)
#       5 new-pattern emotives JSON 6 new emotive entries (JSON each) 7 new-pattern metadata JSON
#       8 expected stored metadata ('' = unknown) 9 merged metadata JSON 10 has metadata (1/0)
#       11 {symbol, count, ...} 12 {emotive, averaged value, ...}
# Per-pattern and per-symbol keys are built here from the KB prefix: a batch touches
# thousands of them (standalone Redis; not Cluster). Each learn is decided and applied
# in list order exactly as if it ran alone; only the writes no learn of the batch reads
# (symbol counters, symbol_to_patterns, totals, the learn order, claims, stream trimming)
# are gathered and done once per batch. A re-learn adds nothing to symbol_to_patterns (api.md
# §4.4 writes it "on every learn", but the first learn of the pattern already put it in each of
# its symbols' sets, and only clear-all removes it, together with its frequency), so only new
# patterns' SADDs are sent: the same sets for a fraction of the calls.
# Replies, as one msgpack string (a RESP array of two or three items per learn cost more to
# parse than the learn's own script fields to build), one entry per learn: {frequency,
# generation}, {'meta', stored metadata}, {'need_row'} or, after the first of those when
# ordered, {'skip'}; or {'clearing'}.
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
-- HINCRBY of many fields of one hash: one HMGET and one HSET per 1000 fields (each
-- redis.call costs more than the increment itself).
local function add_counts(key, fields, deltas)
  local chosen = {}
  for _, field in ipairs(fields) do
    if deltas[field] ~= 0 then chosen[#chosen + 1] = field end
  end
  for i = 1, #chosen, 1000 do
    local chunk = {unpack(chosen, i, math.min(i + 999, #chosen))}
    local current, pairs_ = redis.call('HMGET', key, unpack(chunk)), {}
    for j, field in ipairs(chunk) do
      pairs_[2 * j - 1] = field
      pairs_[2 * j] = string.format('%d', tonumber(current[j] or '0') + deltas[field])
    end
    redis.call('HSET', key, unpack(pairs_))
  end
end
local done = redis.call('GET', KEYS[12])
if done then return done end
if redis.call('EXISTS', KEYS[9]) == 1 then return cmsgpack.pack({'clearing'}) end
local prefix, token, ordered = ARGV[1], ARGV[3], ARGV[4] == '1'
local learns = cmsgpack.unpack(ARGV[5])
local epoch = redis.call('GET', KEYS[10]) or '0'
local gen = tonumber(redis.call('GET', KEYS[1]) or '0')
local first_gen = gen
local sym_freq, sym_pmf, members, order, first_learns, claims = {}, {}, {}, {}, {}, {}
local total_length, new_patterns = 0, 0
local out = {}
for idx, l in ipairs(learns) do
  local name, persistence, entries, counts, averaged = l[1], l[3], l[6], l[11], l[12]
  local fkey, ekey, mkey = prefix .. 'frequency:' .. name, prefix .. 'emotives:' .. name, prefix .. 'metadata:' .. name
  local has_meta = l[10] == 1
  local freq = redis.call('GET', fkey)
  local is_new = not freq
  local refused
  if is_new then
    if l[4] ~= epoch then refused = {'need_row'} end
  elseif has_meta then
    local current = redis.call('GET', mkey) or '{}'
    if l[8] ~= current then refused = {'meta', current} end
  end
  if refused then
    out[idx] = refused
    if ordered then
      for j = idx + 1, #learns do out[j] = {'skip'} end
      break
    end
  else
    gen = gen + 1
    if is_new then
      freq = 1
      redis.call('SET', fkey, 1)
      redis.call('SET', ekey, l[5])
      redis.call('SET', mkey, l[7])
      first_learns[#first_learns + 1] = gen
      first_learns[#first_learns + 1] = name
      new_patterns = new_patterns + 1
    else
      freq = redis.call('INCR', fkey)
      if #entries > 0 or has_meta then
        local window = split_top(redis.call('GET', ekey) or '[]')
        for i = 1, #entries do window[#window + 1] = entries[i] end
        local kept = {}
        for i = math.max(1, #window - persistence + 1), #window do kept[#kept + 1] = window[i] end
        redis.call('SET', ekey, '[' .. table.concat(kept, ', ') .. ']')
        if has_meta then redis.call('SET', mkey, l[9]) end
      end
    end
    for i = 1, #counts, 2 do
      local sym = counts[i]
      if not sym_freq[sym] then
        sym_freq[sym], sym_pmf[sym], members[sym] = 0, 0, {}
        order[#order + 1] = sym
      end
      sym_freq[sym] = sym_freq[sym] + counts[i + 1]
      if is_new then
        local m = members[sym]
        m[#m + 1] = name
        sym_pmf[sym] = sym_pmf[sym] + 1
      end
    end
    total_length = total_length + l[2]
    if #averaged > 0 then
      for i = 1, #counts, 2 do
        local sym = counts[i]
        local key = prefix .. 'affinity:' .. sym
        if redis.call('EXISTS', key) == 0 then redis.call('RPUSH', KEYS[11], sym) end
        for j = 1, #averaged, 2 do
          local field = averaged[j]
          local old = tonumber(redis.call('HGET', key, field) or '0')
          redis.call('HSET', key, field, string.format('%.17g', old + tonumber(averaged[j + 1])))
        end
      end
    end
    redis.call('XADD', KEYS[2], gen .. '-0', 'c', ARGV[5 + idx])
    if l[4] ~= '' and token ~= '' then claims[#claims + 1] = prefix .. 'claim:' .. name end
    out[idx] = {freq, gen}
  end
end
if gen > first_gen then
  redis.call('SET', KEYS[1], gen)
  for _, sym in ipairs(order) do
    if #members[sym] > 0 then redis.call('SADD', prefix .. 'symbol_to_patterns:' .. sym, unpack(members[sym])) end
  end
  add_counts(KEYS[4], order, sym_freq)
  add_counts(KEYS[5], order, sym_pmf)
  for i = 1, #first_learns, 1000 do
    redis.call('ZADD', KEYS[3], unpack(first_learns, i, math.min(i + 999, #first_learns)))
  end
  for i = 1, #claims, 1000 do
    local chunk = {unpack(claims, i, math.min(i + 999, #claims))}
    local holders, ours = redis.call('MGET', unpack(chunk)), {}
    for j = 1, #chunk do if holders[j] == token then ours[#ours + 1] = chunk[j] end end
    if #ours > 0 then redis.call('DEL', unpack(ours)) end
  end
  redis.call('INCRBY', KEYS[6], total_length)
  if new_patterns > 0 then
    redis.call('INCRBY', KEYS[7], new_patterns)
    redis.call('INCRBY', KEYS[8], new_patterns)
  end
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[2])
end
local reply = cmsgpack.pack(out)
redis.call('SET', KEYS[12], reply, 'PX', CALL_REPLY_MS)
return reply
""".replace("CALL_REPLY_MS", str(int(WAIT_TIMEOUT * 1000)))

# KEYS: 1 kbclear 2 kbepoch; ARGV: 1 KB key prefix 2 token 3 lease ms, then pattern names.
# Reply: {'clearing'} or {'ok', clear epoch, one letter per name}: 'e' the pattern exists,
# 'w' the caller holds its claim (now or already), 'b' someone else does.
_CLAIM = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {'clearing'} end
local p, token = ARGV[1], ARGV[2]
local frequencies = {}
for i = 4, #ARGV, 1000 do
  local chunk = {}
  for j = i, math.min(i + 999, #ARGV) do chunk[#chunk + 1] = p .. 'frequency:' .. ARGV[j] end
  for _, value in ipairs(redis.call('MGET', unpack(chunk))) do frequencies[#frequencies + 1] = value end
end
local codes = {}
for i = 4, #ARGV do
  local name = ARGV[i]
  local claim = p .. 'claim:' .. name
  if frequencies[i - 3] then codes[#codes + 1] = 'e'
  elseif redis.call('SET', claim, token, 'NX', 'PX', ARGV[3]) then codes[#codes + 1] = 'w'
  elseif redis.call('GET', claim) == token then
    redis.call('PEXPIRE', claim, ARGV[3])
    codes[#codes + 1] = 'w'
  else codes[#codes + 1] = 'b' end
end
return {'ok', redis.call('GET', KEYS[2]) or '0', table.concat(codes)}
"""

# ARGV: 1 KB key prefix 2 token, then pattern names: drop those claims the token still holds.
_RELEASE = r"""
for i = 3, #ARGV do
  local claim = ARGV[1] .. 'claim:' .. ARGV[i]
  if redis.call('GET', claim) == ARGV[2] then redis.call('DEL', claim) end
end
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

    def learn(self) -> list[str]:
        """The KEYS of the learn script."""
        return [self.gen, self.stream, self.patterns, self.of("symbols", "freq"), self.of("symbols", "pmf"),
                self.of("global", "total_symbols_in_patterns_frequencies"),
                self.of("global", "total_pattern_frequencies"), self.of("global", "total_unique_patterns"),
                self.clear, self.epoch, self.affinity_order]


class _Learn:
    """One learn on its way to Redis: the learn script's fields for it, prepared by the
    learner, and its outcome (``gen`` once committed, or ``error``). A learner on a
    worker thread blocks in :meth:`wait`; one on the event loop awaits ``waker``."""

    __slots__ = ("record", "fields", "payload", "accumulated", "row", "needs_row", "busy", "deadline", "pause",
                 "freq", "gen", "error", "done", "waker", "finished")

    def __init__(self, kb_id: str, record: LearnedPattern, needs_row: bool,
                 waker: asyncio.Future | None = None) -> None:
        counts: dict[str, int] = {}
        for event in record.events:
            for sym in event:
                counts[sym] = counts.get(sym, 0) + 1
        flat_counts: list[Any] = []
        for sym, count in counts.items():
            flat_counts += (sym, count)
        flat_averaged: list[Any] = []
        if record.emotives:
            for emotive, value in average_emotives(record.emotives).items():
                flat_averaged += (emotive, repr(float(value)))
        self.accumulated = accumulate_metadata(record.metadata) if record.metadata else {}
        entries = [_dumps(e) for e in record.emotives]
        self.record = record
        self.fields: list[Any] = [
            record.name, sum(counts.values()), record.persistence, "",
            "[" + ", ".join(entries[-record.persistence:]) + "]", entries, _dumps(self.accumulated),
            "", "", 1 if record.metadata else 0, flat_counts, flat_averaged]
        self.payload = _encoder.encode(Change(kind="learn", learned=record))
        # The row's filter columns are computed by the insert, for its whole batch at once.
        self.row = (kb_id, record.name, record.events)
        self.needs_row = needs_row
        self.busy = False
        self.deadline = time.monotonic() + WAIT_TIMEOUT
        self.pause = 0.002
        self.freq = self.gen = 0
        self.error: BaseException | None = None
        self.waker = waker
        if waker is None:
            self.done = threading.Lock()      # held until the learn is finished
            self.done.acquire()
        self.finished = False

    def restart(self, row_epoch: str) -> None:
        """Commit as a new pattern whose row was written in clear epoch ``row_epoch`` ('' = none)."""
        self.fields[3] = row_epoch

    def stored_metadata(self, stored: str) -> None:
        """Merge with the stored metadata the script reported (it commits iff that is still current)."""
        self.fields[7] = stored
        self.fields[8] = _dumps(merge_metadata(json.loads(stored), self.accumulated))

    def wait(self) -> int:
        """Block the learner's thread until the learn was applied here; its frequency."""
        if not self.done.acquire(timeout=WAIT_TIMEOUT * 2):
            raise StoreUnavailable("redis", f"commit of {self.record.name} took over {WAIT_TIMEOUT * 2:.0f}s")
        if self.error is not None:
            raise self.error
        return self.freq

    def finish(self, error: BaseException | None = None) -> None:
        """Wake the learner (event loop; later calls do nothing)."""
        if self.finished:
            return
        if error is not None and self.error is None:
            self.error = error
        self.finished = True
        if self.waker is None:
            self.done.release()
        elif not self.waker.done():   # _commit shields it from its caller's cancellation; kept safe anyway
            self.waker.set_result(None)


class _Attached:
    """A knowledge base this process holds and keeps in step with the stream."""

    __slots__ = ("kb", "keys", "gen", "lock", "loop", "queue", "queue_lock", "draining", "batches", "forming",
                 "own", "last_size", "want", "gather", "arrived", "gather_until")

    def __init__(self, kb: "SharedKnowledgeBase", loop: asyncio.AbstractEventLoop) -> None:
        self.kb = kb
        self.keys = _Keys(kb.kb_id)
        self.gen = 0
        self.lock = asyncio.Lock()   # one applier at a time; held across fetch + apply
        self.loop = loop
        self.queue: list[_Learn] = []        # learns submitted (worker threads, the loop), not yet batched
        self.queue_lock = threading.Lock()
        self.draining = False                # a drain of the queue is scheduled or pending on the loop
        self.batches = 0                     # batches of learns in flight
        self.forming: list[_Learn] | None = None   # the batch still claiming and writing its rows
        self.last_size = 0                   # learns in the last batch started
        self.want = 0                        # while gathering: queue length that wakes the drain
        self.gather: asyncio.TimerHandle | None = None   # the next check of the current gathering
        self.arrived = 0.0                   # time.monotonic() of the last enqueue
        self.gather_until = 0.0              # the latest end of the current gathering
        self.own: dict[int, LearnedPattern] = {}   # generation -> our committed learn, not yet applied


class SharedKnowledgeBase(KnowledgeBase):
    """A knowledge base whose learns commit to the shared store before they are applied.

    ``apply`` (called by the engine for every learn) commits the learn and returns
    the pattern's frequency once the store's applier has applied everything up to
    it, in stream order; ``finalize`` commits a finalize-training marker the same
    way. Both block the calling thread, so they must run on a worker thread, never
    on the event loop; ``commit`` is ``apply`` awaited on the event loop. ``clear``
    does nothing: clear-all reaches the index through the change stream
    (:meth:`SharedPatternStore.clear`).
    """

    def __init__(self, kb_id: str, store: "SharedPatternStore", vectors: VectorIndex | None = None) -> None:
        super().__init__(kb_id, vectors=vectors)
        self.store = store
        self.attached: _Attached | None = None

    def apply(self, record: LearnedPattern) -> int:
        """Commit one learn to the stores; returns its frequency after every earlier change
        (worker thread: blocks it until then)."""
        return self.store._submit(self, record)

    async def commit(self, record: LearnedPattern) -> int:
        """:meth:`apply` for a caller on the event loop this knowledge base is attached to.

        The same batches commit it; awaiting costs no worker thread and no thread hand-over,
        which made up half of the CPU of a learn through ``apply`` (bench_storage). A
        cancelled caller still waits for the learn to end (as a thread blocked in ``apply``).
        """
        return await self.store._commit(self, record)

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


def _apply_learns(kb: SharedKnowledgeBase, learned: list[LearnedPattern]) -> None:
    for record in learned:
        KnowledgeBase.apply(kb, record)


class _Snapshot(msgspec.Struct):
    generation: int
    names: list[str]
    records: list[dict[str, Any]]
    affinity: dict[str, dict[str, float]]
    finalized: dict[str, tuple[float, float, float]]


def _off_loop(kb: SharedKnowledgeBase) -> _Attached:
    """The attachment of ``kb``, checked to be usable from this (worker) thread.

    Raises RuntimeError when ``kb`` is not open, or when called on its event loop,
    which would wait on itself.
    """
    att = kb.attached
    if att is None:
        raise RuntimeError(f"knowledge base {kb.kb_id} is not open (PatternStore.rebuild first)")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is att.loop:
        raise RuntimeError("a shared knowledge base learns on a worker thread, not on the event loop")
    return att


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
        self._tokens = 0
        self._batches: set[asyncio.Task] = set()
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
        """Run a script: one EVALSHA on a pooled connection (loaded first only when Redis
        answers NOSCRIPT). Concurrent calls go out on separate connections at once: no call
        waits for another's reply before it is sent, and with idle connections at hand
        they are sent in the order they are made. The client resends a call whose reply
        timed out (storage/redis.py), so a script that must not run twice guards itself
        (the learn script's reply key)."""
        return await self.redis.run(lambda r: self._script(source)(keys=list(keys), args=list(args), client=r))

    def _token(self) -> str:
        """A claim token unique across processes (process-random prefix + counter)."""
        self._tokens += 1
        return f"{self._token_prefix}{self._tokens}"

    def _blocking(self, kb: SharedKnowledgeBase, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's event loop from an engine worker thread and wait."""
        try:
            att = _off_loop(kb)
        except RuntimeError:
            coro.close()
            raise
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
        att.own = {gen: learned for gen, learned in att.own.items() if gen > att.gen}
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
                if start in att.own:
                    # Our own learns, next in line: the learn script gave them these generations.
                    learned: list[LearnedPattern] = []
                    while start + len(learned) in att.own:
                        learned.append(att.own.pop(start + len(learned)))
                    await anyio.to_thread.run_sync(_apply_learns, att.kb, learned, limiter=self._apply_limiter)
                    att.gen = start + len(learned) - 1
                    continue
                raw = await self.redis.run(lambda r: r.xrange(att.keys.stream, min=f"{start}-0", max="+", count=1000))
                if not raw:
                    if until is not None:
                        await self._reload(att)   # our own entry is gone: trimmed away
                        continue
                    return
                changes: list[Change] = []
                for entry_id, fields in raw:
                    gen = start + len(changes)
                    if int(entry_id.split(b"-")[0]) != gen:
                        break
                    own = att.own.pop(gen, None)   # our own learns need no decoding
                    changes.append(Change(kind="learn", learned=own) if own is not None
                                   else _change_decoder.decode(fields[b"c"]))
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
                if att.own and min(att.own) <= att.gen:
                    att.own = {gen: learned for gen, learned in att.own.items() if gen > att.gen}
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
                learning = False
                for stream, _ in ready or []:
                    att = by_stream.get(stream)
                    if att is not None and att.batches:
                        # Our learn batches apply the stream up to their own entries: reading
                        # it here too would only race them. Look again shortly.
                        learning = True
                    elif att is not None and self._attached.get(att.kb.kb_id) is att:
                        try:
                            await self._catch_up(att)
                        except StoreUnavailable:
                            await asyncio.sleep(0.5)
                        except Exception:  # noqa: BLE001
                            log.exception("applying changes failed", extra={"kb_id": att.kb.kb_id})
                if learning:
                    await asyncio.sleep(FOLLOW_BUSY_PAUSE)
        finally:
            try:
                await conn.aclose(close_connection_pool=True)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------- writes

    def _submit(self, kb: SharedKnowledgeBase, record: LearnedPattern) -> int:
        """Queue one learn for the knowledge base's next batch and wait for it (worker thread)."""
        att = _off_loop(kb)
        new = record.name not in kb.index
        learn = _Learn(kb.kb_id, record, needs_row=new)
        self._enqueue(att, [learn])
        return learn.wait()

    async def _commit(self, kb: SharedKnowledgeBase, record: LearnedPattern) -> int:
        """Queue one learn for the knowledge base's next batch and await it (its event loop).

        A cancelled caller still waits for the learn to end, as a caller blocked in
        ``apply`` on a worker thread did: whatever the caller holds (the session lock, the
        knowledge base's gate) covers the whole commit. The batches end every learn within
        WAIT_TIMEOUT of its deadlines; a timer fails it after twice that regardless.
        """
        att = kb.attached
        if att is None:
            raise RuntimeError(f"knowledge base {kb.kb_id} is not open (PatternStore.rebuild first)")
        loop = att.loop
        if asyncio.get_running_loop() is not loop:
            raise RuntimeError("SharedKnowledgeBase.commit runs on the event loop the knowledge base is open on")
        waker = loop.create_future()
        learn = _Learn(kb.kb_id, record, needs_row=record.name not in kb.index, waker=waker)
        timer = loop.call_later(WAIT_TIMEOUT * 2, learn.finish, StoreUnavailable(
            "redis", f"commit of {record.name} took over {WAIT_TIMEOUT * 2:.0f}s"))
        self._enqueue(att, [learn])
        cancelled = False
        while not waker.done():
            try:
                await asyncio.shield(waker)
            except asyncio.CancelledError:
                cancelled = True
        timer.cancel()
        if cancelled:
            raise asyncio.CancelledError
        if isinstance(learn.error, asyncio.CancelledError):   # its batch was cancelled (close)
            raise StoreUnavailable("redis", "the store closed")
        if learn.error is not None:
            raise learn.error
        return learn.freq

    def _enqueue(self, att: _Attached, learns: list[_Learn]) -> None:
        """Add ``learns`` to the queue of ``att``; the first after a drain schedules the next,
        or while a gathering runs, the one that fills it (any thread: the drain itself always
        runs on the event loop). Once the store is closing, ``learns`` fail at once."""
        with att.queue_lock:
            if self._closing:   # close() empties the queue under this lock after setting it
                for learn in learns:
                    learn.finish(StoreUnavailable("redis", "the store closed"))
                return
            att.queue += learns
            att.arrived = time.monotonic()
            if att.want:
                wake = len(att.queue) >= att.want
                if wake:
                    att.want = 0
            else:
                wake, att.draining = not att.draining, True
        if wake:
            att.loop.call_soon_threadsafe(self._drain, att)

    def _drain(self, att: _Attached) -> None:
        """Start a batch of everything queued for ``att`` unless MAX_BATCHES already run or
        a batch is still claiming and writing its rows (event loop); the end of that stage
        of a batch, and the end of each batch, drain again.

        Gathering: the learners of a batch mostly learn again as soon as they are woken
        (a loaded service). When a slot frees after a batch of GATHER_AFTER or more and
        fewer than GATHER_SHARE of that many are queued, the next batch waits for them
        while they keep coming (no pause of GATHER_QUIET), at most GATHER_SECONDS: one
        batch of all of them costs much less per learn than several small ones (a
        ClickHouse insert and the learn script's per-symbol writes cost per batch, not
        per learn). A light load never waits; learners that come back slowly (clients
        that think between learns) cost a batch GATHER_QUIET at most.
        """
        if att.batches >= MAX_BATCHES or att.forming is not None:
            return
        with att.queue_lock:
            if att.gather is None:
                target = att.last_size * GATHER_SHARE if att.last_size >= GATHER_AFTER else 0
                if len(att.queue) < target:
                    att.want, att.draining = max(1, int(target)), True
                    now = time.monotonic()
                    att.arrived, att.gather_until = now, now + GATHER_SECONDS
                    att.gather = att.loop.call_later(GATHER_QUIET, self._gathered, att)
                    return
            elif att.want:
                return    # not filled yet, nor timed out
            learns, att.queue, att.draining, att.want = att.queue, [], False, 0
        if att.gather is not None:
            att.gather.cancel()
            att.gather = None
        att.last_size = len(learns)
        if learns:
            att.batches += 1
            att.forming = learns
            task = att.loop.create_task(self._learn_batch(att, learns))
            self._batches.add(task)
            task.add_done_callback(lambda task: self._batch_done(att, task, learns))

    def _gathered(self, att: _Attached) -> None:
        """Check a gathering (event loop): once learns stopped coming or its time is up,
        drain whatever came."""
        now = time.monotonic()
        with att.queue_lock:
            if att.want and now < att.gather_until and now - att.arrived < GATHER_QUIET:
                wake_at = min(att.arrived + GATHER_QUIET, att.gather_until)
                att.gather = att.loop.call_later(max(wake_at - now, 0.0), self._gathered, att)
                return
            att.want = 0
        self._drain(att)

    def _formed(self, att: _Attached, learns: list[_Learn]) -> None:
        """The batch ``learns`` has its claims and rows: the next batch may start (event loop)."""
        if att.forming is learns:
            att.forming = None
            self._drain(att)

    def _batch_done(self, att: _Attached, task: asyncio.Task, learns: list[_Learn]) -> None:
        self._batches.discard(task)
        att.batches -= 1
        if att.forming is learns:
            att.forming = None
        self._drain(att)

    async def _learn_batch(self, att: _Attached, learns: list[_Learn]) -> None:
        """Commit a batch of concurrent learns, apply the stream up to them, wake their learners.

        A learn whose new pattern another caller is writing waits for that (it is queued
        again after a pause); the others go on.
        """
        try:
            waiting = set(await self._commit_many(att.keys, learns, ordered=False,
                                                  formed=lambda: self._formed(att, learns)))
            top = max((learn.gen for learn in learns), default=0)
            if top:
                att.own.update((learn.gen, learn.record) for learn in learns if learn.gen > att.gen)
                await self._catch_up(att, until=top)
        except BaseException as exc:  # noqa: BLE001 - every learner must hear about it
            for learn in learns:
                learn.finish(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        now = time.monotonic()
        later = []
        for learn in learns:
            if learn in waiting and now < learn.deadline:
                later.append(learn)
                continue
            if learn in waiting:
                learn.error = StoreUnavailable("redis", f"pattern {learn.record.name} stayed claimed for "
                                                        f"{WAIT_TIMEOUT:.0f}s")
            learn.finish()
        if later:
            pause = max(learn.pause for learn in later)
            for learn in later:
                learn.pause = min(learn.pause * 2, 0.05)
            att.loop.call_later(pause, self._enqueue, att, later)

    async def append(self, kb_id: str, learned: Sequence[LearnedPattern]) -> None:
        """Commit learns made elsewhere (a plain KnowledgeBase), in order; new rows in one batch."""
        seen: set[str] = set()
        learns = []
        for record in learned:
            learns.append(_Learn(kb_id, record, needs_row=record.name not in seen))
            seen.add(record.name)
        keys = _Keys(kb_id)
        pending = learns
        while pending:
            pending = await self._commit_many(keys, pending, ordered=True)
            failed = next((learn.error for learn in learns if learn.error is not None), None)
            if failed is not None:
                raise failed
            if pending:
                if time.monotonic() > pending[0].deadline:
                    raise StoreUnavailable("redis", f"pattern {pending[0].record.name} stayed claimed for "
                                                    f"{WAIT_TIMEOUT:.0f}s")
                await asyncio.sleep(pending[0].pause)
                pending[0].pause = min(pending[0].pause * 2, 0.05)

    async def _commit_many(self, keys: _Keys, learns: list[_Learn], ordered: bool,
                           formed: Callable[[], None] | None = None) -> list[_Learn]:
        """Steps 1–2 of the module docstring for many learns: claims and rows for the new
        patterns, then learn scripts (``formed`` is called before the first of them). Sets
        ``gen``/``freq`` of each committed learn and ``error`` of each whose row failed;
        returns the learns that wait on another caller's claim (when ``ordered``, those and
        every learn after the first of them). Raises StoreUnavailable when Redis fails or a
        clear-all outlasts WAIT_TIMEOUT."""
        token = self._token()
        held: set[str] = set()   # claims this call holds and its scripts have not dropped
        deadline = time.monotonic() + WAIT_TIMEOUT
        pending = learns
        waiting: list[_Learn] = []
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise StoreUnavailable("redis", f"learns into {keys.kb_id} did not commit in {WAIT_TIMEOUT:.0f}s")
                if any(learn.needs_row for learn in pending):
                    if await self._write_rows(keys, [learn for learn in pending if learn.needs_row], token, held):
                        await asyncio.sleep(0.01)   # a clear-all of this knowledge base is running
                        continue
                    if ordered and any(learn.error is not None for learn in pending):
                        return []
                    pending = [learn for learn in pending if learn.error is None]
                    cut = next((i for i, learn in enumerate(pending) if learn.busy), len(pending))
                    if ordered:
                        # Learns parked on an earlier pass come after these in the order.
                        waiting, pending = pending[cut:] + waiting, pending[:cut]
                    else:
                        waiting += [learn for learn in pending if learn.busy]
                        pending = [learn for learn in pending if not learn.busy]
                    if not pending:
                        break
                if formed is not None:
                    formed()   # schedules the next batch's task before this script's (see _run_learns)
                    formed = None
                replies = await self._run_learns(keys, pending, token, ordered)
                if replies is None:
                    await asyncio.sleep(0.01)       # a clear-all of this knowledge base is running
                    continue
                left = []
                for learn, reply in zip(pending, replies):
                    kind = reply[0]
                    if isinstance(kind, int):
                        learn.freq, learn.gen = kind, int(reply[1])
                        held.discard(learn.record.name)
                    elif kind == "meta":
                        learn.stored_metadata(reply[1])
                        left.append(learn)
                    elif kind == "error":                # its chunk's script failed
                        learn.error = reply[1]
                    elif kind == "need_row":
                        # Gone since we looked (a clear-all): write its row again.
                        learn.needs_row = True
                        learn.restart("")
                        left.append(learn)
                    else:                            # "skip": after a refused one, in order
                        left.append(learn)
                pending = left
            return waiting
        finally:
            if held:
                names = sorted(held)
                await self.redis.settle(lambda r: r.eval(_RELEASE, 0, keys.prefix, token, *names), CLAIM_LEASE_MS)

    async def _run_learns(self, keys: _Keys, learns: list[_Learn], token: str, ordered: bool) -> list[Any] | None:
        """The learn script over ``learns`` in chunks; one reply per learn, None while clearing."""
        key_list = keys.learn()

        async def call(chunk: list[_Learn]) -> list[Any]:
            return _reply_decoder.decode(await self._eval(
                _LEARN, [*key_list, f"kato:kbcall:{keys.kb_id}:{self._token()}"],
                [keys.prefix, self.stream_maxlen, token, 1 if ordered else 0,
                 _encoder.encode([learn.fields for learn in chunk]), *(learn.payload for learn in chunk)]))

        chunks = [learns[i:i + LEARN_CHUNK] for i in range(0, len(learns), LEARN_CHUNK)]
        if ordered:
            replies: list[Any] = []
            for chunk in chunks:
                result = await call(chunk)
                if result[0] == "clearing":
                    break
                replies += result
                if not all(isinstance(reply[0], int) for reply in result):
                    break
        else:
            # Concurrent learns: chunks go out together; those refused retry. A chunk whose
            # script failed on its own fails only its learns: the others committed. gather()
            # runs each call as a task, after any task scheduled before it: so the claim of a
            # batch that ``formed`` just started reaches Redis before this script, and that
            # batch's ClickHouse insert runs while Redis runs this script.
            results = await asyncio.gather(*(call(chunk) for chunk in chunks), return_exceptions=True)
            failures = [result for result in results if isinstance(result, BaseException)]
            for failure in failures:
                if not isinstance(failure, Exception) or len(failures) == len(results):
                    raise failure   # cancelled, or nothing committed: the whole batch fails
            replies = []
            for result, chunk in zip(results, chunks):
                if isinstance(result, BaseException):
                    error = result if isinstance(result, StoreUnavailable) else StoreUnavailable("redis", str(result))
                    replies += [["error", error]] * len(chunk)
                elif result[0] == "clearing":
                    replies += [["skip"]] * len(chunk)
                else:
                    replies += result
        if not replies or all(reply[0] == "skip" for reply in replies):
            return None
        return replies + [["skip"]] * (len(learns) - len(replies))

    async def _write_rows(self, keys: _Keys, learns: list[_Learn], token: str, held: set[str]) -> bool:
        """Claim the patterns of ``learns`` and write the rows of those this call won; True
        while a clear-all runs. Marks each learn: committable (``needs_row`` off, the row's
        clear epoch set when we wrote it), ``busy`` (another caller writes it) or ``error``."""
        firsts: dict[str, _Learn] = {}
        for learn in learns:
            firsts.setdefault(learn.record.name, learn)
        names = list(firsts)
        status = await self._eval(_CLAIM, [keys.clear, keys.epoch], [keys.prefix, token, CLAIM_LEASE_MS, *names])
        if status[0] == b"clearing":
            return True
        epoch, codes = status[1].decode(), status[2].decode()
        won = [name for name, code in zip(names, codes) if code == "w"]
        held.update(won)
        try:
            await self.rows.writer.write([firsts[name].row for name in won])
            failed: dict[str, BaseException] = {}
        except StoreUnavailable as exc:
            failed = dict.fromkeys(won, exc)
        if failed:
            held.difference_update(failed)
            lost = sorted(failed)
            await self.redis.settle(lambda r: r.eval(_RELEASE, 0, keys.prefix, token, *lost), CLAIM_LEASE_MS)
        outcome = dict(zip(names, codes))
        for learn in learns:
            name = learn.record.name
            learn.busy = outcome[name] == "b"   # decided afresh by every claim
            if name in failed:
                learn.error = failed[name]
            elif not learn.busy:
                learn.needs_row = False
                learn.restart(epoch if outcome[name] == "w" else "")
        return False

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
                                       [token, _encoder.encode(change), self.stream_maxlen]))
        except BaseException:
            await self.redis.release(keys.clear, token, int(WAIT_TIMEOUT * 1000))
            raise
        att = self._attached.get(kb_id)
        if att is not None:
            await self._catch_up(att, until=gen)

    async def _write_snapshot(self, keys: _Keys, snapshot: KbSnapshot) -> None:
        rows = [(keys.kb_id, p.name, p.pattern_data) for p in snapshot.patterns]   # filter columns: insert_rows
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
        payload = _encoder.encode(Change(kind="finalize"))
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
        if self._batches:
            await asyncio.wait(list(self._batches), timeout=WAIT_TIMEOUT)
        for att in self._attached.values():
            att.kb.attached = None
            if att.gather is not None:
                att.gather.cancel()
            with att.queue_lock:
                queued, att.queue = att.queue, []
            for learn in queued:
                learn.finish(StoreUnavailable("redis", "the store closed"))
        self._attached.clear()
        await self.rows.close()
        if self._owns_redis:
            await self.redis.close()
