# cython: language_level=3
"""Predictions for one STM against one PatternIndex (engine.md §3).

Pipeline of the general path (STM of two or more symbols):

1. Retrieval. Σ_s min(count_A(s), count_B(s)) over shared symbols bounds the LCS,
   so a pattern whose bound similarity is below ``recall_threshold`` cannot pass
   and is never aligned; the bound is accumulated from the inverted index, GIL
   free. ``recall_threshold == 0`` and character mode admit every pattern.
2. Alignment of each retained pattern (bit-parallel LCS, difflib blocks, the
   second matcher, event mapping with the boundary fix), GIL free.
3. Candidates in ascending name order; top-K pruning; ensemble metrics.
4. Ranking by ``rank_sort_algo`` (ties: ascending name), truncation, and only
   then are Python result objects built for the survivors.

The single-symbol path (§3.9) reads the first-symbol index.
"""

cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport calloc, free
from libc.math cimport log, log2, log10, pow, sqrt, fabs
from libcpp.vector cimport vector
from libcpp.unordered_map cimport unordered_map
from libcpp.algorithm cimport sort as cpp_sort, stable_sort, partial_sort
from libcpp.utility cimport pair

from engine.types cimport (symbol_id_t, pattern_id_t, score_t, Posting, NameKey,
                           int32_t, int64_t, uint32_t, uint64_t)
from engine.symbols cimport SymbolTable
from engine.patterns cimport PatternIndex
from engine.matching cimport Block, lcs_dp, lcs_bits, matching_blocks, matched_size
from engine.metrics cimport (token_similarity, char_similarity, snr_general,
                             fragmentation_term)

from engine.errors import InvalidConfiguration
from engine.fuzzy import fuzzy_matches, ratio
from engine.results import (Anomaly, FuturePotential, Prediction, PredictionSet,
                            SingleSymbolPrediction)

# Indices of the rankable metrics inside Metrics.value (engine.md §3.12).
cdef enum:
    K_POTENTIAL, K_SIMILARITY, K_EVIDENCE, K_CONFIDENCE, K_SNR, K_FRAGMENTATION,
    K_FREQUENCY, K_NORMALIZED_ENTROPY, K_GLOBAL_NORMALIZED_ENTROPY, K_ITFDF,
    K_CONFLUENCE, K_PREDICTIVE_INFORMATION, K_BAYESIAN_POSTERIOR, K_BAYESIAN_PRIOR,
    K_BAYESIAN_LIKELIHOOD, K_TFIDF, K_WEIGHTED_SIMILARITY, K_WEIGHTED_EVIDENCE,
    K_WEIGHTED_CONFIDENCE, K_WEIGHTED_SNR,
    K_ENTROPY, K_PATTERN_PROBABILITY, K_WEIGHTED_STRENGTH,
    N_METRICS

RANK_KEY_INDEX = {
    "potential": K_POTENTIAL, "similarity": K_SIMILARITY, "evidence": K_EVIDENCE,
    "confidence": K_CONFIDENCE, "snr": K_SNR, "fragmentation": K_FRAGMENTATION,
    "frequency": K_FREQUENCY, "normalized_entropy": K_NORMALIZED_ENTROPY,
    "global_normalized_entropy": K_GLOBAL_NORMALIZED_ENTROPY,
    "itfdf_similarity": K_ITFDF, "confluence": K_CONFLUENCE,
    "predictive_information": K_PREDICTIVE_INFORMATION,
    "bayesian_posterior": K_BAYESIAN_POSTERIOR, "bayesian_prior": K_BAYESIAN_PRIOR,
    "bayesian_likelihood": K_BAYESIAN_LIKELIHOOD, "tfidf_score": K_TFIDF,
    "weighted_similarity": K_WEIGHTED_SIMILARITY, "weighted_evidence": K_WEIGHTED_EVIDENCE,
    "weighted_confidence": K_WEIGHTED_CONFIDENCE, "weighted_snr": K_WEIGHTED_SNR,
}


cdef struct Cand:
    pattern_id_t pid
    NameKey key
    int64_t length          # len(flat(pattern))
    score_t similarity
    int64_t nb              # number of matching blocks
    int64_t block_start     # offset of the blocks in Query.blocks
    int64_t m               # len(matches)
    int64_t extras_flat     # E of §3.4 (or the fuzzy extras count)
    int64_t e1              # present = events[e1:e2] after the boundary fix
    int64_t e2
    int64_t plen            # Σ len(present events)
    int64_t frequency
    double value[N_METRICS]


cdef struct Query:
    # The STM as local ids: the distinct STM symbols numbered in first-seen order.
    vector[int32_t] b
    vector[symbol_id_t] local_sid    # local id -> global id (0: never interned)
    vector[uint32_t] local_count     # local id -> occurrences in the STM
    vector[uint64_t] masks           # local id -> bit positions in b (len(b) <= 64)
    # global id -> local id: a 1024-bit prefilter (most pattern tokens are not in
    # the STM) in front of an open-addressing table (linear probing, 0 = empty).
    uint64_t local_filter[16]
    vector[symbol_id_t] slot_sid
    vector[int32_t] slot_lid
    uint32_t slot_mask
    vector[Block] blocks             # blocks of every retained candidate
    vector[Cand] cands


