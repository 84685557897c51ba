from libcpp.vector cimport vector
from engine.types cimport int32_t, int64_t, uint64_t


cdef struct Block:
    # One difflib matching block: a[i:i+n] == b[j:j+n].
    int64_t i
    int64_t j
    int64_t n


cdef int64_t lcs_dp(const int32_t* a, int64_t la, const int32_t* b, int64_t lb,
                    int64_t* row) noexcept nogil
cdef int64_t lcs_bits(const int32_t* a, int64_t la, const uint64_t* masks,
                      int64_t lb) noexcept nogil
cdef int matching_blocks(const int32_t* a, int64_t la, const int32_t* b, int64_t lb,
                         vector[Block]& out, vector[int64_t]& work) except -1 nogil
cdef int64_t matched_size(const int32_t* a, int64_t la, const int32_t* b, int64_t lb,
                          vector[Block]& scratch, vector[int64_t]& work) except -1 nogil
