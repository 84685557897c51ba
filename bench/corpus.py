"""Seeded synthetic corpora for the benchmarks.

``random_patterns(n, seed)`` yields ``n`` patterns of 5–20 events with 1–5
symbols each over a vocabulary of 5,000 symbols; ``random_stm`` draws an STM of
3–5 events the same way. Same seed, same corpus, on every machine.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator

from engine import KnowledgeBase, LearnedPattern
from engine.observation import pattern_hash

VOCABULARY = 5000


def _event(rng: random.Random, vocabulary: int) -> list[str]:
    return sorted(f"s{rng.randrange(vocabulary)}" for _ in range(rng.randint(1, 5)))


def random_patterns(n: int, seed: int = 1, vocabulary: int = VOCABULARY) -> Iterator[list[list[str]]]:
    """``n`` random patterns (lists of events)."""
    rng = random.Random(seed)
    for _ in range(n):
        yield [_event(rng, vocabulary) for _ in range(rng.randint(5, 20))]


def random_stm(rng: random.Random, vocabulary: int = VOCABULARY) -> list[list[str]]:
    """An STM of 3–5 random events."""
    return [_event(rng, vocabulary) for _ in range(rng.randint(3, 5))]


def build_kb(n: int, seed: int = 1, progress: bool = True) -> KnowledgeBase:
    """A knowledge base holding ``n`` random patterns, learned through ``apply``.

    Prints a progress line to stderr every 10% for large builds.
    """
    kb = KnowledgeBase(f"bench-{n}-{seed}")
    step = max(n // 10, 1)
    started = time.perf_counter()
    for i, events in enumerate(random_patterns(n, seed)):
        kb.apply(LearnedPattern(name=pattern_hash(events), events=events, emotives=[],
                                metadata=[], persistence=5, frequency=0))
        if progress and n >= 10_000 and (i + 1) % step == 0:
            print(f"  building {n:,} patterns: {100 * (i + 1) // n}% "
                  f"({time.perf_counter() - started:.1f}s)", file=sys.stderr, flush=True)
    return kb
