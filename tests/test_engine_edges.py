"""Edge cases of the compiled engine (engine.md §1–§4), each checked independently.

Expected values come from the spec's rules computed here (hashlib for names, numpy
for vector names, plain arithmetic) or from the reference model
(tests/reference_model.py) on the same inputs; never from the engine itself, except
where the property *is* agreement between two engine paths (rebuild, replay,
threads).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

import msgspec
import numpy
import pytest

from engine import (
    EngineConfig,
    EngineError,
    InvalidConfiguration,
    InvalidObservation,
    KnowledgeBase,
    LearnedPattern,
    Observation,
    SessionState,
    SingleSymbolPrediction,
    VectorSumError,
)
from tests.reference_model import ReferenceKB, ReferenceSession
from tests.test_engine_model import assert_same, compare_predictions

DEFAULT = EngineConfig()


# ----------------------------------------------------------------------------- helpers


def sha1_name(events) -> str:
    """engine.md §2.1, computed independently: sha1 of Python's str() of the event list."""
    return hashlib.sha1(str(events).encode("utf-8")).hexdigest()


class Pair:
    """One engine knowledge base and one model knowledge base fed the same way."""

    def __init__(self, overrides=None):
        self.overrides = dict(overrides or {})
        self.config = DEFAULT.merged(self.overrides)
        self.kb = KnowledgeBase("edges")
        self.ref = ReferenceKB()

    def learn(self, events, emotives=(), metadata=()):
        """Learn ``events`` as a whole STM on both sides (a manual learn)."""
        state = SessionState(stm=[list(ev) for ev in events], emotives_accumulator=[dict(e) for e in emotives],
                             metadata_accumulator=[dict(m) for m in metadata])
        name, record = self.kb.learn(state, self.config)
        session = ReferenceSession(self.ref, self.overrides)
        session.stm = [list(ev) for ev in events]
        session.emotives_accumulator = [dict(e) for e in emotives]
        session.metadata_accumulator = [dict(m) for m in metadata]
        assert name == session.learn()
        return name, record

    def check(self, stm, overrides=None):
        """Predictions for ``stm`` agree in full; returns the engine's PredictionSet."""
        cfg = dict(self.overrides, **(overrides or {}))
        result = self.kb.predict([list(ev) for ev in stm], DEFAULT.merged(cfg))
        session = ReferenceSession(self.ref, cfg)
        session.stm = [list(ev) for ev in stm]
        expected = session.predictions()
        compare_predictions(result.predictions, expected["predictions"])
        assert_same(msgspec.to_builtins(result.future_potentials), expected["future_potentials"], "future_potentials")
        return result


def dump(result) -> bytes:
    """A PredictionSet as canonical bytes (field order is the Struct's)."""
    return msgspec.json.encode(result)


def observe(kb, session, config=DEFAULT, **fields):
    return kb.observe(session, Observation(**fields), config)


# ----------------------------------------------------------------------------- empty STM, one symbol


def test_empty_stm_gives_no_predictions_and_learns_nothing():
    pair = Pair()
    pair.learn([["a"], ["b"]])
    result = pair.check([])
    assert result.predictions == [] and result.future_potentials == []
    assert pair.kb.predict([], DEFAULT).predictions == []
    session = SessionState()
    assert pair.kb.learn(session, DEFAULT) == ("", None)
    assert session.stm == [] and len(pair.kb) == 1


def test_empty_observation_changes_only_time_and_accumulators():
    kb, session = KnowledgeBase("e"), SessionState()
    observe(kb, session, strings=["a"])
    result = observe(kb, session, emotives={"joy": 1.0}, metadata={"k": "v"})
    assert session.stm == [["a"]] and result.time == session.time == 2
    assert result.auto_learned_pattern is None and result.predictions == []
    assert session.emotives_accumulator == [{"joy": 1.0}] and session.metadata_accumulator == [{"k": "v"}]


def test_one_symbol_is_not_learnable():
    kb, session = KnowledgeBase("e"), SessionState()
    observe(kb, session, strings=["single"])
    assert kb.learn(session, DEFAULT) == ("", None)
    assert len(kb) == 0 and session.stm == []


