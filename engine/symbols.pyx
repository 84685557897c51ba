# cython: language_level=3
"""SymbolTable: interning of symbol strings to dense integer ids.

Ids are assigned in first-seen order starting at 1 (0 means "no symbol"), so the
same sequence of interned strings always yields the same ids. The table also keeps
each symbol's UTF-8 bytes: byte order of UTF-8 equals code-point order, which is
Python's ``str`` ordering, so symbols can be ordered without the GIL.
"""

from libcpp.string cimport string
from engine.types cimport symbol_id_t

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)


cdef class SymbolTable:
    """Bidirectional str <-> id map; ids are never reused or removed."""

    def __cinit__(self):
        self._ids = {}
        # Strings only, so never in a cycle: untracked, a full GC does not walk
        # the whole vocabulary (see PatternIndex's per-pattern tables).
        self._names = [None]
        PyObject_GC_UnTrack(<void*>self._names)
        self._utf8.push_back(string())

    def __len__(self):
        return len(self._names) - 1

    cpdef symbol_id_t intern(self, str symbol) except 0:
        """Return the id of ``symbol``, assigning the next id on first sight."""
        cdef object sid = self._ids.get(symbol)
        if sid is not None:
            return <symbol_id_t>sid
        cdef symbol_id_t new_id = <symbol_id_t>len(self._names)
        self._ids[symbol] = new_id
        self._names.append(symbol)
        self._utf8.push_back(symbol.encode("utf-8", "surrogatepass"))
        return new_id

    cpdef symbol_id_t find(self, str symbol):
        """Return the id of ``symbol`` or 0 when it was never interned."""
        cdef object sid = self._ids.get(symbol)
        return 0 if sid is None else <symbol_id_t>sid

    def symbol(self, symbol_id_t sid):
        """Return the string of id ``sid`` (IndexError for an unknown id)."""
        if sid == 0 or sid >= <symbol_id_t>len(self._names):
            raise IndexError(sid)
        return self._names[sid]

    cdef bint less(self, symbol_id_t a, symbol_id_t b) noexcept nogil:
        return self._utf8[a] < self._utf8[b]
