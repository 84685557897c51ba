"""Shared fixtures of the benchmarks: seeded knowledge bases, built once per run.

Every benchmark records what it ran (patterns, STM lengths, …) in
``benchmark.extra_info``; a plain summary table is printed at the end of the run.
"""

from __future__ import annotations

import pytest

from bench.corpus import build_kb

_KBS: dict[int, object] = {}
_SUMMARY: list[tuple[str, str, float, float, float]] = []


@pytest.fixture(scope="session")
def knowledge_base():
    """``knowledge_base(n)``: a KB of ``n`` seeded random patterns (cached)."""

    def get(n: int):
        if n not in _KBS:
            _KBS[n] = build_kb(n)
        return _KBS[n]

    return get


@pytest.fixture
def record(benchmark, request):
    """Call after a benchmark ran: stores its median/p99/ops for the summary table."""

    def done(label: str, size: str) -> None:
        stats = benchmark.stats.stats
        data = sorted(stats.data)
        p99 = data[min(len(data) - 1, int(len(data) * 0.99))]
        _SUMMARY.append((label, size, stats.median, p99, stats.ops))

    return done


def pytest_terminal_summary(terminalreporter):
    if not _SUMMARY:
        return
    tr = terminalreporter
    tr.section("KATO benchmark summary")
    tr.write_line(f"{'metric':<28}{'size':>14}{'median':>14}{'p99':>14}{'ops/s':>14}")
    for label, size, median, p99, ops in _SUMMARY:
        tr.write_line(f"{label:<28}{size:>14}{median * 1e6:>12.1f}us{p99 * 1e6:>12.1f}us{ops:>14,.0f}")
