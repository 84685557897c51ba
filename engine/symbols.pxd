from libcpp.string cimport string
from libcpp.vector cimport vector
from engine.types cimport symbol_id_t


cdef class SymbolTable:
    cdef dict _ids                  # str -> id
    cdef list _names                # id -> str (index 0 unused)
    cdef vector[string] _utf8       # id -> UTF-8 bytes, for GIL-free ordering

    cpdef symbol_id_t intern(self, str symbol) except 0
    cpdef symbol_id_t find(self, str symbol)
    cdef inline str name(self, symbol_id_t sid):
        return <str>self._names[sid]
    cdef bint less(self, symbol_id_t a, symbol_id_t b) noexcept nogil