cdef extern from *:
    """
    #include <vector>
    #include <cstdint>
    // Per-thread scratch of _retrieve: one counter per pattern, all zero between
    // calls (the caller resets exactly the entries it touched). Reused instead of
    // a calloc per query, whose zeroing cost grows with the knowledge base (4 MB
    // at 1M patterns) although a query touches only the patterns it shares a
    // symbol with. Predictions run concurrently on several threads, hence
    // thread_local.
    static uint32_t* kato_retrieve_counts(size_t n) {
        static thread_local std::vector<uint32_t> counts;
        if (counts.size() < n) counts.resize(n, 0);
        return counts.data();
    }
    // Same discipline: one bit per pattern, set when a posting touches it.
    static uint64_t* kato_retrieve_bits(size_t words) {
        static thread_local std::vector<uint64_t> bits;
        if (bits.size() < words) bits.resize(words, 0);
        return bits.data();
    }
    static inline int kato_ctz64(uint64_t x) { return __builtin_ctzll(x); }
    """
    uint32_t* kato_retrieve_counts(size_t n) nogil
    uint64_t* kato_retrieve_bits(size_t words) nogil
    int kato_ctz64(uint64_t x) nogil


cdef bint _key_less(const NameKey& x, const NameKey& y) noexcept nogil:
    if x.hi != y.hi:
        return x.hi < y.hi
    if x.mid != y.mid:
        return x.mid < y.mid
    return x.lo < y.lo


cdef struct NameOrder:
    NameKey key
    size_t t


cdef bint _order_less(const NameOrder& x, const NameOrder& y) noexcept nogil:
    return _key_less(x.key, y.key)


cdef void _sort_by_name(vector[Cand]& cands) noexcept nogil:
    # Names are unique, so any sort is the stable one; sorting small keys and
    # gathering once moves each (large) Cand one time instead of log n times.
    cdef size_t t, n = cands.size()
    cdef vector[NameOrder] order
    cdef vector[Cand] ordered
    order.resize(n)
    for t in range(n):
        order[t].key = cands[t].key
        order[t].t = t
    cpp_sort(order.begin(), order.end(), _order_less)
    ordered.reserve(n)
    for t in range(n):
        ordered.push_back(cands[order[t].t])
    cands.swap(ordered)


cdef struct PreRank:
    double value                     # pre-potential of top-K pruning (§3.7)
    size_t t                         # position in Query.cands (name order)


cdef bint _pre_greater(const PreRank& x, const PreRank& y) noexcept nogil:
    return x.value > y.value


cdef struct SingleRank:
    double potential                 # of a single-symbol prediction (§3.9)
    NameKey key
    pattern_id_t pid


cdef bint _single_before(const SingleRank& x, const SingleRank& y) noexcept nogil:
    # potential descending, ties by ascending name (sorted by name, then stably by potential)
    if x.potential != y.potential:
        return x.potential > y.potential
    return _key_less(x.key, y.key)


# -------------------------------------------------------------- retrieval/align

cdef inline int32_t _local_of(const Query* q, symbol_id_t sid) noexcept nogil:
    """The local id of global symbol ``sid``, -1 when it is not in the STM."""
    if not ((q.local_filter[(sid >> 6) & 15] >> (sid & 63)) & 1):
        return -1
    cdef uint32_t h = (sid * <uint32_t>2654435761U) & q.slot_mask
    while True:
        if q.slot_sid[h] == sid:
            return q.slot_lid[h]
        if q.slot_sid[h] == 0:
            return -1
        h = (h + 1) & q.slot_mask


cdef void _index_local(Query* q) noexcept nogil:
    """Build the lookup of :func:`_local_of` from ``q.local_sid``."""
    cdef uint32_t cap = 8, h
    cdef size_t lid
    cdef symbol_id_t sid
    while cap < 4 * q.local_sid.size():
        cap <<= 1
    q.slot_sid.assign(cap, 0)
    q.slot_lid.assign(cap, -1)
    q.slot_mask = cap - 1
    for lid in range(16):
        q.local_filter[lid] = 0
    for lid in range(q.local_sid.size()):
        sid = q.local_sid[lid]
        if sid == 0:
            continue
        q.local_filter[(sid >> 6) & 15] |= (<uint64_t>1) << (sid & 63)
        h = (sid * <uint32_t>2654435761U) & q.slot_mask
        while q.slot_sid[h] != 0:
            h = (h + 1) & q.slot_mask
        q.slot_sid[h] = sid
        q.slot_lid[h] = <int32_t>lid


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _project(PatternIndex index, Query* q, pattern_id_t pid,
                   vector[int32_t]& out) noexcept nogil:
    cdef int64_t n = index.pattern_length(pid), i
    cdef const symbol_id_t* toks = index.pattern_tokens(pid)
    out.resize(n)
    for i in range(n):
        out[i] = _local_of(q, toks[i])


