"""Shared fixtures of the benchmarks: seeded knowledge bases, built once per run.

Every benchmark records what it ran (patterns, STM lengths, …) in
``benchmark.extra_info``; a plain summary table (metric, size, median, p99,
ops/s) is printed at the end of the run, with the build time and resident memory
of every knowledge base built.

``--bench-1m`` adds the one-million-pattern size (about a minute to build and
~1 GB of memory); it is off by default.
"""

from __future__ import annotations

import gc
import time

import pytest

from bench.corpus import build_kb, rss_bytes

_KBS: dict[int, object] = {}
_BUILDS: list[tuple[int, float, int]] = []
_SUMMARY: list[tuple[str, str, float, float, float]] = []
_FIGURES: dict[str, list[tuple[str, str, str]]] = {}   # section -> (what, size, figure) of one-shot measurements


def pytest_addoption(parser):
    parser.addoption("--bench-1m", action="store_true", default=False,
                     help="also run the 1,000,000-pattern benchmarks (slow build, ~1 GB)")
    parser.addoption("--learns", type=int, default=10_000,
                     help="new patterns each learn figure of bench_storage.py learns (default 10,000)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench-1m"):
        return
    skip = pytest.mark.skip(reason="1M-pattern size: pass --bench-1m")
    for item in items:
        if "million" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "million: one-million-pattern benchmark (needs --bench-1m)")


@pytest.fixture(scope="session")
def knowledge_base():
    """``knowledge_base(n)``: a KB of ``n`` seeded random patterns (cached)."""

    def get(n: int):
        if n not in _KBS:
            gc.collect()
            before = rss_bytes()
            started = time.perf_counter()
            _KBS[n] = build_kb(n)
            gc.collect()
            _BUILDS.append((n, time.perf_counter() - started, rss_bytes() - before))
        return _KBS[n]

    return get


@pytest.fixture
def record(benchmark):
    """Call after a benchmark ran: stores its median/p99/ops for the summary table."""

    def done(label: str, size: str) -> None:
        stats = benchmark.stats.stats
        data = sorted(stats.data)
        p99 = data[min(len(data) - 1, int(len(data) * 0.99))]
        benchmark.extra_info.setdefault("p99_s", p99)
        _SUMMARY.append((label, size, stats.median, p99, stats.ops))

    return done


@pytest.fixture
def report():
    """``report(what, size, figure, section=...)``: a one-shot figure for the summary
    (section "server storage (ClickHouse + Redis)" unless another is named)."""

    def add(what: str, size: str, figure: str, section: str = "server storage (ClickHouse + Redis)") -> None:
        _FIGURES.setdefault(section, []).append((what, size, figure))

    return add


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f}us"


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if _SUMMARY:
        tr.section("KATO benchmark summary")
        tr.write_line(f"{'metric':<30}{'size':>14}{'median':>14}{'p99':>14}{'ops/s':>14}")
        for label, size, median, p99, ops in _SUMMARY:
            tr.write_line(f"{label:<30}{size:>14}{_time(median):>14}{_time(p99):>14}{ops:>14,.0f}")
    for section, figures in _FIGURES.items():
        tr.section(section)
        for what, size, figure in figures:
            tr.write_line(f"{what:<52}{size:>12}  {figure}")
    if _BUILDS:
        tr.section("knowledge bases built")
        tr.write_line(f"{'patterns':>12}{'build':>12}{'RSS delta':>14}{'per 100k':>14}")
        for n, seconds, rss in _BUILDS:
            tr.write_line(f"{n:>12,}{seconds:>11.1f}s{rss / 2**20:>12.1f}MB"
                          f"{rss / 2**20 * 100_000 / n:>12.1f}MB")
