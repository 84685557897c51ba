"""Every worked example of engine-examples.json, one test case each, on the compiled engine."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from engine import EngineConfig, KnowledgeBase, Observation, SessionState
from tests.spec_paths import EXAMPLES_FILE

EXAMPLES = json.loads(EXAMPLES_FILE.read_text())["examples"]


def _assert_equal(actual, expected, path):
    if isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), path
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _assert_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_equal(a, e, f"{path}[{i}]")
    else:
        assert actual == expected and type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"


def _check_predictions(result, expect):
    preds = [msgspec.to_builtins(p) for p in result.predictions]
    if "count" in expect:
        assert len(preds) == expect["count"]
    for i, item in enumerate(expect.get("items", [])):
        for field, value in item.items():
            assert field in preds[i], f"prediction {i} lacks {field}"
            _assert_equal(preds[i][field], value, f"predictions[{i}].{field}")
    for field, spec in expect.get("first_item_approx", {}).items():
        assert math.isclose(preds[0][field], spec["value"], rel_tol=0, abs_tol=spec["tolerance"]), field
    for field in expect.get("absent_fields", []):
        assert all(field not in p for p in preds), f"{field} must be absent"
    if "future_potentials" in expect:
        _assert_equal(msgspec.to_builtins(result.future_potentials), expect["future_potentials"],
                      "future_potentials")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_example(example):
    config = EngineConfig().merged(example.get("config") or {})
    kb = KnowledgeBase("examples")
    session = SessionState()
    for step, op in enumerate(example["ops"]):
        kind = op["op"]
        if kind == "observe":
            result = kb.observe(session, Observation(strings=op.get("strings", []),
                                                     vectors=op.get("vectors", []),
                                                     emotives=op.get("emotives", {})), config)
            expect = op.get("expect", {})
            if "auto_learned_pattern" in expect:
                assert result.auto_learned_pattern == expect["auto_learned_pattern"], step
            if "stm" in expect:
                assert session.stm == expect["stm"], step
            if "time" in expect:
                assert session.time == expect["time"], step
            if "emotives_accumulator" in expect:
                assert session.emotives_accumulator == expect["emotives_accumulator"], step
        elif kind == "learn":
            name, _ = kb.learn(session, config)
            if "expect_name" in op:
                assert name == op["expect_name"], step
            if "expect_stored" in op:
                stored = kb.pattern(name)
                for field, value in op["expect_stored"].items():
                    _assert_equal(stored[field], value, f"stored.{field}")
        elif kind == "clear_stm":
            session.clear()
        elif kind == "predictions":
            _check_predictions(kb.predict(session.stm, config), op["expect"])
        else:  # pragma: no cover - a new op kind in the spec file must fail loudly
            raise AssertionError(f"unknown op {kind}")