cdef void _retrieve(PatternIndex index, Query* q, score_t threshold, bint full_scan,
                    vector[pattern_id_t]& out) noexcept nogil:
    """Patterns whose similarity can reach ``threshold`` (exact upper bound)."""
    cdef int64_t n_patterns = <int64_t>index.frequency.size()
    cdef int64_t lb = <int64_t>q.b.size()
    cdef pattern_id_t pid
    cdef size_t l, t
    cdef symbol_id_t sid
    cdef uint32_t c
    cdef Posting* post
    out.clear()
    if full_scan:
        for pid in range(<pattern_id_t>n_patterns):
            out.push_back(pid)
        return
    # Touched patterns are marked in a bitmap and visited in ascending id order, so
    # the counts and the offsets (tok_start) are read as a forward sweep instead of
    # at random: at 1M patterns a query touches ~100k of them and the random reads
    # were most of retrieval. Candidates are re-sorted by name later, so this order
    # changes nothing downstream.
    cdef uint32_t* shared = kato_retrieve_counts(n_patterns + 1)
    cdef size_t n_words = <size_t>((n_patterns + 63) >> 6)
    cdef uint64_t* seen = kato_retrieve_bits(n_words)
    for l in range(q.local_sid.size()):
        sid = q.local_sid[l]
        if sid == 0 or sid >= index.postings.size():
            continue
        for t in range(index.postings[sid].size()):
            post = &index.postings[sid][t]
            c = post.count if post.count < q.local_count[l] else q.local_count[l]
            shared[post.pid] += c
            seen[post.pid >> 6] |= (<uint64_t>1) << (post.pid & 63)
    # need[T]: the least shared count whose bound similarity reaches the threshold
    # for a total length T (T + 1: none). token_similarity is monotone in the count,
    # so `shared >= need[T]` is exactly `token_similarity(shared, T) >= threshold`,
    # without two divisions per touched pattern (~100k of them at 1M patterns).
    # Each entry is found with the exact test itself, from just below the root.
    cdef vector[int64_t] need
    cdef int64_t total, lo
    cdef size_t w
    cdef uint64_t word
    need.resize(256, -1)
    for w in range(n_words):
        word = seen[w]
        if word == 0:
            continue
        seen[w] = 0
        while word != 0:
            pid = <pattern_id_t>((w << 6) + <size_t>kato_ctz64(word))
            word &= word - 1
            total = index.pattern_length(pid) + lb
            if total >= <int64_t>need.size():
                need.resize(total + 1, -1)
            if need[total] < 0:
                # Start just below the real-number root and step up with the exact test.
                lo = <int64_t>(threshold * total / 2.0) - 2
                if lo < 0:
                    lo = 0
                while lo > 0 and token_similarity(lo, total) >= threshold:
                    lo -= 1
                while lo <= total and token_similarity(lo, total) < threshold:
                    lo += 1
                need[total] = lo
            if <int64_t>shared[pid] >= need[total]:
                out.push_back(pid)
            shared[pid] = 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint _align(PatternIndex index, Query* q, pattern_id_t pid, score_t similarity,
                 const int32_t* a, int64_t la, int32_t first_match, vector[Block]& found,
                 vector[Block]& scratch, vector[int64_t]& work, Cand* c) noexcept nogil:
    """Fill ``c`` for one candidate whose similarity passed (engine.md §3.4–§3.5).

    ``first_match`` is the local id of matches[0] when fuzzy matching supplies the
    matches, -2 to take it from the exact blocks, -1 when there is no match.
    """
    cdef int64_t lb = <int64_t>q.b.size()
    cdef const int32_t* b = q.b.data()
    cdef size_t start = q.blocks.size()
    matching_blocks(a, la, b, lb, found, work)
    cdef int64_t nb = <int64_t>found.size(), t, i0, pf, m = 0
    for t in range(nb):
        q.blocks.push_back(found[t])
        m += found[t].n
    if nb == 0:
        i0 = 0
        pf = la
    else:
        i0 = found[0].i
        pf = found[nb - 1].i + found[nb - 1].n - i0
    c.pid = pid
    c.key = index.keys[pid]
    c.length = la
    c.similarity = similarity
    c.nb = nb
    c.block_start = <int64_t>start
    c.m = m
    c.extras_flat = lb - matched_size(a + i0, pf, b, lb, scratch, work)
    c.frequency = index.frequency[pid] if index.frequency[pid] > 0 else 1
    # Event mapping: an event partly inside the present region belongs to present.
    cdef int64_t ev0 = index.ev_start[pid], n_ev = index.ev_start[pid + 1] - ev0
    cdef int64_t c1 = i0, c2 = 0, e = 0, e1
    while c2 < c1 and e < n_ev:
        c2 += index.event_len[ev0 + e]
        e += 1
    e1 = e
    c1 += pf
    while c2 < c1 and e < n_ev:
        c2 += index.event_len[ev0 + e]
        e += 1
    # Boundary fix, by value (W6): the first match found in the last past event
    # pulls that event into present.
    cdef int64_t off, k
    cdef int32_t first
    if first_match == -2:
        first = b[found[0].j] if m > 0 else -1
    else:
        first = first_match
    if e1 > 0 and first >= 0:
        off = 0
        for k in range(e1 - 1):
            off += index.event_len[ev0 + k]
        for k in range(off, off + index.event_len[ev0 + e1 - 1]):
            if a[k] == first:
                e1 -= 1
                break
    c.e1 = e1
    c.e2 = e
    cdef int64_t plen = 0
    for k in range(e1, e):
        plen += index.event_len[ev0 + k]
    c.plen = plen
    return True


# ------------------------------------------------------ ensemble helpers (§3.7)
# The per-candidate sums of the ensemble metrics run over C arrays instead of
# dicts; every float operation and its order are those of the formulas they
# replace (left folds, symbols in first-occurrence or ascending-name order).

ctypedef unordered_map[symbol_id_t, double] ProbMap


cdef inline double _prob_get(ProbMap& prob, symbol_id_t sid) noexcept nogil:
    """p(s) from the probability cache, 0.0 for a symbol not in it (dict.get)."""
    cdef ProbMap.iterator it = prob.find(sid)
    return 0.0 if it == prob.end() else cython.operator.dereference(it).second


cdef inline bint _prob_has(ProbMap& prob, symbol_id_t sid) noexcept nogil:
    return prob.find(sid) != prob.end()


cdef void _count_first_seen(const symbol_id_t* toks, int64_t n,
                            unordered_map[symbol_id_t, size_t]& at,
                            vector[symbol_id_t]& uniq, vector[int64_t]& cnt) noexcept nogil:
    """Distinct symbols of toks[:n] in first-occurrence order, with their counts."""
    cdef int64_t k
    cdef unordered_map[symbol_id_t, size_t].iterator it
    at.clear()
    uniq.clear()
    cnt.clear()
    for k in range(n):
        it = at.find(toks[k])
        if it == at.end():
            at[toks[k]] = uniq.size()
            uniq.push_back(toks[k])
            cnt.push_back(1)
        else:
            cnt[cython.operator.dereference(it).second] += 1


