# cython: language_level=3
"""PatternIndex: every learned pattern of one knowledge base, and its statistics.

Patterns are stored as flat arrays of symbol ids with offsets (no Python object per
token), an inverted index symbol -> (pattern, count) gives candidate retrieval and
the ``pmf`` statistic, and a first-symbol index serves the single-symbol path.
The learn rules are those of engine.md §2.2–§2.3; the statistics those of §3.8.
"""

from libc.string cimport memcpy
from libcpp.vector cimport vector
from engine.types cimport symbol_id_t, pattern_id_t, Posting, NameKey, int64_t, uint32_t, uint64_t
from engine.symbols cimport SymbolTable

from engine.emotives import average_emotives, accumulate_metadata, merge_metadata

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)


cdef list _untracked_list():
    """A new list the cycle collector never traverses.

    The per-pattern tables hold one entry per pattern (names: str; emotives,
    metadata, finalized: None or plain data owned by the table), so none of them
    can be part of a reference cycle. Tracked, every full collection visited each
    entry: ~40 ms per gen-2 collection at 1M patterns, the p99 of predictions.
    Refcounting still frees everything they hold.
    """
    cdef list out = []
    PyObject_GC_UnTrack(<void*>out)
    return out


cdef NameKey _name_key(str name) except *:
    cdef bytes raw = bytes.fromhex(name)
    if len(raw) != 20:
        raise ValueError(f"pattern name must be 40 hex digits: {name!r}")
    cdef NameKey key
    key.hi = int.from_bytes(raw[0:8], "big")
    key.mid = int.from_bytes(raw[8:16], "big")
    key.lo = int.from_bytes(raw[16:20], "big")
    return key


