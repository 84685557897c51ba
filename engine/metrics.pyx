# cython: language_level=3
"""Scalar metric formulas of engine.md §3.3–§3.7, in the spec's operation order.

Every function here is a pure, GIL-free formula over integers and doubles; the
order of floating-point operations is the one the spec prescribes, so results are
bit-identical to the reference wherever the reference does not go through BLAS.
"""

from libc.math cimport log, log2
from engine.types cimport int64_t, pattern_id_t, symbol_id_t, score_t
from engine.patterns cimport PatternIndex


cdef score_t token_similarity(int64_t lcs, int64_t total) noexcept nogil:
    """((2·M)/T)·100 then /100: the round trip is part of the result (§3.3)."""
    if total == 0:
        return 0.0
    cdef score_t raw = ((2.0 * lcs) / total) * 100.0
    return raw / 100.0


cdef score_t char_similarity(int64_t lcs, int64_t total) noexcept nogil:
    """RapidFuzz ``fuzz.ratio``/100 from the character LCS (100 when both are empty)."""
    if total == 0:
        return 1.0
    cdef score_t norm_sim = 1.0 - (<score_t>(total - 2 * lcs)) / total
    return (norm_sim * 100.0) / 100.0


cdef score_t snr_general(int64_t m, int64_t extras) noexcept nogil:
    """(2m - E)/(2m + E), 0 on a zero denominator (§3.6)."""
    cdef score_t den = 2.0 * m + extras
    if den == 0:
        return 0.0
    return (2.0 * m - extras) / den


cdef score_t fragmentation_term(int64_t nb) noexcept nogil:
    """The potential's last term: 0 when there is no block, else 1/(fragmentation+1)."""
    if nb == 0:
        return 0.0
    return 1.0 / ((<score_t>(nb - 1)) + 1)


def similarity(int64_t lcs, int64_t total):
    """Python access to :c:func:`token_similarity` (for tests)."""
    return token_similarity(lcs, total)


cdef tuple entropies(dict counts, int64_t n, dict probabilities, int64_t total_symbols):
    """(entropy, normalized_entropy, global_normalized_entropy) of a symbol multiset.

    ``counts`` maps symbol -> count in first-occurrence order, ``n`` is their sum,
    ``probabilities`` maps a symbol to p(s) (absent means 0); ``total_symbols`` is
    the base of the normalised logarithms (both are 0 when it is at most 1).
    """
    cdef double h = 0.0, hn = 0.0, g = 0.0, p, q, log_n = 0.0
    cdef bint normalize = total_symbols > 1
    if n == 0:
        return (0.0, 0.0, 0.0)
    if normalize:
        log_n = log(<double>total_symbols)
    for sym, c in counts.items():
        p = (<double>c) / n
        h = h + p * log2(p)
        if normalize:
            hn = hn + p * (log(p) / log_n)
            q = probabilities.get(sym, 0.0)
            if q > 0:
                g = g + q * (log(q) / log_n)
    # "+ 0.0" turns a negated zero into +0.0 and changes no other value.
    return (-h + 0.0, (-hn + 0.0) if normalize else 0.0, (-g + 0.0) if normalize else 0.0)


def pattern_entropies(PatternIndex index, pattern_id_t pid):
    """finalize-training values of one pattern over its whole token list (§3.8)."""
    cdef int64_t n = index.pattern_length(pid), i
    cdef const symbol_id_t* toks = index.pattern_tokens(pid)
    cdef dict counts = {}
    for i in range(n):
        counts[toks[i]] = counts.get(toks[i], 0) + 1
    cdef int64_t U = index.total_unique_patterns
    probs = {s: (index.pmf(s) / U if U else 0.0) for s in counts}
    return entropies(counts, n, probs, index.learned_symbols)
