"""Seeded synthetic corpora for the benchmarks.

``random_patterns(n, seed)`` yields ``n`` patterns of 5–20 events with 1–5
symbols each over a vocabulary of 5,000 symbols; ``random_stm`` draws an STM of
3–5 events the same way. Same seed, same corpus, on every machine.

Large builds (10k patterns and up) draw a progress bar on stderr.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine import KnowledgeBase, LearnedPattern
from engine.observation import pattern_hash

__all__ = ["VOCABULARY", "random_patterns", "random_stm", "build_kb", "prefill_store", "Progress", "rss_bytes"]

VOCABULARY = 5000


def random_event(rng: random.Random, vocabulary: int = VOCABULARY) -> list[str]:
    """One event: 1–5 symbols ``s<k>`` with k below ``vocabulary``, sorted (a symbol may repeat)."""
    return sorted(f"s{rng.randrange(vocabulary)}" for _ in range(rng.randint(1, 5)))


def random_patterns(n: int, seed: int = 1, vocabulary: int = VOCABULARY) -> Iterator[list[list[str]]]:
    """``n`` random patterns (lists of events)."""
    rng = random.Random(seed)
    for _ in range(n):
        yield [random_event(rng, vocabulary) for _ in range(rng.randint(5, 20))]


def random_stm(rng: random.Random, vocabulary: int = VOCABULARY) -> list[list[str]]:
    """An STM of 3–5 random events."""
    return [random_event(rng, vocabulary) for _ in range(rng.randint(3, 5))]


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class Progress:
    """A one-line progress bar on stderr: ``label [#####.....] 52% 1.2M/s eta 3s``.

    Redrawn in place on a terminal; elsewhere (CI logs, pytest capture) one line
    per 10%, so logs stay short.
    """

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self._step = max(self.total // (200 if self.tty else 10), 1)
        self._next = self._step

    def update(self, done: int) -> None:
        if not self.enabled or (done < self._next and done != self.total):
            return
        self._next = done + self._step
        elapsed = time.perf_counter() - self.started
        frac = done / self.total
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(frac * 30)
        line = (f"  {self.label} [{bar:<30}] {frac:4.0%} {done:,}/{self.total:,} "
                f"{rate:,.0f}/s {elapsed:.1f}s eta {eta:.0f}s")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done >= self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _records(n: int, seed: int, progress: Progress | None) -> Iterable[LearnedPattern]:
    for i, events in enumerate(random_patterns(n, seed)):
        yield LearnedPattern(name=pattern_hash(events), events=events, emotives=[],
                             metadata=[], persistence=5, frequency=0)
        if progress is not None:
            progress.update(i + 1)


def build_kb(n: int, seed: int = 1, progress: bool = True) -> KnowledgeBase:
    """A knowledge base holding ``n`` random patterns, learned through ``apply``.

    Draws a progress bar on stderr for builds of 10,000 patterns and more.
    """
    kb = KnowledgeBase(f"bench-{n}-{seed}")
    bar = Progress(n, f"building {n:,} patterns", enabled=progress and n >= 10_000)
    for record in _records(n, seed, bar):
        kb.apply(record)
    return kb


def prefill_store(data_dir: Path, node_id: str, n: int, seed: int = 1, progress: bool = True) -> None:
    """Write ``n`` seeded patterns into the embedded learn log of ``node_id``.

    A server started on ``data_dir`` replays them on the node's first request.
    """
    from storage.sqlite import SqlitePatternStore
    from web.nodes import kb_id_for

    store = SqlitePatternStore(data_dir / "patterns.sqlite3")
    bar = Progress(n, f"writing {n:,} patterns", enabled=progress and n >= 10_000)
    batch: list[LearnedPattern] = []
    kb_id = kb_id_for(node_id)

    async def write() -> None:
        for record in _records(n, seed, bar):
            batch.append(record)
            if len(batch) == 10_000:
                await store.append(kb_id, batch)
                batch.clear()
        await store.append(kb_id, batch)
        await store.close()

    asyncio.run(write())
