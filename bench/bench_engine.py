"""In-process engine benchmarks: observe, learn and predictions at 1k, 10k, 100k (and 1M) patterns.

Corpus (seeded, bench/corpus.py): patterns of 5–20 events with 1–5 symbols each
over a 5,000-symbol vocabulary; STMs of 3–5 such events; default configuration
(recall_threshold 0.1, max_predictions 100). The 1M size needs ``--bench-1m``.
Run:

    python3 -m pytest bench/bench_engine.py --benchmark-storage=file://bench/baselines
"""

from __future__ import annotations

import itertools
import random

import pytest

from bench.corpus import random_stm
from engine import EngineConfig, Observation, SessionState

SIZES = [1_000, 10_000, 100_000, pytest.param(1_000_000, marks=pytest.mark.million)]
CONFIG = EngineConfig()


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


@pytest.mark.parametrize("n_patterns", SIZES)
def test_predictions(benchmark, knowledge_base, record, n_patterns):
    kb = knowledge_base(n_patterns)
    rng = random.Random(11)
    stms = [random_stm(rng) for _ in range(256)]
    cycle = itertools.cycle(stms)
    counts = [len(kb.predict(stm, CONFIG).predictions) for stm in stms]
    rounds = 500 if n_patterns >= 1_000_000 else 2000
    benchmark.extra_info.update(
        operation="KnowledgeBase.predict", patterns=n_patterns, stms=len(stms), stm_events="3-5",
        stm_symbols_mean=sum(sum(len(e) for e in s) for s in stms) / len(stms),
        predictions_mean=sum(counts) / len(counts), predictions_max=max(counts),
        recall_threshold=CONFIG.recall_threshold, max_predictions=CONFIG.max_predictions, rounds=rounds,
    )
    print(f"\npredictions: {n_patterns:,} patterns, {len(stms)} STMs of 3-5 events, "
          f"mean {benchmark.extra_info['predictions_mean']:.1f} predictions per call, {rounds} rounds")
    benchmark.pedantic(lambda: kb.predict(next(cycle), CONFIG), rounds=rounds, iterations=1,
                       warmup_rounds=50)
    record("predictions", _size(n_patterns))


@pytest.mark.parametrize("n_patterns", SIZES)
def test_learn(benchmark, knowledge_base, record, n_patterns):
    kb = knowledge_base(n_patterns)
    rng = random.Random(13)
    session = SessionState()

    def setup():
        session.stm = random_stm(rng) + random_stm(rng)
        return (), {}

    benchmark.extra_info.update(operation="KnowledgeBase.learn", patterns=n_patterns, stm_events="6-10",
                                rounds=2000)
    print(f"\nlearn: new pattern of 6-10 events into a KB of {n_patterns:,} patterns, 2000 rounds")
    benchmark.pedantic(lambda: kb.learn(session, CONFIG), setup=setup, rounds=2000, iterations=1)
    record("learn", _size(n_patterns))


@pytest.mark.parametrize("n_patterns", SIZES)
def test_observe(benchmark, knowledge_base, record, n_patterns):
    """observe with observe-time predictions (the default), STM kept at 1-5 events."""
    kb = knowledge_base(n_patterns)
    rng = random.Random(17)
    events = [random_stm(rng)[0] for _ in range(512)]
    cycle = itertools.cycle(events)
    session = SessionState()
    rounds = 500 if n_patterns >= 1_000_000 else 2000

    def setup():
        if len(session.stm) >= 5:
            session.stm = []
        return (Observation(strings=next(cycle)),), {}

    benchmark.extra_info.update(operation="KnowledgeBase.observe", patterns=n_patterns,
                                event_symbols="1-5", stm_events="1-5 (cleared after 5)",
                                process_predictions=CONFIG.process_predictions, rounds=rounds)
    print(f"\nobserve: 1-5 symbols into an STM of 1-5 events, predictions on every observe, "
          f"{n_patterns:,} patterns, {rounds} rounds")
    benchmark.pedantic(lambda obs: kb.observe(session, obs, CONFIG), setup=setup, rounds=rounds,
                       iterations=1, warmup_rounds=0)
    record("observe", _size(n_patterns))
