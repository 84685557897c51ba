"""Stub of the compiled engine.symbols extension (engine/symbols.pyx)."""

from typing_extensions import disjoint_base

@disjoint_base
class SymbolTable:
    """Bidirectional str <-> id map; ids start at 1 in first-seen order, 0 means "none"."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def intern(self, symbol: str) -> int:
        """Id of ``symbol``, assigning the next id on first sight."""
    def find(self, symbol: str) -> int:
        """Id of ``symbol`` or 0 when it was never interned."""
    def symbol(self, sid: int) -> str:
        """String of id ``sid``; IndexError for an unknown id."""