def test_single_symbol_path():
    pair = Pair()
    pair.learn([["hello"], ["world"]])
    pair.learn([["hello"], ["there"], ["friend"]])
    pair.learn([["bye"], ["hello"]])
    pair.learn([["hello", "zz"]])  # "hello" is the first symbol after sorting
    result = pair.check([["hello"]])
    assert all(isinstance(p, SingleSymbolPrediction) for p in result.predictions)
    # potential (1/len + 1)*1 + 1: the two length-2 patterns tie (ascending name), then length 3.
    tied = sorted([sha1_name([["hello"], ["world"]]), sha1_name([["hello", "zz"]])])
    assert [p.name for p in result.predictions] == tied + [sha1_name([["hello"], ["there"], ["friend"]])]
    assert [p.potential for p in result.predictions] == [2.5, 2.5, (1 / 3 + 1.0) * 1.0 + 1.0]
    assert result.predictions[-1].future == ["there", "friend"]
    # §3.9: recall_threshold is not applied on this path.
    assert len(pair.check([["hello"]], {"recall_threshold": 1.0}).predictions) == 3
    assert pair.check([["world"]]).predictions == []
    assert pair.check([["unknown"]]).predictions == []


# ----------------------------------------------------------------------------- unicode and names

UNICODE_EVENTS = [
    [["it's", 'a"b', "ü", "tab\t"]],
    [["both'\""], ["back\\slash"], ["new\nline", "cr\r"]],
    [["🙂", "👍🏽"], ["日本語"], ["\x00", "\x7f", "\u200b"]],
    [["\ud800", "lone"], ["\udfff"]],
    [[""], ["", "x"]],
]


@pytest.mark.parametrize("events", UNICODE_EVENTS, ids=range(len(UNICODE_EVENTS)))
def test_unicode_symbols_names_and_predictions(events):
    kb, session = KnowledgeBase("u"), SessionState()
    stored = []
    for ev in events:
        observe(kb, session, strings=ev)
        stored.append(sorted(ev))  # sort_symbols is on by default (code-point order)
    assert session.stm == stored
    name, _ = kb.learn(session, DEFAULT)
    assert name == "PTRN|" + sha1_name(stored)
    assert kb.pattern(name)["pattern_data"] == stored
    pair = Pair()
    pair.learn(stored)
    pair.learn([stored[0] + ["other"]])
    pair.check(stored)
    pair.check([stored[-1][:1]])
    pair.check(stored[:1] + [["other"]], {"recall_threshold": 0.0})


def test_spec_hash_example():
    # engine.md E11, with the name recomputed here.
    events = [["it's", 'a"b', "ü", "tab\t"]]
    assert sha1_name(events) == "5a08a8f01439eabc0fbb2fabb7cbf411f482fd8d"
    kb = KnowledgeBase("h")
    assert kb.learn(SessionState(stm=events), DEFAULT)[0] == "PTRN|5a08a8f01439eabc0fbb2fabb7cbf411f482fd8d"


def test_unsorted_events_keep_observation_order():
    kb, session = KnowledgeBase("s"), SessionState()
    config = DEFAULT.merged({"sort_symbols": False})
    observe(kb, session, config, strings=["z", "a", "z"])
    assert session.stm == [["z", "a", "z"]]  # duplicates kept, order kept
    assert kb.learn(session, config)[0] == "PTRN|" + sha1_name([["z", "a", "z"]])


# ----------------------------------------------------------------------------- sizes


def test_very_long_event():
    long_event = [f"s{i:04d}" for i in range(2000)]
    kb, session = KnowledgeBase("long"), SessionState()
    observe(kb, session, strings=long_event)
    name, _ = kb.learn(session, DEFAULT)
    assert name == "PTRN|" + sha1_name([sorted(long_event)])
    assert kb.pattern(name)["length"] == 2000
    pair = Pair({"recall_threshold": 0.0})
    pair.learn([long_event])
    pair.learn([long_event[:3], ["tail"]])
    pair.check([long_event[10:60], long_event[500:540]])
    pair.check([["tail"], long_event[:5]])
    pair.check([long_event[:1]])
    # A 2,000-symbol STM against short patterns (DP LCS path, 2,000 > 64).
    pair.check([long_event], {"recall_threshold": 0.001})


