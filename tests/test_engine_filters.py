"""Candidate filter pipeline (engine.md §3.2): stages only ever drop candidates."""

from __future__ import annotations

import pytest

from engine import EngineConfig, KnowledgeBase, SessionState
from engine.observation import pattern_hash

PATTERNS = {
    "abc": [["a"], ["b"], ["c"]],                               # identical to the STM
    "wide": [["a"], ["b"], ["x"], ["y"], ["z"], ["w"]],         # Jaccard 2/7, length 6
    "long": [["a"], ["b"]] + [[f"f{i}"] for i in range(10)],   # length 12 > 2 × 3
}
STM = [["a"], ["b"], ["c"]]


@pytest.fixture(scope="module")
def kb():
    kb = KnowledgeBase("filters")
    session = SessionState()
    for events in PATTERNS.values():
        session.stm = [list(e) for e in events]
        kb.learn(session, EngineConfig())
    return kb


def _names(kb, pipeline, **overrides):
    config = EngineConfig().merged({"filter_pipeline": pipeline, "recall_threshold": 0.0, **overrides})
    return {p.name for p in kb.predict(STM, config).predictions}


NAME = {key: pattern_hash(events) for key, events in PATTERNS.items()}


def test_no_pipeline_keeps_every_candidate(kb):
    assert _names(kb, []) == set(NAME.values())


def test_length_stage(kb):
    # min_len = max(1, int(3 * 0.5)) = 1, max_len = int(3 * 2.0) = 6
    assert _names(kb, ["length"]) == {NAME["abc"], NAME["wide"]}


def test_length_zero_ratio_means_default(kb):
    # W9: an explicit 0.0 is "unset" and falls back to the default 0.5.
    assert _names(kb, ["length"], length_min_ratio=0.0) == {NAME["abc"], NAME["wide"]}


def test_jaccard_stage(kb):
    # wide: |P∩T| = 2, |P∪T| = 7 -> 0.2857 < 0.3; long: 2 / 13
    assert _names(kb, ["jaccard"]) == {NAME["abc"]}
    assert _names(kb, ["jaccard"], jaccard_threshold=0.25) == {NAME["abc"], NAME["wide"]}


def test_jaccard_min_overlap(kb):
    assert _names(kb, ["jaccard"], jaccard_threshold=0.1, jaccard_min_overlap=3) == {NAME["abc"]}


def test_minhash_stage_is_exact_jaccard(kb):
    assert _names(kb, ["minhash"], minhash_threshold=0.25) == {NAME["abc"], NAME["wide"]}
    assert _names(kb, ["minhash"]) == {NAME["abc"]}


def test_python_stage_first_is_skipped(kb):
    assert _names(kb, ["bloom", "length"]) == {NAME["abc"], NAME["wide"]}


@pytest.mark.parametrize("stage", ["bloom", "rapidfuzz"])
def test_non_dropping_stages(kb, stage):
    assert _names(kb, ["length", stage]) == {NAME["abc"], NAME["wide"]}


def test_filters_never_change_metrics(kb):
    base = {p.name: p for p in kb.predict(STM, EngineConfig().merged({"recall_threshold": 0.0})).predictions}
    config = EngineConfig().merged({"recall_threshold": 0.0, "filter_pipeline": ["length"]})
    for p in kb.predict(STM, config).predictions:
        assert p.similarity == base[p.name].similarity
        assert p.evidence == base[p.name].evidence
