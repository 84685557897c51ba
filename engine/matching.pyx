# cython: language_level=3
"""Alignment kernels: LCS length and difflib-compatible matching blocks.

Sequences are arrays of small integers ("local ids"): a pattern is projected onto
the distinct symbols of the STM, tokens absent from the STM become -1 and never
match. Every kernel runs without the GIL.

* :func:`lcs_dp` / :func:`lcs_bits` give the longest-common-subsequence length
  used by the similarity (engine.md §3.3); ``lcs_bits`` is the bit-parallel form
  (Hyyrö) for an STM of at most 64 tokens.
* :func:`matching_blocks` is ``difflib.SequenceMatcher(None, a, b,
  autojunk=False).get_matching_blocks()`` without the sentinel (engine.md §3.4):
  the same longest-match tie rules (smallest i, then smallest j), the same
  recursion, the same merge of adjacent blocks.
"""

cimport cython
from libcpp.vector cimport vector
from libcpp.algorithm cimport sort as cpp_sort
from engine.types cimport int32_t, int64_t, uint64_t


cdef extern from *:
    """
    #include <vector>
    #include <cstdint>
    // The work stack of matching_blocks, reused per thread instead of a malloc per
    // call (a prediction aligns thousands of candidates; several threads predict).
    static std::vector<int64_t>* kato_block_stack() {
        static thread_local std::vector<int64_t> stack;
        return &stack;
    }
    """
    int __builtin_popcountll(unsigned long long) nogil
    vector[int64_t]* kato_block_stack() nogil


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int64_t lcs_dp(const int32_t* a, int64_t la, const int32_t* b, int64_t lb,
                    int64_t* row) noexcept nogil:
    """LCS length by the O(la·lb) recurrence; ``row`` holds lb+1 scratch slots."""
    cdef int64_t i, j, diag, up
    for j in range(lb + 1):
        row[j] = 0
    for i in range(la):
        diag = 0
        for j in range(lb):
            up = row[j + 1]
            if a[i] == b[j]:
                row[j + 1] = diag + 1
            elif row[j] > up:
                row[j + 1] = row[j]
            diag = up
    return row[lb]


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int64_t lcs_bits(const int32_t* a, int64_t la, const uint64_t* masks,
                      int64_t lb) noexcept nogil:
    """Bit-parallel LCS length for lb <= 64; ``masks[c]`` = positions of local id c in b."""
    cdef uint64_t v = ~(<uint64_t>0)
    cdef uint64_t m, u
    cdef int64_t i
    for i in range(la):
        if a[i] < 0:
            continue
        m = masks[a[i]]
        u = v & m
        v = (v + u) | (v - u)
    # The LCS length is the number of zero bits among the low lb bits of v.
    cdef uint64_t low = ~(<uint64_t>0) if lb >= 64 else ((<uint64_t>1) << lb) - 1
    return __builtin_popcountll(~v & low)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _longest(const int32_t* a, const int32_t* b, int64_t alo, int64_t ahi,
                   int64_t blo, int64_t bhi, int64_t* prev, int64_t* cur,
                   Block* best) noexcept nogil:
    # difflib find_longest_match without junk: scan i ascending, j ascending and keep
    # a strictly longer match only, so ties go to the smallest i, then smallest j.
    cdef int64_t i, j, k, w = bhi - blo
    cdef int64_t* tmp
    best.i = alo
    best.j = blo
    best.n = 0
    for j in range(w + 1):
        prev[j] = 0
    for i in range(alo, ahi):
        cur[0] = 0
        for j in range(blo, bhi):
            if a[i] == b[j]:
                k = prev[j - blo] + 1
                cur[j - blo + 1] = k
                if k > best.n:
                    best.i = i - k + 1
                    best.j = j - k + 1
                    best.n = k
            else:
                cur[j - blo + 1] = 0
        tmp = prev
        prev = cur
        cur = tmp