def test_thousands_of_patterns_sharing_one_symbol():
    kb = KnowledgeBase("shared")
    for i in range(5000):
        kb.learn(SessionState(stm=[["shared"], [f"u{i}"]]), DEFAULT)
    assert len(kb) == 5000
    index_of = {sha1_name([["shared"], [f"u{i}"]]): i for i in range(5000)}
    names = sorted(index_of)
    # General path: every pattern has similarity 0.5 and equal metrics; the top-K
    # pruning keeps 3*max_predictions, ties go to the ascending name (engine.md §3.12).
    result = kb.predict([["shared"], ["nothing"]], DEFAULT)
    assert [p.name for p in result.predictions] == names[:100]
    first = result.predictions[0]
    assert (first.similarity, first.matches, first.future) == (0.5, ["shared"], [[f"u{index_of[first.name]}"]])
    assert len({p.potential for p in result.predictions}) == 1
    assert dump(kb.predict([["shared"], ["nothing"]], DEFAULT)) == dump(result)
    # Single-symbol path: all 5,000 start with "shared"; same tie rule.
    single = kb.predict([["shared"]], DEFAULT.merged({"max_predictions": 7}))
    assert [p.name for p in single.predictions] == names[:7]
    # A distinguishing symbol wins outright.
    hit = kb.predict([["shared"], ["u4321"]], DEFAULT)
    assert hit.predictions[0].name == sha1_name([["shared"], ["u4321"]])
    assert hit.predictions[0].similarity == 1.0


def test_shared_symbol_against_model():
    """The same shape, small enough for the model: pruning (400 > 3*10) and ties."""
    pair = Pair({"max_predictions": 10})
    for i in range(400):
        pair.learn([["shared"], [f"u{i % 150}"], [f"v{i}"]] if i % 3 else [["shared"], [f"u{i}"]])
    pair.check([["shared"], ["u7"]])
    pair.check([["shared"], ["u7"], ["v7"]])
    pair.check([["shared"]])
    pair.check([["shared"], ["zzz"]], {"recall_threshold": 0.0})
    pair.check([["u1"], ["shared"]], {"rank_sort_algo": "similarity"})


def test_fuzzy_matched_state_token_enters_probability_cache():
    """Regression: §3.7 caches p(s) for every symbol of `matches`; with fuzzy matching
    (§3.10) those are state tokens, possibly absent from every present region."""
    pair = Pair({"recall_threshold": 0.3, "fuzzy_token_threshold": 0.8})
    pair.learn([["a"], ["cat"]])
    pair.learn([["cart"], ["z1"], ["z2"], ["z3"], ["z4"], ["z5"]])  # "cart" known, similarity 0.25
    (p,) = pair.check([["a"], ["cart"]]).predictions
    assert p.matches == ["a", "cart"] and p.present == [["a"]]
    # p(a) = p(cart) = 1/2: sv = [a: .5, cart: .5], pv = [a: .5]  ->  cos = 1/sqrt(2).
    assert p.itfdf_similarity == 1 - (1 - 0.5 * 0.5 / (0.5 * math.sqrt(0.5 * 0.5 + 0.5 * 0.5)))
    assert p.itfdf_similarity == 0.7071067811865475


# ----------------------------------------------------------------------------- learning statistics


