"""Property tests: the compiled engine against the pure-Python reference model (style E9).

A Hypothesis state machine drives one :class:`engine.KnowledgeBase` and one
:class:`tests.reference_model.ReferenceKB` through the same random observe / learn /
clear-stm / predictions / finalize / reconfigure steps, over one or two sessions with
random configurations, and compares every result in full: observe results, learn
names, the WHOLE prediction lists (every field, floats bit for bit), future
potentials, stored pattern records and the knowledge-base statistics.

Beside it: a ``@given`` test with STMs longer than 64 tokens (the engine's LCS
switches from the bit-parallel kernel to the DP kernel there) and direct tests of the
alignment kernels against difflib and a plain LCS programme.

The Hypothesis budget is fixed and derandomized (no example database) so CI is
deterministic and the file runs in a few seconds.
"""

from __future__ import annotations

import difflib
import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine import EngineConfig, KnowledgeBase, Observation, SessionState
from engine.config import RANK_SORT_KEYS
from engine.matching import get_matching_blocks, lcs_length
from tests.reference_model import ReferenceKB, ReferenceSession
from tests.reference_model import lcs_length as model_lcs_length

# ----------------------------------------------------------------------------- comparison


def assert_same(actual, expected, path="result"):
    """Recursive exact equality; ints, floats, bools and None must also agree in type.

    Floats are compared bit for bit (``==``): the engine evaluates every formula in
    the spec's operation order, as the model does, so no tolerance is needed (the
    1e-12 allowance of engine.md W4 only concerns a numpy/BLAS implementation).
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not a dict"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{path}: {actual!r} is not a list"
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert type(actual) is type(expected), f"{path}: {actual!r} ({type(actual).__name__}) != {expected!r}"
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def same_emotive_keys(actual, expected, path):
    """Emotive dicts: same key order too (averages are reported in first-seen order)."""
    assert list(actual) == list(expected), f"{path}: key order {list(actual)} != {list(expected)}"


def compare_predictions(actual, expected, path="predictions"):
    """Engine Structs (via msgspec.to_builtins) vs model dicts: every field, in rank order."""
    actual = msgspec.to_builtins(actual)
    assert [p["name"] for p in actual] == [p["name"] for p in expected], (
        f"{path}: order {[p['name'][:8] for p in actual]} != {[p['name'][:8] for p in expected]}")
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_same(a, e, f"{path}[{i}]")
        same_emotive_keys(a["emotives"], e["emotives"], f"{path}[{i}].emotives")


def compare_kb(kb: KnowledgeBase, ref: ReferenceKB):
    """Stored pattern records and the statistics the metrics read (engine.md §2.2, §3.8)."""
    index = kb.index
    assert len(kb) == len(ref.patterns)
    assert sorted(index.iter_names()) == sorted(ref.patterns)
    for name in ref.patterns:
        assert_same(dict(kb.pattern(name)), ref.pattern(name), f"pattern[{name[:8]}]")
        assert_same(dict(kb.pattern("PTRN|" + name)), ref.pattern(name), f"pattern[PTRN|{name[:8]}]")
    assert index.total_unique_patterns == ref.total_unique_patterns
    assert index.total_pattern_frequencies == ref.total_pattern_frequencies
    assert index.total_symbols_in_patterns_frequencies == ref.total_symbols_in_patterns_frequencies
    stats = {s: (freq, pmf) for s, freq, pmf in index.symbol_stats()}
    expected = {s: (ref.symbol_frequency[s], ref.pattern_member_frequency[s]) for s in ref.symbol_frequency}
    assert stats == expected
    assert_same(index.affinity_table(), ref.affinity, "affinity")


# ----------------------------------------------------------------------------- strategies

# Small alphabets so that patterns overlap; the awkward symbols exercise the repr-based
# pattern hash (quotes, backslash, tab, non-ASCII, emoji, a lone surrogate, "").
ALPHABET = ["a", "b", "c", "d", "e"]
AWKWARD = ["", "it's", 'say "hi"', "back\\slash", "tab\t", "ü", "🙂", "\ud800", "Ω"]
# Near-miss words for fuzzy token matching (§3.10): ratio("cart", "cat") = 85.7...
FUZZY = ["cat", "cart", "cast", "bat"]
symbols = st.one_of(st.sampled_from(ALPHABET), st.sampled_from(AWKWARD), st.sampled_from(FUZZY))
events = st.lists(symbols, min_size=0, max_size=4)
EMOTIVE_KEYS = ["joy", "fear"]
emotive_values = st.sampled_from([0.0, 0.5, -1.0, 2.25, 1e-3, 3.0, 7])
emotives = st.one_of(
    st.just({}),
    st.dictionaries(st.sampled_from(EMOTIVE_KEYS), emotive_values, max_size=2),
)
metadata = st.one_of(
    st.just({}),
    st.dictionaries(st.sampled_from(["src", "n"]), st.one_of(st.sampled_from(["x", "y"]), st.integers(0, 2)),
                    max_size=2),
)
thresholds = st.one_of(
    st.sampled_from([0.0, 0.0, 0.1, 0.3, 0.5, 0.6666666666666665, 0.6666666666666666, 0.8, 1.0]),
    st.floats(0.0, 1.0),
)
NON_WEIGHTED_KEYS = [k for k in RANK_SORT_KEYS if not k.startswith("weighted_")]


@st.composite
def configs(draw):
    """A session configuration (engine.md §4) as an override map for both sides."""
    affinity = draw(st.sampled_from([None, None, "joy"]))
    keys = NON_WEIGHTED_KEYS + ([k for k in RANK_SORT_KEYS if k.startswith("weighted_")] if affinity else [])
    return {
        "recall_threshold": draw(thresholds),
        # Small caps trigger the top-K pruning of §3.7 (len(C) > 3*max_predictions).
        "max_predictions": draw(st.sampled_from([1, 1, 2, 3, 100])),
        "max_pattern_length": draw(st.sampled_from([0, 0, 1, 2, 3, 4])),
        "stm_mode": draw(st.sampled_from(["CLEAR", "ROLLING"])),
        "persistence": draw(st.integers(1, 4)),
        "sort_symbols": draw(st.booleans()),
        "process_predictions": draw(st.booleans()),
        "use_token_matching": draw(st.sampled_from([True, True, True, False])),
        "fuzzy_token_threshold": draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, 0.8, 1.0])),
        "affinity_emotive": affinity,
        "rank_sort_algo": draw(st.sampled_from(["potential", "potential"] + keys)),
    }


# ----------------------------------------------------------------------------- the machine


class EngineVsModel(RuleBasedStateMachine):
    """One knowledge base, one or two sessions, each with its own configuration."""

    def __init__(self):
        super().__init__()
        self.kb = KnowledgeBase("model-test")
        self.ref = ReferenceKB()
        self.sessions: list[tuple[SessionState, EngineConfig, ReferenceSession]] = []

    @initialize(session_configs=st.lists(configs(), min_size=1, max_size=2))
    def start(self, session_configs):
        for cfg in session_configs:
            self.sessions.append((SessionState(), EngineConfig().merged(cfg), ReferenceSession(self.ref, cfg)))

    def _session(self, i):
        return self.sessions[i % len(self.sessions)]

    def _compare_session(self, state, ref):
        assert_same(state.stm, ref.stm, "stm")
        assert state.time == ref.time
        assert_same(state.emotives_accumulator, ref.emotives_accumulator, "emotives_accumulator")
        assert_same(state.metadata_accumulator, ref.metadata_accumulator, "metadata_accumulator")

    def _observe(self, i, strings, vectors, emo, meta):
        state, config, ref = self._session(i)
        result = self.kb.observe(state, Observation(strings=list(strings), vectors=vectors,
                                                    emotives=dict(emo), metadata=dict(meta)), config)
        expected = ref.observe(strings, vectors, emo, meta)
        assert result.auto_learned_pattern == expected["auto_learned_pattern"]
        assert result.time == expected["time"] == state.time
        assert result.stm_length == len(expected["stm"])
        assert_same(state.stm, expected["stm"], "stm")
        compare_predictions(result.predictions, expected["predictions"], "observe.predictions")
        assert [("PTRN|" + r.name) for r in result.learned] == (
            [expected["auto_learned_pattern"]] if expected["auto_learned_pattern"] else [])
        self._compare_session(state, ref)

    @rule(i=st.integers(0, 1), strings=events, emo=emotives, meta=metadata)
    def observe(self, i, strings, emo, meta):
        self._observe(i, strings, [], emo, meta)

    @rule(i=st.integers(0, 1), sequence=st.lists(st.lists(symbols, min_size=1, max_size=3), min_size=1, max_size=4),
          emo=emotives, meta=metadata)
    def teach(self, i, sequence, emo, meta):
        """Observe a short sequence, then learn it (grows the knowledge base quickly)."""
        for n, event in enumerate(sequence):
            self._observe(i, event, [], emo if n == 0 else {}, meta if n == 0 else {})
        self.learn(i)

    @precondition(lambda self: self.ref.patterns)
    @rule(i=st.integers(0, 1), data=st.data(), emo=emotives)
    def observe_known_events(self, i, data, emo):
        """Observe a few consecutive events of a learned pattern (predictions with real matches)."""
        name = data.draw(st.sampled_from(sorted(self.ref.patterns)))
        pattern = self.ref.patterns[name]["pattern_data"]
        start = data.draw(st.integers(0, len(pattern) - 1))
        stop = data.draw(st.integers(start + 1, min(len(pattern), start + 3)))
        for n, event in enumerate(pattern[start:stop]):
            self._observe(i, event, [], emo if n == 0 else {}, {})

    @precondition(lambda self: self.ref.stored_vectors == 0)
    @rule(i=st.integers(0, 1), strings=events,
          vectors=st.integers(1, 3).flatmap(lambda n: st.lists(
              st.lists(st.sampled_from([0, 1, 2, 0.5, -1.5]), min_size=n, max_size=n), min_size=1, max_size=2)))
    def observe_vectors(self, i, strings, vectors):
        """Vector observations while the vector store is empty (the model has no ANN search)."""
        self._observe(i, strings, vectors, {}, {})

    @rule(i=st.integers(0, 1))
    def learn(self, i):
        state, config, ref = self._session(i)
        name, record = self.kb.learn(state, config)
        assert name == ref.learn()
        assert (record is None) == (name == "")
        if record is not None:
            assert "PTRN|" + record.name == name
        self._compare_session(state, ref)

    @rule(i=st.integers(0, 1))
    def clear_stm(self, i):
        state, _, ref = self._session(i)
        state.clear()
        ref.clear_stm()
        self._compare_session(state, ref)

    @rule(i=st.integers(0, 1))
    def predictions(self, i):
        state, config, ref = self._session(i)
        result = self.kb.predict(state.stm, config)
        expected = ref.predictions()
        compare_predictions(result.predictions, expected["predictions"])
        assert_same(msgspec.to_builtins(result.future_potentials), expected["future_potentials"],
                    "future_potentials")

    def _predict_stm(self, i, stm):
        _, config, ref = self._session(i)
        probe = ReferenceSession(self.ref, ref.config)
        probe.stm = [list(ev) for ev in stm]
        result = self.kb.predict([list(ev) for ev in stm], config)
        expected = probe.predictions()
        compare_predictions(result.predictions, expected["predictions"])
        assert_same(msgspec.to_builtins(result.future_potentials), expected["future_potentials"],
                    "future_potentials")

    @rule(i=st.integers(0, 1), stm=st.lists(st.lists(symbols, min_size=1, max_size=3), max_size=4))
    def predict_any_stm(self, i, stm):
        """Predictions for an arbitrary STM, under a session's configuration."""
        self._predict_stm(i, stm)

    @precondition(lambda self: self.ref.patterns)
    @rule(i=st.integers(0, 1), data=st.data())
    def predict_first_symbol(self, i, data):
        """Single-symbol path (§3.9) on a symbol that starts patterns: ties by name."""
        name = data.draw(st.sampled_from(sorted(self.ref.patterns)))
        self._predict_stm(i, [[self.ref.patterns[name]["pattern_data"][0][0]]])

    @rule()
    def finalize(self):
        assert self.kb.finalize() == self.ref.finalize_training()

    @rule(i=st.integers(0, 1), cfg=configs())
    def reconfigure(self, i, cfg):
        """A session update: the STM is kept (e.g. ROLLING with a shorter window, W11)."""
        state, _, ref = self._session(i)
        ref.config.update(cfg)
        self.sessions[i % len(self.sessions)] = (state, EngineConfig().merged(cfg), ref)

    @invariant()
    def knowledge_bases_agree(self):
        compare_kb(self.kb, self.ref)


EngineVsModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineVsModel = EngineVsModel.TestCase


# ----------------------------------------------------------------------------- long STMs


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    learned=st.lists(st.lists(st.lists(st.sampled_from(ALPHABET[:4]), min_size=1, max_size=3),
                              min_size=1, max_size=40), min_size=1, max_size=6),
    stm_tokens=st.sampled_from([63, 64, 65, 66, 100, 130]),
    seed=st.integers(0, 2**16),
    cfg=configs(),
)
def test_long_stm_matches_model(learned, stm_tokens, seed, cfg):
    """STMs of 63..130 tokens: around the engine's 64-token switch to the DP LCS."""
    cfg = dict(cfg, max_pattern_length=0, recall_threshold=min(cfg["recall_threshold"], 0.5))
    kb, ref = KnowledgeBase("long"), ReferenceKB()
    config = EngineConfig().merged(cfg)
    for pattern in learned:
        state, session = SessionState(stm=[list(ev) for ev in pattern]), ReferenceSession(ref, cfg)
        session.stm = [list(ev) for ev in pattern]
        assert kb.learn(state, config)[0] == session.learn()
    rng = random.Random(seed)
    # Mostly pieces of learned patterns, so the long STM has long common subsequences.
    tokens: list[str] = []
    while len(tokens) < stm_tokens:
        if rng.random() < 0.7:
            tokens.extend(s for ev in rng.choice(learned) for s in ev)
        else:
            tokens.append(rng.choice(ALPHABET))
    tokens = tokens[:stm_tokens]
    stm, i = [], 0
    while i < len(tokens):
        n = rng.randint(1, 3)
        stm.append(sorted(tokens[i:i + n]) if cfg["sort_symbols"] else tokens[i:i + n])
        i += n
    session = ReferenceSession(ref, cfg)
    session.stm = [list(ev) for ev in stm]
    result = kb.predict(stm, config)
    expected = session.predictions()
    compare_predictions(result.predictions, expected["predictions"])
    assert_same(msgspec.to_builtins(result.future_potentials), expected["future_potentials"], "future_potentials")


