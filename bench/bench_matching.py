"""Alignment kernels through their Python entry points (engine/matching.pyx).

What runs: a seeded pattern of ``la`` tokens against an STM of ``lb`` tokens that
shares about a third of its symbols with it. ``lcs_length`` runs the DP kernel
and, for STMs of at most 64 tokens, the bit-parallel kernel too (they are
cross-checked); ``get_matching_blocks`` is the difflib-compatible block finder.
Both figures include converting the two Python lists to local ids, which the
prediction pipeline does once per query instead. Run:

    python3 -m pytest bench/bench_matching.py --benchmark-storage=file://bench/baselines
"""

from __future__ import annotations

import random

import pytest

from engine.matching import get_matching_blocks, lcs_length

SHAPES = [(50, 12), (200, 60), (400, 200)]


def _pair(la: int, lb: int) -> tuple[list[str], list[str]]:
    rng = random.Random(la * 1000 + lb)
    a = [f"s{rng.randrange(200)}" for _ in range(la)]
    b = [rng.choice(a) if rng.random() < 0.35 else f"x{rng.randrange(200)}" for _ in range(lb)]
    return a, b


@pytest.mark.parametrize(("la", "lb"), SHAPES)
def test_lcs(benchmark, record, la, lb):
    a, b = _pair(la, lb)
    benchmark.extra_info.update(operation="engine.matching.lcs_length", pattern_tokens=la, stm_tokens=lb,
                                kernels="dp+bits" if lb <= 64 else "dp", lcs=lcs_length(a, b))
    print(f"\nlcs_length: pattern {la} tokens x STM {lb} tokens, LCS {benchmark.extra_info['lcs']}")
    benchmark.pedantic(lcs_length, args=(a, b), rounds=2000, iterations=1, warmup_rounds=20)
    record("lcs_length", f"{la}x{lb}")


@pytest.mark.parametrize(("la", "lb"), SHAPES)
def test_matching_blocks(benchmark, record, la, lb):
    a, b = _pair(la, lb)
    blocks = get_matching_blocks(a, b)
    benchmark.extra_info.update(operation="engine.matching.get_matching_blocks", pattern_tokens=la,
                                stm_tokens=lb, blocks=len(blocks))
    print(f"\nget_matching_blocks: pattern {la} tokens x STM {lb} tokens, {len(blocks)} blocks")
    benchmark.pedantic(get_matching_blocks, args=(a, b), rounds=2000, iterations=1, warmup_rounds=20)
    record("matching_blocks", f"{la}x{lb}")
