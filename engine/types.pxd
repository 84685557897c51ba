# The C types shared by every engine extension. Every other .pxd cimports these;
# no extension defines its own id type.
from libc.stdint cimport uint32_t, uint64_t, int32_t, int64_t

ctypedef uint32_t symbol_id_t    # index into SymbolTable; 0 is never assigned
ctypedef uint32_t pattern_id_t   # dense, in first-learn order
ctypedef double score_t          # every metric; binary64 so results match the spec bit for bit

cdef struct Posting:
    pattern_id_t pid             # a pattern containing the symbol
    uint32_t count               # how many times the symbol occurs in that pattern

cdef struct NameKey:
    # The 20-byte SHA-1 of a pattern name as three big-endian words, so that
    # comparing keys orders patterns exactly as their hex names sort.
    uint64_t hi
    uint64_t mid
    uint32_t lo
