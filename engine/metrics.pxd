from engine.types cimport int64_t, score_t


cdef score_t token_similarity(int64_t lcs, int64_t total) noexcept nogil
cdef score_t char_similarity(int64_t lcs, int64_t total) noexcept nogil
cdef score_t snr_general(int64_t m, int64_t extras) noexcept nogil
cdef score_t fragmentation_term(int64_t nb) noexcept nogil
cdef tuple entropies(dict counts, int64_t n, dict probabilities, int64_t total_symbols)
