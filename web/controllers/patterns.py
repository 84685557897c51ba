"""Processor-level pattern and symbol routes (api.md §2.3, §2.4); not guarded."""

from __future__ import annotations

from litestar.params import FromPath
from litestar import Controller, Request, get

from web.nodes import kb_id_for, resolve_node
from web.deps import runtime
from web.schemas.patterns import (
    AffinityAll,
    AffinityOne,
    DeprecatedCognition,
    DeprecatedPercept,
    PatternBody,
    PatternFound,
    PatternMissing,
    PatternResponse,
    SymbolStat,
    SymbolStats,
)

__all__ = ["PatternController", "SymbolController", "DeprecatedController"]

_DEPRECATED = "This endpoint is deprecated. Use /sessions/{session_id}/%s for session-aware data."


async def _kb(request: Request):
    rt = runtime(request)
    node = resolve_node(request.query_params, request.headers)
    kb_id = kb_id_for(node, rt.settings.service_name)
    return kb_id, (await rt.kbs.get(kb_id, node)).kb


class PatternController(Controller):
    """``/pattern/{id}``: one learned pattern of the resolved node."""

    path = "/pattern"
    tags = ["patterns"]

    @get("/{pattern_id:str}", summary="One learned pattern")
    async def pattern(self, pattern_id: FromPath[str], request: Request) -> PatternResponse:
        """Bare hash or ``PTRN|<hash>``; an unknown id is still 200 with ``status: "error"``."""
        kb_id, kb = await _kb(request)
        try:
            record = kb.pattern(pattern_id)
        except ValueError:  # not a hex name: cannot exist
            record = None
        if record is None:
            missing = PatternMissing(message=f"Pattern {pattern_id} not found")
            return PatternResponse(pattern=missing, node_id=kb_id)
        body = PatternBody(name=f"PTRN|{record['name']}", pattern_data=record["pattern_data"],
                           length=record["length"], frequency=record["frequency"],
                           emotives=record["emotives"], metadata=record["metadata"])
        return PatternResponse(pattern=PatternFound(pattern=body), node_id=kb_id)


class SymbolController(Controller):
    """Symbol statistics and affinities of the resolved node."""

    path = "/symbols"
    tags = ["patterns"]

    @get("/affinity", summary="Affinity of every symbol")
    async def affinities(self, request: Request) -> AffinityAll:
        """Running emotive sums per symbol."""
        kb_id, kb = await _kb(request)
        return AffinityAll(affinities=kb.index.affinity_table(), node_id=kb_id)

    @get("/stats", summary="Symbol frequencies")
    async def stats(self, request: Request) -> SymbolStats:
        """Frequency and pattern-membership count per symbol."""
        kb_id, kb = await _kb(request)
        symbols = {name: SymbolStat(name=name, frequency=freq, pattern_member_frequency=pmf)
                   for name, freq, pmf in kb.index.symbol_stats()}
        return SymbolStats(symbols=symbols, node_id=kb_id)

    @get("/{symbol:str}/affinity", summary="Affinity of one symbol")
    async def affinity(self, symbol: FromPath[str], request: Request) -> AffinityOne:
        """``{}`` for an unknown symbol."""
        kb_id, kb = await _kb(request)
        return AffinityOne(symbol=symbol, affinity=kb.index.affinity_table().get(symbol, {}), node_id=kb_id)


class DeprecatedController(Controller):
    """The two processor-level data stubs the reference tests still call."""

    path = "/"
    tags = ["deprecated"]

    @get("/percept-data", summary="Deprecated", deprecated=True)
    async def percept(self, request: Request) -> DeprecatedPercept:
        """Always empty; use the session route."""
        rt = runtime(request)
        kb_id = kb_id_for(resolve_node(request.query_params, request.headers), rt.settings.service_name)
        return DeprecatedPercept(percept_data={}, node_id=kb_id, warning=_DEPRECATED % "percept-data")

    @get("/cognition-data", summary="Deprecated", deprecated=True)
    async def cognition(self, request: Request) -> DeprecatedCognition:
        """Always empty; use the session route."""
        rt = runtime(request)
        kb_id = kb_id_for(resolve_node(request.query_params, request.headers), rt.settings.service_name)
        data = {"predictions": [], "emotives": {}, "symbols": [], "command": "", "metadata": {}, "path": [],
                "strings": [], "vectors": [], "short_term_memory": []}
        return DeprecatedCognition(cognition_data=data, node_id=kb_id, warning=_DEPRECATED % "cognition-data")