cdef void _name_order(SymbolTable symbols, vector[symbol_id_t]& uniq,
                      vector[size_t]& order) noexcept nogil:
    """Positions of ``uniq`` in ascending symbol-name order (names are distinct)."""
    cdef size_t i, j, v
    order.resize(uniq.size())
    for i in range(uniq.size()):
        order[i] = i
    for i in range(1, order.size()):   # insertion sort: a handful of symbols
        v = order[i]
        j = i
        while j > 0 and symbols.less(uniq[v], uniq[order[j - 1]]):
            order[j] = order[j - 1]
            j -= 1
        order[j] = v


cdef void _entropies(vector[symbol_id_t]& uniq, vector[int64_t]& cnt, int64_t n,
                     ProbMap& prob, int64_t total_symbols, double* out) noexcept nogil:
    """engine.metrics.entropies over (uniq, cnt) in that order: out[0..2]."""
    cdef double h = 0.0, hn = 0.0, g = 0.0, p, qv, log_n = 0.0
    cdef bint normalize = total_symbols > 1
    cdef size_t i
    if n == 0:
        out[0] = 0.0
        out[1] = 0.0
        out[2] = 0.0
        return
    if normalize:
        log_n = log(<double>total_symbols)
    for i in range(uniq.size()):
        p = (<double>cnt[i]) / n
        h = h + p * log2(p)
        if normalize:
            hn = hn + p * (log(p) / log_n)
            qv = _prob_get(prob, uniq[i])
            if qv > 0:
                g = g + qv * (log(qv) / log_n)
    # "+ 0.0" turns a negated zero into +0.0 and changes no other value.
    out[0] = -h + 0.0
    out[1] = (-hn + 0.0) if normalize else 0.0
    out[2] = (-g + 0.0) if normalize else 0.0


cdef double _tfidf(vector[symbol_id_t]& uniq, vector[int64_t]& cnt, int64_t x_len,
                   ProbMap& prob, int64_t U) noexcept nogil:
    """tfidf_score (§3.7) over (uniq, cnt) in first-occurrence order."""
    cdef double tf_sum = 0.0
    cdef int64_t n_s
    cdef size_t i
    if uniq.size() == 0 or U == 0:
        return 0.0
    for i in range(uniq.size()):
        if _prob_has(prob, uniq[i]):
            n_s = <int64_t>(_prob_get(prob, uniq[i]) * <double>U)
            if n_s < 1:
                n_s = 1
        else:
            n_s = 1
        tf_sum = tf_sum + ((<double>cnt[i]) / x_len) * (log2((<double>U) / n_s) + 1)
    return tf_sum / <double>uniq.size()


# ------------------------------------------------------------------ the query