cdef class PatternIndex:
    """Patterns of one knowledge base with the statistics the metrics need.

    Not thread-safe on its own: the owning :class:`~engine.knowledge.KnowledgeBase`
    serialises writers against readers.
    """

    def __cinit__(self):
        self.symbols = SymbolTable()
        self._reset()

    def _reset(self):
        self.tokens.clear()
        self.tok_start.clear()
        self.tok_start.push_back(0)
        self.event_len.clear()
        self.ev_start.clear()
        self.ev_start.push_back(0)
        self.frequency.clear()
        self.keys.clear()
        self.postings.clear()
        self.starts.clear()
        self.symbol_frequency.clear()
        self.names = _untracked_list()
        self.pid_of = {}                  # str -> int: CPython keeps such dicts untracked
        self.emotives = _untracked_list()
        self.metadata = _untracked_list()
        self.finalized = _untracked_list()
        self.affinity = {}
        self.total_unique_patterns = 0
        self.total_pattern_frequencies = 0
        self.total_symbols_in_patterns_frequencies = 0
        self.learned_symbols = 0
        self._grow_symbols()

    def clear(self):
        """Forget every pattern and statistic (clear-all). Symbol ids are kept."""
        self._reset()

    def __len__(self):
        return len(self.names)

    def __contains__(self, name):
        return name in self.pid_of

    cdef void _grow_symbols(self) noexcept:
        cdef size_t n = len(self.symbols) + 1
        if self.postings.size() < n:
            self.postings.resize(n)
            self.starts.resize(n)
            self.symbol_frequency.resize(n, 0)

    def learn(self, str name, list events, list emotives, list metadata, int persistence):
        """Apply one learn of ``events`` (engine.md §2.2); return the new frequency.

        ``name`` is the bare hash of ``events``; ``emotives`` and ``metadata`` are the
        per-observation dicts supplied with this learn (possibly empty).
        """
        cdef object pid_obj = self.pid_of.get(name)
        cdef pattern_id_t pid
        cdef dict counts = {}
        cdef list ev
        cdef str s
        cdef int64_t length = 0
        for ev in events:
            for s in ev:
                counts[s] = counts.get(s, 0) + 1
                length += 1
        if pid_obj is None:
            pid = self._append(name, events, 1,
                               list(emotives[-persistence:]) if emotives else [],
                               accumulate_metadata(metadata) if metadata else {})
            self.total_unique_patterns += 1
            self.total_pattern_frequencies += 1
        else:
            pid = <pattern_id_t>pid_obj
            self.frequency[pid] += 1
            if emotives or metadata:
                merged = (self.emotives[pid] or []) + list(emotives)
                self.emotives[pid] = merged[-persistence:] or None
                if metadata:
                    self.metadata[pid] = merge_metadata(self.metadata[pid] or {},
                                                        accumulate_metadata(metadata))
        cdef symbol_id_t sid
        for s, c in counts.items():
            sid = self.symbols.find(s)
            self.symbol_frequency[sid] += <int64_t>c
        self.total_symbols_in_patterns_frequencies += length
        if emotives:
            self._add_affinity(counts, average_emotives(emotives))
        return self.frequency[pid]

    def add_record(self, str name, list events, int64_t frequency, list emotives, dict metadata):
        """Load a stored pattern (index rebuild). Statistics are derived from it.

        ``symbol_frequency`` grows by ``frequency × count`` per symbol, exactly what
        ``frequency`` learns would have added; totals follow engine.md §2.2 (D6).
        """
        if name in self.pid_of:
            raise ValueError(f"pattern {name} loaded twice")
        if frequency < 1:
            frequency = 1
        cdef pattern_id_t pid = self._append(name, events, frequency, list(emotives), dict(metadata))
        cdef int64_t length = self.pattern_length(pid)
        cdef int64_t i
        cdef const symbol_id_t* toks = self.pattern_tokens(pid)
        for i in range(length):
            self.symbol_frequency[toks[i]] += frequency
        self.total_unique_patterns += 1
        self.total_pattern_frequencies += 1
        self.total_symbols_in_patterns_frequencies += length * frequency

    def set_affinity(self, dict affinity):
        """Replace the per-symbol affinity table (used when restoring a snapshot)."""
        self.affinity = {s: dict(v) for s, v in affinity.items()}

    cdef pattern_id_t _append(self, str name, list events, int64_t frequency,
                              list emotives, dict metadata) except? 0:
        cdef NameKey key = _name_key(name)
        cdef pattern_id_t pid = <pattern_id_t>len(self.names)
        cdef list ev
        cdef str s
        cdef symbol_id_t sid
        cdef dict counts = {}
        for ev in events:
            self.event_len.push_back(<uint32_t>len(ev))
            for s in ev:
                sid = self.symbols.intern(s)
                self.tokens.push_back(sid)
                counts[sid] = counts.get(sid, 0) + 1
        self._grow_symbols()
        self.tok_start.push_back(<int64_t>self.tokens.size())
        self.ev_start.push_back(<int64_t>self.event_len.size())
        self.frequency.push_back(frequency)
        self.keys.push_back(key)
        cdef Posting post
        for sid_obj, c in counts.items():
            sid = <symbol_id_t>sid_obj
            if self.postings[sid].size() == 0:
                self.learned_symbols += 1
            post.pid = pid
            post.count = <uint32_t>c
            self.postings[sid].push_back(post)
        if self.tok_start[pid + 1] > self.tok_start[pid]:
            self.starts[self.tokens[self.tok_start[pid]]].push_back(pid)
        self.names.append(name)
        self.pid_of[name] = pid
        # Empty values are held as None: no GC-tracked container per plain pattern.
        self.emotives.append(emotives or None)
        self.metadata.append(metadata or None)
        self.finalized.append(None)
        return pid

    def _add_affinity(self, dict counts, dict averaged):
        cdef str s
        for s in counts:
            table = self.affinity.get(s)
            if table is None:
                table = self.affinity[s] = {}
            for e, v in averaged.items():
                table[e] = table.get(e, 0.0) + v

    cdef list events_of(self, pattern_id_t pid):
        cdef list out = []
        cdef list ev
        cdef int64_t e, t = self.tok_start[pid]
        cdef uint32_t k
        cdef list names = self.symbols._names
        for e in range(self.ev_start[pid], self.ev_start[pid + 1]):
            ev = []
            for k in range(self.event_len[e]):
                ev.append(names[self.tokens[t]])
                t += 1
            out.append(ev)
        return out

    cdef object emotives_of(self, pattern_id_t pid):
        cdef list stored = self.emotives[pid]
        return average_emotives(stored) if stored else {}

    # ----------------------------------------------------------------- reading

    def record(self, str name):
        """Return the stored record of ``name`` as a dict, or None.

        Keys: name, pattern_data, length, frequency, emotives, metadata.
        """
        pid_obj = self.pid_of.get(name)
        if pid_obj is None:
            return None
        cdef pattern_id_t pid = <pattern_id_t>pid_obj
        return {
            "name": name,
            "pattern_data": self.events_of(pid),
            "length": self.pattern_length(pid),
            "frequency": self.frequency[pid],
            "emotives": [dict(e) for e in self.emotives[pid] or ()],
            "metadata": {k: list(v) for k, v in (self.metadata[pid] or {}).items()},
        }

    def iter_names(self):
        """Names of every pattern, in learn order."""
        return iter(list(self.names))

    def symbol_stats(self):
        """Per learned symbol: (symbol, frequency, pattern_member_frequency)."""
        cdef symbol_id_t sid
        out = []
        for sid in range(1, self.postings.size()):
            if self.postings[sid].size():
                out.append((self.symbols.symbol(sid), self.symbol_frequency[sid],
                            <int64_t>self.postings[sid].size()))
        return out

    def affinity_table(self):
        """A copy of the per-symbol affinity table."""
        return {s: dict(v) for s, v in self.affinity.items()}

    def finalize(self):
        """Precompute per-pattern entropies over the whole pattern (engine.md §3.8).

        Returns the number of patterns processed. Values stay until the next call.
        """
        from engine.metrics import pattern_entropies
        cdef pattern_id_t pid
        cdef int64_t n = len(self.names)
        for pid in range(n):
            self.finalized[pid] = pattern_entropies(self, pid)
        return n

    def finalized_metrics(self, str name):
        """(entropy, normalized_entropy, global_normalized_entropy) or None."""
        pid_obj = self.pid_of.get(name)
        return None if pid_obj is None else self.finalized[<pattern_id_t>pid_obj]

    def set_finalized(self, str name, tuple values):
        """Restore finalize-training results for ``name`` (storage rebuild)."""
        self.finalized[<pattern_id_t>self.pid_of[name]] = values
