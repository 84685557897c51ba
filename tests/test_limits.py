"""Input limits and hostile bodies: every bad request is a 4xx naming the field, never a 500.

The limits (web/limits.py) are settings enforced inside msgspec decoding; here
they are set small so each one is easy to cross. The Hypothesis fuzz posts
arbitrary JSON, well-typed bodies that cross the limits, and raw bytes to the
observe routes and asserts no server error and no change to the session on a
refusal. Bounded: a few hundred examples in all, a few seconds.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from web.app import create_app
from web.limits import Limits
from web.settings import Settings, SettingsError

SMALL = Limits(max_symbol_length=8, max_symbols_per_event=4, max_sequence_length=3, max_vector_dimension=5,
               max_emotives=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One app with small limits and a 4 KiB body limit, shared by the module (Hypothesis reuses it)."""
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("limits") / "data"), log_level="WARNING",
                        limits=SMALL, max_request_bytes=4096)
    with TestClient(create_app(settings)) as client:
        yield client


def _session(client) -> str:
    resp = client.post("/sessions", json={"node_id": "limits"})
    assert resp.status_code == 200, resp.text
    return resp.json()["session_id"]


def _time(client, sid: str) -> int:
    return client.get(f"/sessions/{sid}/cognition-data").json()["cognition_data"]["time"]


def test_limits_have_documented_defaults_and_come_from_the_environment():
    assert Settings().limits == Limits(max_symbol_length=10_000, max_symbols_per_event=10_000,
                                       max_sequence_length=10_000, max_vector_dimension=65_536, max_emotives=1_000)
    assert Settings().max_request_bytes == 100 * 1024 * 1024
    env = {"KATO_MAX_SYMBOL_LENGTH": "8", "KATO_MAX_SYMBOLS_PER_EVENT": "4", "KATO_MAX_SEQUENCE_LENGTH": "3",
           "KATO_MAX_VECTOR_DIMENSION": "5", "KATO_MAX_EMOTIVES": "2", "KATO_MAX_REQUEST_BYTES": "4096"}
    read = Settings.from_env(env)
    assert read.limits == SMALL and read.max_request_bytes == 4096
    for name in env:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: "0"})


@pytest.mark.parametrize("body, loc, kind", [
    ({"strings": list("abcde")}, ["body", "strings"], "too_long"),
    ({"strings": ["ok", "123456789"]}, ["body", "strings", 1], "string_too_long"),
    ({"vectors": [[1.0]] * 5}, ["body", "vectors"], "too_long"),
    ({"vectors": [[1, 2], [1, 2, 3, 4, 5, 6]]}, ["body", "vectors", 1], "too_long"),
    ({"emotives": {"a": 1, "b": 2, "c": 3}}, ["body", "emotives"], "too_long"),
    ({"emotives": {"joy": 1, "much-too-long": 2}}, ["body", "emotives", "much-too-long"], "string_too_long"),
])
def test_each_observation_limit_is_422_naming_the_field(small, body, loc, kind):
    sid = _session(small)
    resp = small.post(f"/sessions/{sid}/observe", json=body)
    assert resp.status_code == 422, resp.text
    item = resp.json()["detail"][0]
    assert item["loc"] == loc and item["type"] == kind and item["ctx"]["max_length"] > 0
    assert "at most" in item["msg"]
    assert _time(small, sid) == 0   # nothing was applied


def test_sequence_and_session_limits_name_the_field(small):
    sid = _session(small)
    resp = small.post(f"/sessions/{sid}/observe-sequence", json={"observations": [{}] * 4})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "observations"]
    resp = small.post(f"/sessions/{sid}/observe-sequence",
                      json={"observations": [{"strings": ["a"]}, {"vectors": [[0.0] * 6]}]})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "observations", 1, "vectors", 0]
    resp = small.post(f"/sessions/{sid}/observe-sequence", json={"observations": [{"unique_id": "x" * 9}]})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "observations", 0, "unique_id"]
    assert _time(small, sid) == 0
    resp = small.post("/sessions", json={"node_id": "n" * 9})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "node_id"]


def test_inputs_at_the_limits_are_accepted(small):
    sid = _session(small)
    body = {"strings": ["12345678"] * 4, "vectors": [[1, 2, 3, 4, 5]] * 4, "emotives": {"a": 1, "bbbbbbbb": 2}}
    assert small.post(f"/sessions/{sid}/observe", json=body).status_code == 200
    seq = {"observations": [{"strings": ["a"]}, {"strings": ["b"]}, {"strings": ["c"], "unique_id": "u" * 8}]}
    assert small.post(f"/sessions/{sid}/observe-sequence", json=seq).status_code == 200


def test_openapi_documents_the_limits(small):
    schemas = small.get("/schema/openapi.json").json()["components"]["schemas"]
    props = schemas["ObservationData"]["properties"]
    assert props["strings"]["maxItems"] == 4 and props["strings"]["items"]["maxLength"] == 8
    assert props["vectors"]["items"]["maxItems"] == 5 and props["emotives"]["maxProperties"] == 2
    assert schemas["ObserveSequence"]["properties"]["observations"]["maxItems"] == 3