def test_duplicate_learns_increment_frequency_and_statistics():
    pair = Pair({"persistence": 3})
    events = [["a", "b"], ["a"]]
    for n in range(1, 5):
        name, record = pair.learn(events, emotives=[{"joy": float(n)}], metadata=[{"run": n}])
        assert record.frequency == n
        stored = pair.kb.pattern(name)
        assert stored["frequency"] == n and stored == pair.ref.pattern(name)
    assert stored["emotives"] == [{"joy": 2.0}, {"joy": 3.0}, {"joy": 4.0}]  # last `persistence`
    assert stored["metadata"] == {"run": ["1", "2", "3", "4"]}
    index = pair.kb.index
    # §2.2 / D6: total_pattern_frequencies counts new patterns only.
    assert (index.total_unique_patterns, index.total_pattern_frequencies) == (1, 1)
    assert index.total_symbols_in_patterns_frequencies == 4 * 3
    assert dict((s, (f, m)) for s, f, m in index.symbol_stats()) == {"a": (8, 1), "b": (4, 1)}
    result = pair.check([["a", "b"], ["a"]])
    assert result.predictions[0].frequency == 4
    assert result.predictions[0].emotives == {"joy": 3.0}
    # Re-learn without emotives or metadata leaves them untouched.
    pair.learn(events)
    assert pair.kb.pattern(name)["emotives"] == stored["emotives"]


# ----------------------------------------------------------------------------- threshold and truncation


def test_recall_threshold_zero_admits_zero_overlap():
    pair = Pair({"recall_threshold": 0.0})
    name, _ = pair.learn([["x1"], ["x2"]])
    result = pair.check([["unknown1"], ["unknown2"]])
    (p,) = result.predictions
    assert "PTRN|" + p.name == name
    assert (p.similarity, p.matches, p.fragmentation, p.snr) == (0.0, [], -1.0, -1.0)
    assert (p.past, p.present, p.future) == ([], [["x1"], ["x2"]], [])
    assert p.extras == [["unknown1"], ["unknown2"]] and p.potential == 0.0
    assert pair.check([["unknown1"], ["unknown2"]], {"recall_threshold": 0.1}).predictions == []


def test_recall_threshold_one_keeps_only_exact():
    pair = Pair({"recall_threshold": 1.0})
    exact, _ = pair.learn([["a"], ["b"], ["c"]])
    pair.learn([["a"], ["b"], ["c"], ["d"]])
    pair.learn([["a"], ["b"]])
    result = pair.check([["a"], ["b"], ["c"]])
    assert ["PTRN|" + p.name for p in result.predictions] == [exact]
    assert result.predictions[0].similarity == 1.0
    assert pair.check([["c"], ["b"], ["a"]]).predictions == []


def test_threshold_boundary_is_inclusive_on_round_tripped_value():
    # engine.md E8: similarity (2*2/6*100)/100 = 0.6666666666666665.
    pair = Pair()
    pair.learn([["bound_a"], ["bound_b"], ["bound_c"], ["bound_d"]])
    stm = [["bound_a"], ["bound_b"]]
    assert len(pair.check(stm, {"recall_threshold": 0.6666666666666665}).predictions) == 1
    assert pair.check(stm, {"recall_threshold": 0.6666666666666666}).predictions == []


def test_max_predictions_truncation_and_tie_order():
    pair = Pair({"max_predictions": 3})
    names = []
    for tail in ("t1", "t2", "t3", "t4", "t5"):
        names.append(pair.learn([["p"], ["q"], [tail]])[0][len("PTRN|"):])
    result = pair.check([["p"], ["q"]])
    assert [p.name for p in result.predictions] == sorted(names)[:3]
    assert len({p.potential for p in result.predictions}) == 1
    # Every ranking key: ties still by ascending name.
    for key in ("similarity", "frequency", "confluence", "bayesian_posterior", "tfidf_score"):
        ranked = pair.check([["p"], ["q"]], {"rank_sort_algo": key})
        assert [p.name for p in ranked.predictions] == sorted(names)[:3]
    # future_potentials covers every candidate, not only the survivors.
    assert len(result.future_potentials) == 5


def test_pruning_keeps_best_pre_potential():
    # 7 candidates > 3*max_predictions(2): §3.7 prunes by pre-potential before metrics.
    pair = Pair({"max_predictions": 2, "recall_threshold": 0.0})
    for i in range(7):
        pair.learn([["k"]] + [[f"f{i}_{j}"] for j in range(i)] + [["m"]])
    pair.check([["k"], ["m"]])
    pair.check([["k"], ["zz"]])


# ----------------------------------------------------------------------------- validation