# ----------------------------------------------------------------------------- kernels

KERNEL_LENGTHS = [0, 1, 2, 63, 64, 65, 200]


def _random_pair(rng, la, lb, alphabet):
    return ([rng.choice(alphabet) for _ in range(la)], [rng.choice(alphabet) for _ in range(lb)])


def _difflib_blocks(a, b):
    return [tuple(blk) for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()[:-1]]


@pytest.mark.parametrize("la", KERNEL_LENGTHS)
@pytest.mark.parametrize("lb", KERNEL_LENGTHS)
def test_kernels_fixed_lengths(la, lb):
    """Matching blocks equal difflib's (autojunk off), LCS equals the DP, at the size edges."""
    rng = random.Random(la * 1000 + lb)
    for alphabet in (["x"], ["x", "y"], list("abcdefgh"), [str(i) for i in range(300)]):
        a, b = _random_pair(rng, la, lb, alphabet)
        assert get_matching_blocks(a, b) == _difflib_blocks(a, b)
        assert lcs_length(a, b) == model_lcs_length(a, b)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(a=st.lists(st.sampled_from("abcd"), max_size=80), b=st.lists(st.sampled_from("abcde"), max_size=80))
def test_kernels_random(a, b):
    # lcs_length also cross-checks the bit-parallel kernel against the DP for len(b) <= 64.
    assert get_matching_blocks(a, b) == _difflib_blocks(a, b)
    assert lcs_length(a, b) == model_lcs_length(a, b)
    assert lcs_length(b, a) == lcs_length(a, b)


def test_kernels_accept_any_hashable_symbols():
    a = ["é", "🙂", "", "\ud800", "a"]
    b = ["🙂", "a", "", "é"]
    assert get_matching_blocks(a, b) == _difflib_blocks(a, b)
    assert lcs_length(a, b) == model_lcs_length(a, b)
