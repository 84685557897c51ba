"""In-process engine benchmarks: learn and predictions at 1k, 10k and 100k patterns.

Corpus (seeded, bench/corpus.py): patterns of 5–20 events with 1–5 symbols each
over a 5,000-symbol vocabulary; STMs of 3–5 such events; default configuration
(recall_threshold 0.1, max_predictions 100). Run:

    python3 -m pytest bench/bench_engine.py --benchmark-storage=file://bench/baselines
"""

from __future__ import annotations

import itertools
import random

import pytest

from bench.corpus import random_stm
from engine import EngineConfig, SessionState

SIZES = [1_000, 10_000, 100_000]
CONFIG = EngineConfig()


@pytest.mark.parametrize("n_patterns", SIZES)
def test_predictions(benchmark, knowledge_base, record, n_patterns):
    kb = knowledge_base(n_patterns)
    rng = random.Random(11)
    stms = [random_stm(rng) for _ in range(256)]
    cycle = itertools.cycle(stms)
    counts = [len(kb.predict(stm, CONFIG).predictions) for stm in stms]
    benchmark.extra_info.update(
        patterns=n_patterns, stm_events="3-5", stm_symbols_mean=sum(
            sum(len(e) for e in s) for s in stms) / len(stms),
        predictions_mean=sum(counts) / len(counts), recall_threshold=CONFIG.recall_threshold,
        max_predictions=CONFIG.max_predictions,
    )
    print(f"\npredictions: {n_patterns:,} patterns, 256 STMs of 3-5 events, "
          f"mean {benchmark.extra_info['predictions_mean']:.1f} predictions per call")
    benchmark.pedantic(lambda: kb.predict(next(cycle), CONFIG), rounds=2000, iterations=1,
                       warmup_rounds=50)
    record("predictions", f"{n_patterns:,}")


@pytest.mark.parametrize("n_patterns", SIZES)
def test_learn(benchmark, knowledge_base, record, n_patterns):
    kb = knowledge_base(n_patterns)
    rng = random.Random(13)
    session = SessionState()

    def setup():
        session.stm = random_stm(rng) + random_stm(rng)
        return (), {}

    benchmark.extra_info.update(patterns=n_patterns, stm_events="6-10")
    print(f"\nlearn: new pattern of 6-10 events into a KB of {n_patterns:,} patterns")
    benchmark.pedantic(lambda: kb.learn(session, CONFIG), setup=setup, rounds=2000, iterations=1)
    record("learn", f"{n_patterns:,}")