# engine.md §4: every parameter, with values outside its type or range.
INVALID = {
    "max_pattern_length": [-1, 1.5, "3", True],
    "persistence": [0, 101, 2.0, "5"],
    "recall_threshold": [-0.1, 1.1, "0.5", math.nan, math.inf, True],
    "stm_mode": [1, ["CLEAR"]],
    "max_predictions": [0, 10001, 5.0, False],
    "sort_symbols": [1, "true", 0],
    "process_predictions": [1, "false"],
    "use_token_matching": [0, "yes"],
    "fuzzy_token_threshold": [-0.5, 1.5, "0.1"],
    "rank_sort_algo": ["nope", "Potential", 3],
    "affinity_emotive": [5, ["joy"]],
    "indexer_type": ["KD", "vi", 1],
    "filter_pipeline": ["length", ["length", "nope"], [1], "x"],
    "length_min_ratio": [-0.1, 1.5, "0.5"],
    "length_max_ratio": [0.5, -1, "2"],
    "jaccard_threshold": [-0.01, 1.01],
    "jaccard_min_overlap": [0, -3, 1.5],
    "minhash_threshold": [-0.2, 2.0],
    "minhash_bands": [0, 101, 2.5],
    "minhash_rows": [0, 21],
    "minhash_num_hashes": [9, 257],
    "bloom_false_positive_rate": [0.00001, 0.2, 0],
    "max_candidates_per_stage": [99, -1, 1e6],
    "enable_filter_metrics": [1, "on"],
}
VALID_EDGES = {
    "max_pattern_length": [0, 10**6], "persistence": [1, 100], "recall_threshold": [0.0, 1.0, 0, 1],
    "stm_mode": ["CLEAR", "ROLLING"], "max_predictions": [1, 10000], "sort_symbols": [True, False],
    "fuzzy_token_threshold": [0.0, 1.0], "rank_sort_algo": ["potential", "tfidf_score", "weighted_snr"],
    "affinity_emotive": ["joy"], "indexer_type": ["VI", "LSH", "ANNOY", "FAISS"],
    "filter_pipeline": [[], ["minhash", "length", "jaccard", "bloom", "rapidfuzz"]],
    "length_min_ratio": [0.0, 1.0], "length_max_ratio": [1.0, 50.0], "jaccard_min_overlap": [1],
    "minhash_bands": [1, 100], "minhash_rows": [1, 20], "minhash_num_hashes": [10, 256],
    "bloom_false_positive_rate": [0.0001, 0.1], "max_candidates_per_stage": [100],
}


def test_every_parameter_is_validated():
    assert set(INVALID) == set(EngineConfig.__struct_fields__)


@pytest.mark.parametrize("param,value", [(k, v) for k, vs in INVALID.items() for v in vs])
def test_invalid_configuration_names_the_parameter(param, value):
    base = DEFAULT.merged({"max_predictions": 7})
    with pytest.raises(InvalidConfiguration) as info:
        base.merged({param: value})
    assert info.value.field == param
    assert list(info.value.errors) == [param]
    assert param in str(info.value)
    assert isinstance(info.value, EngineError) and isinstance(info.value, ValueError)
    assert base.max_predictions == 7  # nothing applied


def test_invalid_configuration_reports_every_bad_key_and_applies_nothing():
    with pytest.raises(InvalidConfiguration) as info:
        DEFAULT.merged({"persistence": 0, "recall_threshold": 0.5, "max_predictions": 0})
    assert set(info.value.errors) == {"persistence", "max_predictions"}
    assert info.value.field in info.value.errors
    assert DEFAULT.recall_threshold == 0.1


@pytest.mark.parametrize("param,value", [(k, v) for k, vs in VALID_EDGES.items() for v in vs])
def test_boundary_values_are_accepted(param, value):
    config = DEFAULT.merged({param: value})
    got = getattr(config, param)
    assert (list(got) if param == "filter_pipeline" else got) == value


def test_unknown_stm_mode_is_clear():
    assert DEFAULT.merged({"stm_mode": "SLIDING"}).stm_mode == "CLEAR"


# ----------------------------------------------------------------------------- bad observations