cdef bint _block_less(const Block& x, const Block& y) noexcept nogil:
    return x.i < y.i or (x.i == y.i and x.j < y.j)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int matching_blocks(const int32_t* a, int64_t la, const int32_t* b, int64_t lb,
                         vector[Block]& out, vector[int64_t]& work) except -1 nogil:
    """Fill ``out`` with the merged matching blocks of (a, b), sentinel excluded."""
    cdef vector[int64_t]* stack = kato_block_stack()
    cdef int64_t alo, ahi, blo, bhi
    cdef Block best
    cdef size_t t, w
    out.clear()
    stack.clear()
    if la == 0 or lb == 0:
        return 0
    if work.size() < <size_t>(2 * (lb + 1)):
        work.resize(2 * (lb + 1))
    stack.push_back(0); stack.push_back(la); stack.push_back(0); stack.push_back(lb)
    while stack.size():
        bhi = stack.back(); stack.pop_back()
        blo = stack.back(); stack.pop_back()
        ahi = stack.back(); stack.pop_back()
        alo = stack.back(); stack.pop_back()
        _longest(a, b, alo, ahi, blo, bhi, work.data(), work.data() + lb + 1, &best)
        if best.n:
            out.push_back(best)
            if alo < best.i and blo < best.j:
                stack.push_back(alo); stack.push_back(best.i)
                stack.push_back(blo); stack.push_back(best.j)
            if best.i + best.n < ahi and best.j + best.n < bhi:
                stack.push_back(best.i + best.n); stack.push_back(ahi)
                stack.push_back(best.j + best.n); stack.push_back(bhi)
    if out.size() == 0:
        return 0
    # Sort, then merge adjacent blocks in place.
    cpp_sort(out.begin(), out.end(), _block_less)
    w = 0
    for t in range(1, out.size()):
        if out[w].i + out[w].n == out[t].i and out[w].j + out[w].n == out[t].j:
            out[w].n += out[t].n
        else:
            w += 1
            out[w] = out[t]
    out.resize(w + 1)
    return 0


cdef int64_t matched_size(const int32_t* a, int64_t la, const int32_t* b, int64_t lb,
                          vector[Block]& scratch, vector[int64_t]& work) except -1 nogil:
    """Σ of block sizes of matching_blocks(a, b) (the second matcher of §3.4)."""
    matching_blocks(a, la, b, lb, scratch, work)
    cdef int64_t total = 0
    cdef size_t t
    for t in range(scratch.size()):
        total += scratch[t].n
    return total


# ------------------------------------------------------------ Python wrappers
# Thin entry points so tests can compare the kernels with difflib directly.

def _as_local(seq_a, seq_b):
    ids = {}
    for x in seq_b:
        ids.setdefault(x, len(ids))
    a = [ids.get(x, -1) for x in seq_a]
    b = [ids[x] for x in seq_b]
    return a, b


def lcs_length(seq_a, seq_b):
    """LCS length of two sequences of hashable items (both kernels cross-checked)."""
    a, b = _as_local(seq_a, seq_b)
    cdef vector[int32_t] va = a
    cdef vector[int32_t] vb = b
    cdef vector[int64_t] row
    row.resize(len(b) + 1)
    cdef int64_t dp = lcs_dp(va.data(), va.size(), vb.data(), vb.size(), row.data())
    cdef vector[uint64_t] masks
    cdef size_t j
    if vb.size() <= 64:
        masks.resize(len(b) + 1, 0)
        for j in range(vb.size()):
            masks[vb[j]] |= (<uint64_t>1) << j
        bits = lcs_bits(va.data(), va.size(), masks.data(), vb.size())
        if bits != dp:
            raise AssertionError(f"lcs kernels disagree: dp={dp} bits={bits}")
    return dp


def get_matching_blocks(seq_a, seq_b):
    """difflib-compatible matching blocks of two sequences, as (i, j, n) tuples."""
    a, b = _as_local(seq_a, seq_b)
    cdef vector[int32_t] va = a
    cdef vector[int32_t] vb = b
    cdef vector[Block] out
    cdef vector[int64_t] work
    matching_blocks(va.data(), va.size(), vb.data(), vb.size(), out, work)
    return [(blk.i, blk.j, blk.n) for blk in out]


def char_lcs(str a, str b):
    """LCS length of two strings over Unicode code points."""
    cdef vector[int32_t] va = [ord(ch) for ch in a]
    cdef vector[int32_t] vb = [ord(ch) for ch in b]
    cdef vector[int64_t] row
    row.resize(vb.size() + 1)
    return lcs_dp(va.data(), va.size(), vb.data(), vb.size(), row.data())
