from libcpp.vector cimport vector
from engine.types cimport symbol_id_t, pattern_id_t, Posting, NameKey, int64_t, uint32_t
from engine.symbols cimport SymbolTable


cdef class PatternIndex:
    cdef readonly SymbolTable symbols
    # Pattern contents, flattened: pattern p owns tokens[tok_start[p]:tok_start[p+1]]
    # and event lengths event_len[ev_start[p]:ev_start[p+1]].
    cdef vector[symbol_id_t] tokens
    cdef vector[int64_t] tok_start
    cdef vector[uint32_t] event_len
    cdef vector[int64_t] ev_start
    cdef vector[int64_t] frequency           # per pattern
    cdef vector[NameKey] keys                # per pattern, orders like the hex name
    # Per symbol id (grown as symbols are interned):
    cdef vector[vector[Posting]] postings    # patterns containing the symbol (pmf = size)
    cdef vector[vector[pattern_id_t]] starts # patterns whose first token is the symbol
    cdef vector[int64_t] symbol_frequency    # Σ occurrences over every learn
    # Python-side per-pattern data.
    cdef list names                          # pattern id -> bare 40-hex name
    cdef dict pid_of                         # name -> pattern id
    cdef list emotives                       # pattern id -> list[dict[str, float]] | None
    cdef list metadata                       # pattern id -> dict[str, list[str]] | None
    cdef list finalized                      # pattern id -> None | (entropy, normalized, global)
    cdef dict affinity                       # symbol -> {emotive: Σ averaged value}
    # Knowledge-base totals (engine.md §2.2, §3.8).
    cdef readonly int64_t total_unique_patterns
    cdef readonly int64_t total_pattern_frequencies
    cdef readonly int64_t total_symbols_in_patterns_frequencies
    cdef readonly int64_t learned_symbols    # distinct symbols with pmf > 0

    cdef inline int64_t pattern_length(self, pattern_id_t pid) noexcept nogil:
        return self.tok_start[pid + 1] - self.tok_start[pid]
    cdef inline const symbol_id_t* pattern_tokens(self, pattern_id_t pid) noexcept nogil:
        return self.tokens.data() + self.tok_start[pid]
    cdef inline int64_t pmf(self, symbol_id_t sid) noexcept nogil:
        return <int64_t>self.postings[sid].size() if sid < self.postings.size() else 0
    cdef void _grow_symbols(self) noexcept
    cdef list events_of(self, pattern_id_t pid)
    cdef object emotives_of(self, pattern_id_t pid)
    cdef pattern_id_t _append(self, str name, list events, int64_t frequency,
                              list emotives, dict metadata) except? 0