BAD_OBSERVATIONS = [
    ({"strings": ["ok", 3]}, "strings"),
    ({"strings": ["ok", None]}, "strings"),
    ({"strings": ["ok", b"bytes"]}, "strings"),
    ({"vectors": [["x", 1.0]]}, "vectors[0]"),
    ({"vectors": [[1.0], [True]]}, "vectors[1]"),
    ({"vectors": [[1.0, math.nan]]}, "vectors[0]"),
    ({"vectors": [[1.0, 2.0], [1.0, 2.0, 3.0]]}, "vectors"),
    ({"emotives": {"joy": math.nan}}, "emotives.joy"),
    ({"emotives": {"fear": math.inf}}, "emotives.fear"),
    ({"emotives": {"joy": "high"}}, "emotives.joy"),
    ({"metadata": {1: "x"}}, "metadata"),
]


@pytest.mark.parametrize("fields,field", BAD_OBSERVATIONS, ids=[f for _, f in BAD_OBSERVATIONS])
def test_invalid_observation_names_the_field_and_changes_nothing(fields, field):
    kb, session = KnowledgeBase("bad"), SessionState()
    observe(kb, session, strings=["before"], emotives={"joy": 1.0})
    snapshot = msgspec.json.encode(session)
    with pytest.raises(InvalidObservation) as info:
        observe(kb, session, **fields)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert msgspec.json.encode(session) == snapshot
    assert len(kb) == 0


def test_unsummable_vectors_raise_vector_sum_error():
    with pytest.raises(VectorSumError):
        observe(KnowledgeBase("v"), SessionState(), vectors=[[1, 2], [1, 2, 3]])


# ----------------------------------------------------------------------------- vectors


def vctr(*vectors) -> str:
    """engine.md §1.3, computed here: sha1 of numpy's str() of the left-to-right sum."""
    total = numpy.array(vectors[0])
    for v in vectors[1:]:
        total = total + numpy.array(v)
    return "VCTR|" + hashlib.sha1(str(total).encode("utf-8")).hexdigest()


def test_vector_symbol_names():
    assert vctr([1, 2], [3, 4]) == "VCTR|" + hashlib.sha1(b"[4 6]").hexdigest()
    assert vctr([1.0, 2.0, 3.0]) == "VCTR|" + hashlib.sha1(b"[1. 2. 3.]").hexdigest()
    kb = KnowledgeBase("v")
    for vectors in ([[1, 2], [3, 4]], [[1.0, 2.0, 3.0]], [[0.1] * 40], [[1.5, -2], [0, 0.25]], [list(range(1200))]):
        session = SessionState()
        observe(kb, session, strings=["s"], vectors=vectors)
        assert session.stm == [[vctr(*vectors), "s"]]  # vector part first, then strings


def test_vector_neighbours_come_from_learned_vectors():
    kb, config = KnowledgeBase("v"), DEFAULT
    session = SessionState()
    stored = [[0.0, 0.0], [10.0, 0.0], [0.0, 3.0], [1.0, 1.0]]
    for v in stored:
        observe(kb, session, vectors=[v])
    # Before any learn the store is empty: no neighbours.
    assert all(len(ev) == 1 for ev in session.stm)
    kb.learn(session, config)
    assert len(kb.vectors) == 4
    fresh = SessionState()
    observe(kb, fresh, vectors=[[0.5, 0.5]])
    # Three nearest of the four learned: (0,0), (1,1), (0,3) — not (10,0).
    expected = sorted({vctr([0.5, 0.5]), vctr([0.0, 0.0]), vctr([1.0, 1.0]), vctr([0.0, 3.0])})
    assert fresh.stm == [expected]
    # Without sorting: own name first, then nearest first.
    plain = SessionState()
    observe(kb, plain, DEFAULT.merged({"sort_symbols": False}), vectors=[[0.5, 0.5]], strings=["z", "a"])
    assert plain.stm == [[vctr([0.5, 0.5]), vctr([0.0, 0.0]), vctr([1.0, 1.0]), vctr([0.0, 3.0]), "z", "a"]]