cdef class _Scorer:
    """State of one prediction request; lives for one call of :func:`predict`."""

    cdef PatternIndex index
    cdef Query q
    cdef list stm               # list[list[str]]
    cdef list state             # flat(stm)
    cdef object config
    cdef list names             # symbol names of the index
    cdef dict fuzzy_by_pid      # pattern id -> (matches, anomalies, extras count)

    def __cinit__(self, PatternIndex index, list stm, object config):
        self.index = index
        self.stm = stm
        self.config = config
        self.names = index.symbols._names
        self.fuzzy_by_pid = {}
        self.state = [s for ev in stm for s in ev]
        cdef dict local = {}
        cdef str s
        cdef int32_t lid
        cdef symbol_id_t sid
        for s in self.state:
            lid = local.get(s, -1)
            if lid < 0:
                lid = <int32_t>len(local)
                local[s] = lid
                sid = index.symbols.find(s)
                self.q.local_sid.push_back(sid)
                self.q.local_count.push_back(0)
            self.q.local_count[lid] += 1
            self.q.b.push_back(lid)
        _index_local(&self.q)
        cdef size_t j
        if self.q.b.size() <= 64:
            self.q.masks.resize(self.q.local_sid.size(), 0)
            for j in range(self.q.b.size()):
                self.q.masks[self.q.b[j]] |= (<uint64_t>1) << j

    # ---------------------------------------------------------- general path

    cdef int collect(self) except -1:
        """Retrieve, score and align candidates into q.cands (name order)."""
        cdef score_t threshold = self.config.recall_threshold
        cdef bint token_mode = self.config.use_token_matching
        cdef bint full_scan = threshold <= 0.0 or not token_mode
        cdef vector[pattern_id_t] pids
        cdef vector[int32_t] a
        cdef vector[int64_t] row, work
        cdef vector[Block] scratch, aligned
        cdef Cand cand
        cdef size_t t
        cdef int64_t lcs, la, lb = <int64_t>self.q.b.size()
        cdef score_t sim
        cdef pattern_id_t pid
        cdef Query* q = &self.q
        cdef PatternIndex index = self.index
        cdef bint use_bits = lb <= 64
        cdef object char_sims = None
        cdef int32_t first_match = -2
        cdef bint fuzzy = self.config.fuzzy_token_threshold > 0
        row.resize(lb + 1)
        with nogil:
            _retrieve(index, q, threshold, full_scan, pids)
        if not token_mode:
            char_sims = self._char_similarities(pids)
        filters = self._filter_stages()
        cdef bint filtered = filters is not None
        with nogil:
            for t in range(pids.size()):
                pid = pids[t]
                _project(index, q, pid, a)
                la = <int64_t>a.size()
                if token_mode:
                    if use_bits:
                        lcs = lcs_bits(a.data(), la, q.masks.data(), lb)
                    else:
                        lcs = lcs_dp(a.data(), la, q.b.data(), lb, row.data())
                    sim = token_similarity(lcs, la + lb)
                else:
                    with gil:
                        sim = char_sims[t]
                if sim < threshold:
                    continue
                if filtered:
                    with gil:
                        if not self._passes_filters(filters, pid, a):
                            continue
                if fuzzy:
                    with gil:
                        first_match = self._fuzzy(pid)
                _align(index, q, pid, sim, a.data(), la, first_match, aligned, scratch, work, &cand)
                if cand.nb == 0 and threshold > 0:
                    continue
                if fuzzy:
                    with gil:
                        found = self.fuzzy_by_pid[pid]
                        cand.m = len(found[0])
                        cand.extras_flat = found[2]
                q.cands.push_back(cand)
            _sort_by_name(q.cands)
        return 0

    cdef list _char_similarities(self, vector[pattern_id_t]& pids):
        # Character mode (use_token_matching false): RapidFuzz ratio of the joined
        # token strings; a full scan with a DP LCS over code points.
        cdef str joined_b = " ".join(self.state)
        cdef vector[int32_t] cb = [ord(ch) for ch in joined_b]
        cdef vector[int32_t] ca
        cdef vector[int64_t] row
        cdef list out = []
        cdef size_t t
        cdef int64_t lcs
        row.resize(cb.size() + 1)
        for t in range(pids.size()):
            joined_a = " ".join([s for ev in self.index.events_of(pids[t]) for s in ev])
            ca = [ord(ch) for ch in joined_a]
            lcs = lcs_dp(ca.data(), ca.size(), cb.data(), cb.size(), row.data())
            out.append(char_similarity(lcs, <int64_t>(ca.size() + cb.size())))
        return out

    cdef object _filter_stages(self):
        # engine.md §3.2. Only stages that can drop a candidate are returned:
        # `rapidfuzz` repeats the threshold test and `bloom` is a prescreen without
        # false negatives, so both keep every candidate. `minhash` estimates the
        # Jaccard index of symbol sets with LSH; this engine computes that index
        # exactly instead (keep iff Jaccard >= minhash_threshold), which is what
        # the estimate approximates and is deterministic. A pipeline whose first
        # stage is not a DB stage skips that stage (the reference errors there).
        pipeline = list(self.config.filter_pipeline)
        if not pipeline:
            return None
        stages = []
        for position, stage in enumerate(pipeline):
            if position == 0 and stage not in ("length", "jaccard", "minhash"):
                continue
            if stage in ("length", "jaccard", "minhash"):
                stages.append(stage)
        return stages or None

    cdef bint _passes_filters(self, list stages, pattern_id_t pid, vector[int32_t]& a):
        cfg = self.config
        n_state = len(self.state)
        length = self.index.pattern_length(pid)
        for stage in stages:
            if stage == "length":
                # W9: 0 / 0.0 means "unset" and falls back to the default.
                min_ratio = cfg.length_min_ratio or 0.5
                max_ratio = cfg.length_max_ratio or 2.0
                min_len = max(1, int(n_state * min_ratio))
                max_len = int(n_state * max_ratio)
                if not (min_len <= length <= max_len):
                    return False
            else:
                if stage == "jaccard":
                    threshold = cfg.jaccard_threshold or 0.3
                    min_overlap = cfg.jaccard_min_overlap or 2
                else:
                    threshold = cfg.minhash_threshold or 0.7
                    min_overlap = 0
                toks = self.index.pattern_tokens(pid)
                pattern_set = {toks[i] for i in range(length)}
                overlap = len({x for x in a if x >= 0})
                union = len(pattern_set) + self.q.local_sid.size() - overlap
                if overlap < min_overlap or (overlap / union if union else 0.0) < threshold:
                    return False
        return True

    cdef list matches_of(self, Cand* c):
        """matches of §3.4: state tokens of every block (symbol names)."""
        cdef list out = []
        cdef int64_t t, j
        cdef Block blk
        for t in range(c.nb):
            blk = self.q.blocks[c.block_start + t]
            for j in range(blk.j, blk.j + blk.n):
                out.append(self.state[j])
        return out

    def ensemble(self):
        """Top-K pruning and ensemble metrics (§3.7); returns (order, futures)."""
        cdef Query* q = &self.q
        cdef PatternIndex index = self.index
        cdef size_t n = q.cands.size(), t
        cdef int64_t max_predictions = self.config.max_predictions
        cdef Cand* c
        cdef list kept
        cdef vector[PreRank] pre
        cdef PreRank pr
        cdef vector[size_t] top
        # The per-candidate arithmetic in C: the same binary64 operations in the same
        # order as on Python floats (integer operands convert exactly, being < 2**53),
        # so every metric is bit for bit what boxed floats gave.
        cdef int64_t freq, ensemble_freq, F
        cdef double itfdf, confluence, entropy, normalized, global_normalized, tfidf
        cdef double probability, strength, agg, group_total, bayes_total, ev, co, sn
        if <int64_t>n > 3 * max_predictions:
            # Keep the 3·max_predictions best by the pre-potential; ties keep name
            # order (a stable descending sort, as sorted(reverse=True) does).
            pre.reserve(n)
            for t in range(n):
                c = &q.cands[t]
                pr.value = ((self._evidence(c) + self._confidence(c)) * self._snr(c)
                            + fragmentation_term(c.nb))
                pr.t = t
                pre.push_back(pr)
            stable_sort(pre.begin(), pre.end(), _pre_greater)
            for t in range(<size_t>(3 * max_predictions)):
                top.push_back(pre[t].t)
            cpp_sort(top.begin(), top.end())
            kept = [t for t in top]
        else:
            kept = list(range(n))
        F = index.total_pattern_frequencies
        total_symbols = index.learned_symbols
        # Symbol probability cache (§3.7): every symbol of matches and missing of every
        # kept candidate. matches ∪ missing = the present symbols, plus, with fuzzy
        # matching, the matched state tokens (which need not be in the pattern).
        cdef bint weighted = self.config.affinity_emotive is not None
        cdef ProbMap prob
        cdef int64_t Uc = index.total_unique_patterns
        cdef vector[int64_t] pres_off        # kept position -> offset of its present tokens
        cdef list match_lists = []
        cdef const symbol_id_t* ptoks
        cdef int64_t off, k
        cdef symbol_id_t psid
        for t in kept:
            c = &q.cands[t]
            off = index.tok_start[c.pid]
            for k in range(c.e1):
                off += index.event_len[index.ev_start[c.pid] + k]
            pres_off.push_back(off)
            ptoks = index.tokens.data() + off
            found = self.fuzzy_by_pid.get(c.pid)
            # Exact matches are needed here only by the weighted metrics; otherwise
            # build() makes them for the (at most max_predictions) ranked ones.
            if found is not None:
                matches = found[0]
            else:
                matches = self.matches_of(c) if weighted else None
            match_lists.append(matches)
            for k in range(c.plen):
                psid = ptoks[k]
                if not _prob_has(prob, psid):
                    prob[psid] = (<double>index.pmf(psid)) / Uc if Uc else 0.0
            if found is not None:
                for s in matches:
                    psid = index.symbols.find(s)
                    if psid != 0 and not _prob_has(prob, psid):
                        prob[psid] = (<double>index.pmf(psid)) / Uc if Uc else 0.0
        ensemble_freq = 0
        for t in kept:
            ensemble_freq += q.cands[t].frequency
        # State vector of itfdf_similarity, over symbols in ascending string order.
        cdef dict state_counts = {}
        for lid in range(q.local_sid.size()):
            sid = q.local_sid[lid]
            if sid != 0:
                state_counts[sid] = q.local_count[lid]
        state_syms = self._sorted_symbols(state_counts)
        cdef double sv_sq = 0.0, x
        for sid in state_syms:
            x = _prob_get(prob, <symbol_id_t>sid) * state_counts[sid]
            sv_sq = sv_sq + x * x
        cdef double sv_norm = sqrt(sv_sq)
        # Predictive-information groups over non-empty futures, first-seen order.
        groups = {}
        group_of = []
        for pos, t in enumerate(kept):
            c = &q.cands[t]
            key = self._future_key(c)
            if key is None:
                group_of.append(None)
                continue
            g = groups.get(key)
            if g is None:
                g = groups[key] = [0.0, 0, t]
            g[0] = g[0] + c.frequency * c.similarity
            g[1] += 1
            group_of.append(g)
        group_total = 0.0
        for g in groups.values():
            group_total = group_total + g[0]
        bayes_total = 0.0
        for t in kept:
            c = &q.cands[t]
            bayes_total = bayes_total + c.similarity * (c.frequency / ensemble_freq)
        affinity = self.config.affinity_emotive
        cdef double dot, pv_sq, cos, distance, denom, peh, log_sum, qv
        cdef double ent[3]
        cdef unordered_map[symbol_id_t, size_t] at
        cdef vector[symbol_id_t] uniq
        cdef vector[int64_t] cnt
        cdef vector[size_t] order
        cdef size_t i
        cdef int32_t state_lid
        for pos, t in enumerate(kept):
            c = &q.cands[t]
            freq = c.frequency
            ptoks = index.tokens.data() + pres_off[pos]
            _count_first_seen(ptoks, c.plen, at, uniq, cnt)
            _name_order(index.symbols, uniq, order)
            dot = 0.0
            pv_sq = 0.0
            for i in range(order.size()):
                psid = uniq[order[i]]
                x = _prob_get(prob, psid) * <double>cnt[order[i]]
                pv_sq = pv_sq + x * x
                state_lid = _local_of(q, psid)
                if state_lid >= 0:
                    dot = dot + x * (_prob_get(prob, psid) * <double>q.local_count[state_lid])
            denom = sqrt(pv_sq) * sv_norm
            cos = dot / denom if denom != 0 else 0.0
            distance = 1.0 if sv_norm == 0 else 1 - cos
            itfdf = 1 - (distance * freq / ensemble_freq) if ensemble_freq else 0.0
            peh = freq / F if F else 0.0
            if c.plen:
                log_sum = 0.0
                for k in range(c.plen):
                    qv = _prob_get(prob, ptoks[k])
                    log_sum = log_sum + log10(qv if qv > 0 else 1e-10)
                confluence = peh * (1 - pow(10.0, log_sum))
            else:
                confluence = 0.0
            fin = index.finalized[c.pid]
            if fin is not None:
                entropy, normalized, global_normalized = fin
                _count_first_seen(index.pattern_tokens(c.pid), c.length, at, uniq, cnt)
                tfidf = _tfidf(uniq, cnt, c.length, prob, Uc)
            else:
                _entropies(uniq, cnt, c.plen, prob, total_symbols, ent)
                entropy, normalized, global_normalized = ent[0], ent[1], ent[2]
                tfidf = _tfidf(uniq, cnt, c.plen, prob, Uc)
            probability = freq / ensemble_freq
            strength = c.similarity * probability
            g = group_of[pos]
            agg = (g[0] / group_total if group_total != 0 else 0.0) if g is not None else 0.0
            c.value[K_PREDICTIVE_INFORMATION] = strength / agg if (g is not None and agg > 0) else 0.0
            c.value[K_SIMILARITY] = c.similarity
            c.value[K_EVIDENCE] = self._evidence(c)
            c.value[K_CONFIDENCE] = self._confidence(c)
            c.value[K_SNR] = self._snr(c)
            c.value[K_FRAGMENTATION] = <double>(c.nb - 1)
            c.value[K_FREQUENCY] = <double>freq
            c.value[K_ENTROPY] = entropy
            c.value[K_NORMALIZED_ENTROPY] = normalized
            c.value[K_GLOBAL_NORMALIZED_ENTROPY] = global_normalized
            c.value[K_ITFDF] = itfdf
            c.value[K_CONFLUENCE] = confluence
            c.value[K_TFIDF] = tfidf
            c.value[K_PATTERN_PROBABILITY] = probability
            c.value[K_WEIGHTED_STRENGTH] = strength
            c.value[K_BAYESIAN_PRIOR] = probability
            c.value[K_BAYESIAN_LIKELIHOOD] = c.similarity
            c.value[K_BAYESIAN_POSTERIOR] = (c.similarity * probability / bayes_total
                                             if bayes_total != 0 else 0.0)
            ev = c.value[K_EVIDENCE]
            co = c.value[K_CONFIDENCE]
            sn = c.value[K_SNR]
            if affinity is not None:
                pres = [ptoks[k] for k in range(c.plen)]
                ws, we, wc, wsnr = self._weighted(match_lists[pos], pres, c)
                c.value[K_WEIGHTED_SIMILARITY] = ws
                c.value[K_WEIGHTED_EVIDENCE] = we
                c.value[K_WEIGHTED_CONFIDENCE] = wc
                c.value[K_WEIGHTED_SNR] = wsnr
                ev, co, sn = we, wc, wsnr
            c.value[K_POTENTIAL] = (ev + co) * sn + itfdf + fragmentation_term(c.nb)
        futures = []
        for g in groups.values():
            futures.append((g[0] / group_total if group_total != 0 else 0.0, g))
        futures.sort(key=lambda item: item[0], reverse=True)
        future_potentials = [
            FuturePotential(self._future_events(&q.cands[g[2]]), agg, g[1], g[0])
            for agg, g in futures
        ]
        return kept, match_lists, future_potentials

    cdef list _sorted_symbols(self, dict counts):
        return sorted(counts, key=self.names.__getitem__)

    cdef double _evidence(self, Cand* c):
        return c.m / c.length if c.length else 0.0

    cdef double _confidence(self, Cand* c):
        return c.m / c.plen if c.plen else 0.0

    cdef double _snr(self, Cand* c):
        return snr_general(c.m, c.extras_flat)

    cdef object _future_key(self, Cand* c):
        # Identity of the candidate's future for grouping (§3.7): the sequence of
        # its events as multisets of symbols. Encoded as bytes, per event its length
        # then its symbol ids in ascending id order; equal keys <=> equal sequences
        # of sorted-name events (ids and names are in bijection), and only equality
        # is used: groups keep first-seen order. None when the future is empty.
        cdef PatternIndex index = self.index
        cdef int64_t ev0 = index.ev_start[c.pid], n_ev = index.ev_start[c.pid + 1] - ev0
        if c.e2 >= n_ev:
            return None
        cdef int64_t t = index.tok_start[c.pid], k, e, n
        for k in range(c.e2):
            t += index.event_len[ev0 + k]
        cdef vector[uint32_t] key
        cdef size_t at
        for e in range(c.e2, n_ev):
            n = index.event_len[ev0 + e]
            key.push_back(<uint32_t>n)
            at = key.size()
            for k in range(n):
                key.push_back(index.tokens[t + k])
            cpp_sort(key.begin() + at, key.end())
            t += n
        return PyBytes_FromStringAndSize(<char*>key.data(), <Py_ssize_t>(key.size() * sizeof(uint32_t)))

    cdef list _future_events(self, Cand* c):
        # events[e2:] as fresh lists of names, without building the past/present.
        cdef PatternIndex index = self.index
        cdef int64_t ev0 = index.ev_start[c.pid], n_ev = index.ev_start[c.pid + 1] - ev0
        cdef int64_t t = index.tok_start[c.pid], k, e, n
        cdef list names = self.names
        cdef list out = []
        for k in range(c.e2):
            t += index.event_len[ev0 + k]
        for e in range(c.e2, n_ev):
            n = index.event_len[ev0 + e]
            out.append([names[index.tokens[t + k]] for k in range(n)])
            t += n
        return out

    cdef int32_t _fuzzy(self, pattern_id_t pid) except -3:
        # engine.md §3.10: fuzzy matches of the state tokens against the pattern
        # tokens; returns the local id of the first match (-1: none) for the fix.
        pattern_flat = [s for ev in self.index.events_of(pid) for s in ev]
        found = fuzzy_matches(pattern_flat, self.state, self.config.fuzzy_token_threshold)
        self.fuzzy_by_pid[pid] = found
        if not found[0]:
            return -1
        return self.q.b[self.state.index(found[0][0])]

    cdef tuple _weighted(self, list matches, list pres, Cand* c):
        names = self.names
        pres_names = [names[sid] for sid in pres]
        pres_set = set(pres_names)
        return weighted_metrics(
            self.index, self.config.affinity_emotive, matches, self.state,
            [s for ev in self.index.events_of(c.pid) for s in ev], pres_names,
            [s for ev in self.stm for s in ev if s not in pres_set])

    def rank(self, list kept, str key):
        """Positions in ``kept`` of the top max_predictions by ``key``, best first."""
        cdef int idx = RANK_KEY_INDEX[key]
        if idx >= K_WEIGHTED_SIMILARITY and self.config.affinity_emotive is None and kept:
            raise InvalidConfiguration(
                {"rank_sort_algo": f"{key} needs affinity_emotive to be set"})
        values = [self.q.cands[t].value[idx] for t in kept]
        order = sorted(range(len(kept)), key=values.__getitem__, reverse=True)
        return order[: self.config.max_predictions]

    def build(self, list ranked, list kept, list match_lists):
        """Python Prediction objects for the ranked candidates (positions in ``kept``)."""
        cdef Cand* c
        cdef double* v
        out = []
        affinity = self.config.affinity_emotive is not None
        for pos in ranked:
            c = &self.q.cands[<size_t>kept[pos]]
            events = self.index.events_of(c.pid)
            present = events[c.e1:c.e2]
            matches = match_lists[pos]
            if matches is None:
                matches = self.matches_of(c)
            match_set = set(matches)
            pres_set = {s for ev in present for s in ev}
            found = self.fuzzy_by_pid.get(c.pid)
            anomalies = [Anomaly(*item) for item in found[1]] if found is not None else []
            v = c.value
            out.append(Prediction(
                "prototypical", self.index.names[c.pid], c.frequency, matches,
                events[:c.e1], present, events[c.e2:],
                [[s for s in ev if s not in match_set] for ev in present],
                [[s for s in ev if s not in pres_set] for ev in self.stm],
                anomalies, events,
                c.similarity, v[K_EVIDENCE], v[K_CONFIDENCE], v[K_SNR], v[K_FRAGMENTATION],
                self.index.emotives_of(c.pid),
                v[K_ENTROPY], v[K_NORMALIZED_ENTROPY], v[K_GLOBAL_NORMALIZED_ENTROPY],
                v[K_ITFDF], v[K_CONFLUENCE], v[K_TFIDF], v[K_PATTERN_PROBABILITY],
                v[K_WEIGHTED_STRENGTH], v[K_PREDICTIVE_INFORMATION], v[K_BAYESIAN_PRIOR],
                v[K_BAYESIAN_LIKELIHOOD], v[K_BAYESIAN_POSTERIOR], v[K_POTENTIAL],
                v[K_WEIGHTED_SIMILARITY] if affinity else None,
                v[K_WEIGHTED_EVIDENCE] if affinity else None,
                v[K_WEIGHTED_CONFIDENCE] if affinity else None,
                v[K_WEIGHTED_SNR] if affinity else None,
            ))
        return out

    # ----------------------------------------------------- single-symbol path

    def single(self):
        """engine.md §3.9: patterns starting with the one STM symbol; flat fields.

        Ranked on (potential desc, name asc) in C first; prediction objects are made
        only for the ``max_predictions`` kept (a frequent first word starts
        thousands of patterns).
        """
        cdef PatternIndex index = self.index
        cdef str x = self.state[0]
        cdef symbol_id_t sid = index.symbols.find(x)
        if sid == 0 or sid >= index.starts.size():
            return []
        cdef vector[pattern_id_t] pids = index.starts[sid]
        cdef size_t t, n = pids.size(), keep
        cdef pattern_id_t pid
        cdef int64_t la
        cdef double ev
        cdef vector[SingleRank] ranks
        cdef SingleRank r
        token_mode = self.config.use_token_matching
        affinity = self.config.affinity_emotive
        weighted_of = {}
        ranks.resize(n)
        for t in range(n):
            pid = pids[t]
            la = index.pattern_length(pid)
            r.pid = pid
            r.key = index.keys[pid]
            if affinity is None:
                ev = 1.0 / la
                r.potential = (ev + 1.0) * 1.0 + 1.0
            else:
                flat = [s for ev_ in index.events_of(pid) for s in ev_]
                weighted = weighted_metrics(index, affinity, [x], [x], flat, [x], [])
                weighted_of[pid] = weighted
                r.potential = (weighted[1] + weighted[2]) * weighted[3] + 1.0
            ranks[t] = r
        keep = <size_t>max(0, min(<Py_ssize_t>n, self.config.max_predictions))
        partial_sort(ranks.begin(), ranks.begin() + keep, ranks.end(), _single_before)
        out = []
        for t in range(keep):
            pid = ranks[t].pid
            la = index.pattern_length(pid)
            events = index.events_of(pid)
            flat = [s for ev_ in events for s in ev_]
            if token_mode:
                similarity = 2.0 * 1 / (la + 1)
            else:
                similarity = ratio(" ".join(flat), x) / 100
            evidence = 1 / la
            weighted = weighted_of.get(pid, (None, None, None, None))
            freq = index.frequency[pid] if index.frequency[pid] > 0 else 1
            out.append(SingleSymbolPrediction(
                index.names[pid], events, la, freq, index.emotives_of(pid),
                [x], [], [x], [], flat[1:], [], similarity, evidence, 1.0, 1.0, 0, [],
                ranks[t].potential, *weighted))
        return out


