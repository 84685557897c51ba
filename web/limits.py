"""Input limits and the request-body types that enforce them at decoding.

The limits are settings (``KATO_MAX_*``, read in web/settings.py) and are turned
into msgspec ``Meta`` constraints once per app by :func:`request_bodies`, so an
oversized body fails inside ``msgspec.json.decode`` like any other type error:
422 E2 with ``loc`` naming the field (``["body", "strings"]``,
``["body", "observations", 3, "vectors", 0]``) and pydantic's ``too_long`` /
``string_too_long`` types (web/decoding.py). The OpenAPI document shows the same
constraints (``maxItems``, ``maxLength``, ``maxProperties``), because it is made
from these types.

Defaults are far above anything the reference clients send (its suite sends at
most ~1 MiB per request) and below what would hurt the service: the vector
dimension stops at Qdrant's own maximum, a symbol at 10 000 characters keeps
fuzzy matching (quadratic in symbol length) bounded.
"""

# No ``from __future__ import annotations``: the Struct classes below are built
# inside a function and msgspec must see their annotations evaluated there.

from typing import Annotated

import msgspec

from web.schemas import observations, sessions

__all__ = ["Limits", "RequestBodies", "request_bodies"]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Largest accepted inputs; each is an environment variable (README, Configuration)."""

    max_symbol_length: int = 10_000      # KATO_MAX_SYMBOL_LENGTH: characters of a string symbol,
    #                                      an emotive name, a node_id or a unique_id
    max_symbols_per_event: int = 10_000  # KATO_MAX_SYMBOLS_PER_EVENT: strings (and vectors) of one observation
    max_sequence_length: int = 10_000    # KATO_MAX_SEQUENCE_LENGTH: observations of one observe-sequence
    max_vector_dimension: int = 65_536   # KATO_MAX_VECTOR_DIMENSION: components of one vector (Qdrant's cap)
    max_emotives: int = 1_000            # KATO_MAX_EMOTIVES: emotive keys of one observation


class RequestBodies(msgspec.Struct, frozen=True):
    """The limited body types of one app; ``documented`` maps each declared type to its limited one."""

    observation: type
    sequence: type
    create_session: type
    documented: dict[type, type]


def _named_like(cls: type, base: type) -> type:
    cls.__name__ = cls.__qualname__ = base.__name__   # the OpenAPI component keeps the documented name
    cls.__doc__ = base.__doc__
    cls.__module__ = base.__module__
    return cls


def request_bodies(limits: Limits) -> RequestBodies:
    """Subclasses of the body Structs of web.schemas with ``limits`` as Meta constraints."""
    symbol = Annotated[str, msgspec.Meta(max_length=limits.max_symbol_length)]
    vector = Annotated[list[float], msgspec.Meta(max_length=limits.max_vector_dimension)]
    # (distinct names: a class-body annotation is evaluated after its field's default is bound)
    string_list = Annotated[list[symbol], msgspec.Meta(max_length=limits.max_symbols_per_event)]
    vector_list = Annotated[list[vector], msgspec.Meta(max_length=limits.max_symbols_per_event)]
    emotive_map = Annotated[dict[symbol, float], msgspec.Meta(max_length=limits.max_emotives)]

    class ObservationData(observations.ObservationData, kw_only=True):
        strings: string_list = []
        vectors: vector_list = []
        emotives: emotive_map = {}

    class SequenceObservation(ObservationData, kw_only=True):
        unique_id: symbol | None = None

    class ObserveSequence(observations.ObserveSequence, kw_only=True):
        observations: Annotated[list[_named_like(SequenceObservation, observations.SequenceObservation)],
                                msgspec.Meta(max_length=limits.max_sequence_length)]

    class CreateSession(sessions.CreateSession, kw_only=True):
        node_id: symbol

    observation = _named_like(ObservationData, observations.ObservationData)
    sequence = _named_like(ObserveSequence, observations.ObserveSequence)
    create = _named_like(CreateSession, sessions.CreateSession)
    return RequestBodies(observation=observation, sequence=sequence, create_session=create,
                         documented={observations.ObservationData: observation, observations.ObserveSequence: sequence,
                                     sessions.CreateSession: create})