def test_vectors_are_indexed_only_by_a_learn():
    kb, session = KnowledgeBase("v"), SessionState()
    observe(kb, session, vectors=[[1.0, 1.0]])
    session.clear()  # clear-stm drops pending vectors
    observe(kb, session, vectors=[[1.0, 2.0]], strings=["s"])
    assert len(kb.vectors) == 0
    kb.learn(session, DEFAULT)
    assert len(kb.vectors) == 1 and len(kb) == 1
    fresh = SessionState()
    observe(kb, fresh, vectors=[[1.0, 1.0]])
    assert fresh.stm == [sorted([vctr([1.0, 1.0]), vctr([1.0, 2.0])])]


# ----------------------------------------------------------------------------- knowledge-base lifecycle


def _teach_some(kb, config=DEFAULT):
    session = SessionState()
    for seq in ([["a"], ["b"], ["c"]], [["a"], ["b"], ["d"]], [["x"], ["y"]], [["b", "c"], ["e"]]):
        for ev in seq:
            observe(kb, session, config, strings=ev, emotives={"joy": float(len(ev))})
        kb.learn(session, config)
        session.clear()
    observe(kb, session, config, vectors=[[1.0, 2.0]], strings=["v"])
    kb.learn(session, config)


PROBES = [[["a"], ["b"]], [["b"], ["c"], ["e"]], [["x"]], [["a"]], [["q"], ["b"]]]


def test_knowledge_bases_are_isolated():
    one, two = KnowledgeBase("one"), KnowledgeBase("two")
    _teach_some(one)
    assert len(two) == 0 and len(two.vectors) == 0
    assert all(two.predict(stm, DEFAULT).predictions == [] for stm in PROBES)
    two.learn(SessionState(stm=[["a"], ["zz"]]), DEFAULT)
    before = [dump(one.predict(stm, DEFAULT)) for stm in PROBES]
    _teach_some(two)
    assert [dump(one.predict(stm, DEFAULT)) for stm in PROBES] == before
    assert one.pattern(sha1_name([["a"], ["zz"]])) is None
    one.clear()
    assert len(two) == 6 and len(two.vectors) == 1


def test_clear_resets_everything():
    kb = KnowledgeBase("c")
    _teach_some(kb)
    kb.finalize()
    kb.clear()
    index = kb.index
    assert len(kb) == 0 and len(kb.vectors) == 0
    assert (index.total_unique_patterns, index.total_pattern_frequencies,
            index.total_symbols_in_patterns_frequencies, index.learned_symbols) == (0, 0, 0, 0)
    assert index.symbol_stats() == [] and index.affinity_table() == {}
    assert all(kb.predict(stm, DEFAULT).predictions == [] for stm in PROBES)
    # After a clear the knowledge base behaves like a fresh one.
    fresh = KnowledgeBase("fresh")
    _teach_some(kb)
    _teach_some(fresh)
    for stm in PROBES:
        assert dump(kb.predict(stm, DEFAULT)) == dump(fresh.predict(stm, DEFAULT))
    assert kb.pattern(sha1_name([["a"], ["b"], ["c"]]))["frequency"] == 1


@pytest.mark.parametrize("order", ["learn", "reversed"])
def test_load_rebuild_reproduces_predictions(order):
    original = KnowledgeBase("orig")
    _teach_some(original)
    _teach_some(original)  # frequencies 2, merged emotives
    records = [original.pattern(name) for name in original.index.iter_names()]
    if order == "reversed":
        records.reverse()
    rebuilt = KnowledgeBase("rebuilt")
    assert rebuilt.load(records, original.index.affinity_table()) == len(records)
    for name in original.index.iter_names():
        assert rebuilt.pattern(name) == original.pattern(name)
    assert sorted(rebuilt.index.symbol_stats()) == sorted(original.index.symbol_stats())
    for key in ("total_unique_patterns", "total_pattern_frequencies", "total_symbols_in_patterns_frequencies"):
        assert getattr(rebuilt.index, key) == getattr(original.index, key)
    configs = [DEFAULT, DEFAULT.merged({"recall_threshold": 0.0, "max_predictions": 1}),
               DEFAULT.merged({"affinity_emotive": "joy"})]
    for config in configs:
        for stm in PROBES:
            assert dump(rebuilt.predict(stm, config)) == dump(original.predict(stm, config))
    original.finalize()
    rebuilt.finalize()
    for stm in PROBES:
        assert dump(rebuilt.predict(stm, DEFAULT)) == dump(original.predict(stm, DEFAULT))


