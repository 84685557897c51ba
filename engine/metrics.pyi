"""Stub of the compiled engine.metrics extension (engine/metrics.pyx).

The formulas themselves are ``cdef ... noexcept nogil`` C functions; only these
two are reachable from Python.
"""

from engine.patterns import PatternIndex

def similarity(lcs: int, total: int) -> float:
    """((2*lcs)/total)*100 then /100 (engine.md §3.3)."""
def pattern_entropies(index: PatternIndex, pid: int) -> tuple[float, float, float]:
    """finalize-training (entropy, normalized_entropy, global_normalized_entropy) of one pattern."""