def weighted_metrics(PatternIndex index, str emotive, list matches, list state,
                     list pattern_flat, list present_flat, list extras_flat):
    """engine.md §3.11: (weighted_similarity, _evidence, _confidence, _snr)."""
    affinity = index.affinity
    symbols = index.symbols
    weights = {}

    def wsum(tokens):
        total = 0.0
        for s in tokens:
            w = weights.get(s)
            if w is None:
                a = abs(affinity.get(s, {}).get(emotive, 0.0))
                sid = symbols.find(s)
                f = index.symbol_frequency[sid] if sid else 0
                w = weights[s] = a / f + 0.01 if a > 0 and f > 0 else 0.01
            total = total + w
        return total

    wm = wsum(matches)
    ws = wsum(state)
    wa = wsum(pattern_flat)
    wp = wsum(present_flat)
    we = wsum(extras_flat)
    div = lambda num, den: num / den if den != 0 else 0.0
    return div(2 * wm, ws + wa), div(wm, wa), div(wm, wp), div(wm, wm + we)


def predict(PatternIndex index, list stm, object config):
    """Ranked predictions for ``stm`` (list of events) under ``config`` (EngineConfig).

    Returns a :class:`~engine.results.PredictionSet`. An STM with no symbol gives
    no predictions; one symbol takes the single-symbol path (§3.9).
    """
    cdef _Scorer scorer = _Scorer(index, stm, config)
    cdef Py_ssize_t n = len(scorer.state)
    if n == 0:
        return PredictionSet([], [])
    if n == 1:
        return PredictionSet(scorer.single(), [])
    scorer.collect()
    kept, match_lists, future_potentials = scorer.ensemble()
    ranked = scorer.rank(kept, config.rank_sort_algo)
    return PredictionSet(scorer.build(ranked, kept, match_lists), future_potentials)