def test_apply_replays_learns_into_another_knowledge_base():
    source, replica = KnowledgeBase("a"), KnowledgeBase("b")
    config = DEFAULT.merged({"max_pattern_length": 3, "stm_mode": "ROLLING", "persistence": 2})
    session = SessionState()
    applied: list[LearnedPattern] = []
    for i, sym in enumerate("abcabdabcxy"):
        result = observe(source, session, config, strings=[sym], emotives={"joy": float(i)}, metadata={"i": i})
        applied.extend(result.learned)
    for stm in ([["a"], ["b"]], [["x"], ["y"]], [["c"], ["a"]]):
        name, record = source.learn(SessionState(stm=stm, emotives_accumulator=[{"fear": 1.0}],
                                                 metadata_accumulator=[{"m": 1}]), config)
        applied.append(record)
    assert applied and all(isinstance(r, LearnedPattern) for r in applied)
    for record in applied:
        replica.apply(msgspec.json.decode(msgspec.json.encode(record), type=LearnedPattern))
    for name in source.index.iter_names():
        assert replica.pattern(name) == source.pattern(name)
    assert replica.index.affinity_table() == source.index.affinity_table()
    for cfg in (config, config.merged({"affinity_emotive": "joy", "recall_threshold": 0.0})):
        for stm in PROBES + [[["a"], ["b"], ["c"]]]:
            assert dump(replica.predict(stm, cfg)) == dump(source.predict(stm, cfg))


# ----------------------------------------------------------------------------- threads


def test_concurrent_predictions_while_learning():
    """Readers never crash and always see the state after some whole number of learns."""
    patterns = [[["t"], [f"n{i % 7}"], [f"m{i}"]] for i in range(60)]
    stms = [[["t"], ["n3"]], [["n1"], ["m5"]], [["t"]]]
    configs = [DEFAULT, DEFAULT.merged({"max_predictions": 2, "recall_threshold": 0.0})]
    # The expected answer after every prefix of the learns, from a sequential run.
    sequential = KnowledgeBase("seq")
    snapshots: list[dict[tuple[int, int], bytes]] = []
    for k in range(len(patterns) + 1):
        if k:
            sequential.learn(SessionState(stm=patterns[k - 1]), DEFAULT)
        snapshots.append({(s, c): dump(sequential.predict(stms[s], configs[c]))
                          for s in range(len(stms)) for c in range(len(configs))})
    positions: dict[tuple[tuple[int, int], bytes], list[int]] = {}
    for k, snap in enumerate(snapshots):
        for key, blob in snap.items():
            positions.setdefault((key, blob), []).append(k)

    kb = KnowledgeBase("shared")
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(5)
    seen_states: set[int] = set()

    def learner():
        try:
            start.wait()
            for pattern in patterns:
                kb.learn(SessionState(stm=pattern), DEFAULT)
                time.sleep(0.001)  # let the readers run between learns
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader(offset):
        last = 0
        try:
            start.wait()
            n = 0
            while not done.is_set() or n < 20:
                s, c = (n + offset) % len(stms), (n // len(stms) + offset) % len(configs)
                blob = dump(kb.predict(stms[s], configs[c]))
                # Consistent: equal to the answer after some prefix of the learns, and
                # that prefix never shrinks for one reader (learns are not undone).
                later = [k for k in positions.get(((s, c), blob), []) if k >= last]
                assert later, f"reader {offset}: prediction matches no state at or after {last} learns"
                last = later[0]
                seen_states.add(last)
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=learner))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(seen_states) > 5, "the readers never overlapped the learner"
    for s in range(len(stms)):
        for c in range(len(configs)):
            assert dump(kb.predict(stms[s], configs[c])) == snapshots[-1][(s, c)]