def test_oversized_body_is_413_saying_what_the_limit_is(small):
    sid = _session(small)
    expected = {"detail": "Request body too large: the limit is 4096 bytes (KATO_MAX_REQUEST_BYTES)"}
    big = json.dumps({"strings": ["x"] * 3000}).encode()
    resp = small.post(f"/sessions/{sid}/observe", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json() == expected

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        for _ in range(10):
            yield b" " * 1000

    assert small.post(f"/sessions/{sid}/observe", content=chunks()).status_code == 413
    assert small.post("/sessions", content=big).status_code == 413
    assert small.post("/kb/import", content=big).status_code == 413
    assert _time(small, sid) == 0


def test_oversized_body_is_413_from_a_real_server(start_server):
    server = start_server({"KATO_MAX_REQUEST_BYTES": "2048"})
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        sid = http.post("/sessions", json={"node_id": "big"}).json()["session_id"]
        resp = http.post(f"/sessions/{sid}/observe", json={"strings": ["y" * 5000]})
        assert resp.status_code == 413 and "2048 bytes" in resp.json()["detail"]
        assert http.post(f"/sessions/{sid}/observe", json={"strings": ["fine"]}).json()["time"] == 1


@pytest.mark.parametrize("raw, loc", [
    (b'{"metadata": {"deep": ' + b"[" * 1900 + b"]" * 1900 + b"}}", ["body"]),
    (b'{"metadata": ' + b"[" * 1900 + b"]" * 1900 + b"}", ["body", "metadata"]),
    (b'{"emotives": {"joy": 1e400}}', ["body", "emotives", "joy"]),
    (b'{"vectors": [[1, -1e999]]}', ["body", "vectors", 0, 1]),
    (b'{"strings": ["\\ud800"]}', ["body"]),
    (b"\xff\xfe{}", ["body"]),
    (b'{"metadata": {"n": {"deep": [1, 3198615400761971932062023680]}}}', ["body", "metadata", "n"]),
    (b'{"metadata": {"n": -9223372036854775809}}', ["body", "metadata", "n"]),
], ids=["nesting-bomb-in-metadata", "nesting-bomb-for-an-object", "number-beyond-a-double", "minus-infinity",
        "lone-surrogate", "not-utf8", "integer-wider-than-64-bits", "integer-below-int64"])
def test_hostile_json_is_422(small, raw, loc):
    sid = _session(small)
    resp = small.post(f"/sessions/{sid}/observe", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == loc


def test_metadata_integers_at_the_64_bit_edges_are_learned(small):
    sid = _session(small)
    body = {"strings": ["a"], "metadata": {"lo": -(2**63), "hi": 2**64 - 1}}
    assert small.post(f"/sessions/{sid}/observe", json=body).status_code == 200
    assert small.post(f"/sessions/{sid}/observe", json={"strings": ["b"]}).status_code == 200
    name = small.post(f"/sessions/{sid}/learn").json()["pattern_name"]
    assert name.startswith("PTRN|")


@pytest.mark.parametrize("ttl", [31_536_001, 10**15, 10**30])
def test_a_ttl_beyond_one_year_is_422_not_500(small, ttl):
    resp = small.post("/sessions", json={"node_id": "ttl", "ttl_seconds": ttl})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "ttl_seconds"]
    sid = _session(small)
    resp = small.post(f"/sessions/{sid}/extend", params={"ttl_seconds": ttl})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", "ttl_seconds"]
    assert small.get(f"/sessions/{sid}").status_code == 200


# ------------------------------------------------------------------ Hypothesis fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
_number = st.integers(-10**6, 10**6) | st.floats() | st.sampled_from(["0.5", "1", "nan", "x", True, None])
_symbol = st.text(max_size=12) | _json
_observation = st.fixed_dictionaries({}, optional={
    "strings": st.lists(_symbol, max_size=6) | _json,
    "vectors": st.lists(st.lists(_number, max_size=7) | _json, max_size=6) | _json,
    "emotives": st.dictionaries(st.text(max_size=12), _number, max_size=4) | _json,
    "metadata": st.dictionaries(st.text(max_size=10), _json, max_size=4) | _json,
    "unique_id": _json,
}) | _json
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _post(client, path: str, body):
    # json.dumps, not httpx's json=: infinities and NaN go out as the (invalid) tokens
    # Infinity/NaN, which a hostile client may send.
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def _assert_no_server_error(client, sid: str, before: int, resp) -> None:
    assert resp.status_code < 500, resp.text
    assert resp.status_code in (200, 400, 413, 422), resp.text
    if resp.status_code != 200:
        assert _time(client, sid) == before   # a refused body changed nothing


@_FUZZ
@given(body=_observation)
def test_fuzzed_observation_bodies_never_answer_a_server_error(small, body):
    sid = _session(small)
    resp = _post(small, f"/sessions/{sid}/observe", body)
    _assert_no_server_error(small, sid, 0, resp)


@_FUZZ
@given(items=st.lists(_observation, max_size=5) | _json, flags=st.dictionaries(
    st.sampled_from(["learn_after_each", "learn_at_end", "clear_stm_between"]), _json | st.booleans()))
def test_fuzzed_sequence_bodies_never_answer_a_server_error(small, items, flags):
    sid = _session(small)
    resp = _post(small, f"/sessions/{sid}/observe-sequence", {"observations": items, **flags})
    assert resp.status_code < 500, resp.text
    assert resp.status_code in (200, 400, 422), resp.text


@_FUZZ
@given(raw=st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode()[:-1]))
def test_fuzzed_raw_bytes_never_answer_a_server_error(small, raw):
    sid = _session(small)
    for path in (f"/sessions/{sid}/observe", f"/sessions/{sid}/observe-sequence", "/sessions",
                 f"/sessions/{sid}/config"):
        resp = small.post(path, content=raw, headers={"content-type": "application/json"})
        assert resp.status_code < 500, (path, resp.text)
    assert _time(small, sid) in (0, 1)
