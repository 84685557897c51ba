"""Stub of the compiled engine.matching extension (engine/matching.pyx).

The ``cdef`` kernels (lcs_dp, lcs_bits, matching_blocks, matched_size) are C-level
only; these are their Python entry points.
"""

from collections.abc import Hashable, Sequence

def _as_local(seq_a: Sequence[Hashable], seq_b: Sequence[Hashable]) -> tuple[list[int], list[int]]: ...
def lcs_length(seq_a: Sequence[Hashable], seq_b: Sequence[Hashable]) -> int:
    """LCS length of two sequences (DP and bit-parallel kernels cross-checked)."""
def get_matching_blocks(seq_a: Sequence[Hashable], seq_b: Sequence[Hashable]) -> list[tuple[int, int, int]]:
    """difflib-compatible matching blocks (autojunk off), sentinel excluded."""
def char_lcs(a: str, b: str) -> int:
    """LCS length of two strings over Unicode code points."""
