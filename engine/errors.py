"""Exception hierarchy of the engine.

Every error the engine raises is an :class:`EngineError`; the web layer maps the
hierarchy to HTTP status codes in one place. Errors that concern one input field
carry its name in ``field`` so a client is told exactly what to fix.
"""

from __future__ import annotations

__all__ = [
    "EngineError",
    "InvalidConfiguration",
    "InvalidObservation",
    "VectorSumError",
    "EmptyShortTermMemory",
    "UnknownPattern",
]


class EngineError(Exception):
    """Base class of every error raised by the engine."""


class InvalidConfiguration(EngineError, ValueError):
    """One or more configuration values are invalid.

    ``errors`` maps each failing parameter name to a message; ``field`` is the
    first of them (the one named in ``str(exc)``).
    """

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        self.field = next(iter(self.errors), "")
        detail = "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        super().__init__(f"invalid configuration: {detail}")


class InvalidObservation(EngineError, ValueError):
    """An observation cannot be turned into an event; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class VectorSumError(InvalidObservation):
    """The vectors of one observation cannot be summed element-wise (numpy rules)."""

    def __init__(self, message: str) -> None:
        super().__init__("vectors", message)
        self.message = message


class EmptyShortTermMemory(EngineError, ValueError):
    """A manual learn was asked of an empty STM."""

    def __init__(self) -> None:
        self.field = "stm"
        super().__init__("Cannot learn from empty STM")


class UnknownPattern(EngineError, KeyError):
    """No pattern of that name exists in the knowledge base."""

    def __init__(self, name: str) -> None:
        self.field = "pattern_id"
        self.name = name
        super().__init__(name)
