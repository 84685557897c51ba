"""Observe, learn, predictions and the other per-session memory endpoints (api.md §2.2)."""

from __future__ import annotations

import pytest


def _observe(client, sid, *events, **extra):
    for strings in events:
        resp = client.post(f"/sessions/{sid}/observe", json={"strings": strings, **extra})
        assert resp.status_code == 200, resp.text
    return resp.json()


def test_observe_response(client, session):
    sid = session("n1")
    body = _observe(client, sid, ["b", "a"])
    assert list(body) == ["status", "session_id", "processor_id", "stm_length", "time", "unique_id",
                          "auto_learned_pattern"]
    assert body["status"] == "okay" and body["processor_id"] == "n1" and body["stm_length"] == 1
    assert body["time"] == 1 and body["unique_id"].startswith("obs-") and body["auto_learned_pattern"] is None
    assert client.get(f"/sessions/{sid}/stm").json() == {"stm": [["a", "b"]], "session_id": sid, "length": 1}


def test_empty_observation_and_lax_values(client, session):
    sid = session()
    body = client.post(f"/sessions/{sid}/observe", json={}).json()
    assert body["stm_length"] == 0 and body["time"] == 1
    resp = client.post(f"/sessions/{sid}/observe", json={"strings": ["x"], "emotives": {"joy": "0.5"},
                                                          "vectors": [[1, 2]], "unique_id": "ignored"})
    assert resp.status_code == 200 and resp.json()["unique_id"] != "ignored"
    percept = client.get(f"/sessions/{sid}/percept-data").json()["percept_data"]
    assert percept["emotives"] == {"joy": 0.5} and percept["vectors"] == [[1.0, 2.0]]


@pytest.mark.parametrize("body,loc", [
    ({"strings": [None]}, ["body", "strings", 0]),
    ({"strings": "abc"}, ["body", "strings"]),
    ({"vectors": "x"}, ["body", "vectors"]),
    ({"vectors": [[1, "a"]]}, ["body", "vectors", 0, 1]),
    ({"emotives": "x"}, ["body", "emotives"]),
    ({"emotives": {"joy": "high"}}, ["body", "emotives", "joy"]),
    ({"emotives": {"joy": "nan"}}, ["body", "emotives", "joy"]),
    ({"metadata": [1]}, ["body", "metadata"]),
])
def test_observe_validation_errors(client, session, body, loc):
    sid = session()
    resp = client.post(f"/sessions/{sid}/observe", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == loc
    assert client.get(f"/sessions/{sid}/stm").json()["length"] == 0


def test_unsummable_vectors_are_400_and_change_nothing(client, session):
    sid = session()
    resp = client.post(f"/sessions/{sid}/observe", json={"vectors": [[1, 2], [1, 2, 3]]})
    assert resp.status_code == 400
    assert resp.json()["detail"]["error"] == "VectorSumError"
    assert client.get(f"/sessions/{sid}/cognition-data").json()["cognition_data"]["time"] == 0


def test_vector_dimension_mismatch_is_accepted(client, session):
    sid = session("vec")
    for dim in (4, 16, 4):
        _observe(client, sid, ["x"], vectors=[[0.5] * dim])
        assert client.post(f"/sessions/{sid}/learn").status_code == 200


def test_learn_and_pattern(client, session):
    sid = session("learner")
    _observe(client, sid, ["a"], ["b"], ["c"])
    body = client.post(f"/sessions/{sid}/learn", json={}).json()
    name = body["pattern_name"]
    assert body["status"] == "learned" and name.startswith("PTRN|") and body["processor_id"] is None
    assert client.get(f"/sessions/{sid}/stm").json()["length"] == 0
    found = client.get(f"/pattern/{name.replace('|', '%7C')}", params={"node_id": "learner"}).json()
    assert found["node_id"] == "learner_kato"
    assert found["pattern"]["status"] == "okay"
    assert found["pattern"]["pattern"]["pattern_data"] == [["a"], ["b"], ["c"]]
    assert found["pattern"]["pattern"]["frequency"] == 1
    bare = client.get(f"/pattern/{name[5:]}", headers={"X-Node-ID": "learner"}).json()
    assert bare["pattern"]["pattern"]["name"] == name
    missing = client.get("/pattern/deadbeef", params={"node_id": "learner"})
    assert missing.status_code == 200
    assert missing.json()["pattern"] == {"status": "error", "message": "Pattern deadbeef not found"}


def test_learn_errors(client, session):
    sid = session()
    resp = client.post(f"/sessions/{sid}/learn")
    assert resp.status_code == 400 and resp.json() == {"detail": "Cannot learn from empty STM"}
    _observe(client, sid, ["only"])
    assert client.post(f"/sessions/{sid}/learn").json()["pattern_name"] == ""


def test_predictions(client, session):
    sid = session("p")
    _observe(client, sid, ["a"], ["b"], ["c"])
    client.post(f"/sessions/{sid}/learn")
    assert client.get(f"/sessions/{sid}/predictions").json()["predictions"] == []
    _observe(client, sid, ["a"], ["b"])
    body = client.get(f"/sessions/{sid}/predictions", params={"unique_id": "x"}).json()
    assert list(body) == ["predictions", "future_potentials", "session_id", "processor_id", "count", "time",
                          "unique_id"]
    assert body["count"] == 1 and body["predictions"][0]["future"] == [["c"]]
    assert body["predictions"][0]["similarity"] == 0.8
    assert body["future_potentials"][0]["future"] == [["c"]]
    cognition = client.get(f"/sessions/{sid}/cognition-data").json()["cognition_data"]
    assert list(cognition) == ["predictions", "emotives", "symbols", "command", "metadata", "path", "strings",
                               "vectors", "short_term_memory", "time"]
    assert cognition["predictions"] == body["predictions"] and cognition["symbols"] == ["a", "b"]


def test_single_symbol_predictions(client, session):
    sid = session("single")
    _observe(client, sid, ["hello"], ["world"])
    client.post(f"/sessions/{sid}/learn")
    _observe(client, sid, ["hello"])
    pred = client.get(f"/sessions/{sid}/predictions").json()["predictions"][0]
    assert pred["future"] == ["world"] and "type" not in pred


def test_percept_and_cognition_after_observe_and_clear(client, session):
    sid = session()
    assert client.get(f"/sessions/{sid}/percept-data").json()["percept_data"] == {}
    client.post(f"/sessions/{sid}/observe", json={"strings": ["z", "y"], "emotives": {"joy": 1.0},
                                                  "metadata": {"m": 1}})
    client.post(f"/sessions/{sid}/observe", json={"strings": ["x"], "emotives": {"joy": 0.0}})
    percept = client.get(f"/sessions/{sid}/percept-data").json()
    assert percept["percept_data"] == {"strings": ["x"], "vectors": [], "emotives": {"joy": 0.5}, "path": [],
                                       "metadata": {}}
    cognition = client.get(f"/sessions/{sid}/cognition-data").json()["cognition_data"]
    assert cognition["emotives"] == {"joy": 0.0} and cognition["time"] == 2
    assert client.post(f"/sessions/{sid}/clear-stm").json() == {"status": "cleared", "session_id": sid}
    assert client.get(f"/sessions/{sid}/percept-data").json()["percept_data"] == {}
    cognition = client.get(f"/sessions/{sid}/cognition-data").json()["cognition_data"]
    assert cognition["time"] == 0 and cognition["predictions"] == [] and cognition["short_term_memory"] == []


def test_clear_all_empties_the_node_only(client, session):
    a1, a2, b = session("node-a"), session("node-a"), session("node-b")
    for sid in (a1, b):
        _observe(client, sid, ["x"], ["y"])
        client.post(f"/sessions/{sid}/learn")
    _observe(client, a2, ["x"], ["y"])
    assert client.post(f"/sessions/{a1}/clear-all").json() == {"status": "cleared", "session_id": a1,
                                                                "scope": "all"}
    assert client.get(f"/sessions/{a2}/predictions").json()["predictions"] == []
    assert client.get(f"/sessions/{a2}/stm").json()["length"] == 2  # other session keeps its STM
    _observe(client, b, ["x"], ["y"])
    assert client.get(f"/sessions/{b}/predictions").json()["count"] == 1


def test_finalize_training(client, session):
    sid = session("fin")
    _observe(client, sid, ["a"], ["b"])
    client.post(f"/sessions/{sid}/learn")
    body = client.post(f"/sessions/{sid}/finalize-training").json()
    assert body["status"] == "completed" and body["patterns_processed"] == 1 and body["node_id"] == "fin"
    assert body["message"].startswith("Computed Shannon entropy and TF vectors for 1 patterns")


def test_observe_sequence(client, session):
    sid = session("seq")
    resp = client.post(f"/sessions/{sid}/observe-sequence", json={
        "observations": [{"strings": ["a"], "unique_id": "first"}, {"strings": ["b"]}, {"strings": ["c"]}],
        "learn_at_end": True})
    body = resp.json()
    assert body["status"] == "completed" and body["observations_processed"] == 3
    assert body["initial_stm_length"] == 0 and body["final_stm_length"] == 0
    assert [r["sequence_position"] for r in body["results"]] == [0, 1, 2]
    assert body["results"][0]["unique_id"] == "first" and body["results"][1]["unique_id"].startswith("seq-obs-")
    assert body["auto_learned_patterns"] == [body["final_learned_pattern"]]
    assert body["final_learned_pattern"].startswith("PTRN|") and body["isolated"] is False


def test_observe_sequence_options(client, session):
    sid = session("seq2")
    body = client.post(f"/sessions/{sid}/observe-sequence", json={
        "observations": [{"strings": ["a", "b"]}, {"strings": ["c"]}], "learn_after_each": True,
        "clear_stm_between": True}).json()
    assert body["isolated"] is True
    assert body["auto_learned_patterns"][0].startswith("PTRN|") and body["auto_learned_patterns"][1] == ""
    empty = client.post(f"/sessions/{sid}/observe-sequence", json={"observations": []}).json()
    assert empty["observations_processed"] == 0 and empty["results"] == []


def test_observe_sequence_errors(client, session):
    sid = session()
    resp = client.post(f"/sessions/{sid}/observe-sequence", json={"observations": "not_a_list"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "observations"]
    resp = client.post(f"/sessions/{sid}/observe-sequence", json={
        "observations": [{"strings": ["a"]}, {"vectors": [[1, 2], [1, 2, 3]]}]})
    assert resp.status_code == 400 and resp.json()["detail"]["observation_index"] == 1
    assert client.get(f"/sessions/{sid}/stm").json()["length"] == 0  # nothing of the batch saved


def test_auto_learn_is_persisted_and_reported(client, session):
    sid = session("auto", config={"max_pattern_length": 2})
    body = _observe(client, sid, ["a"], ["b"])
    assert body["auto_learned_pattern"].startswith("PTRN|") and body["stm_length"] == 0


def test_stm_is_capped_at_1000(client, session):
    sid = session("cap")
    body = client.post(f"/sessions/{sid}/observe-sequence", json={
        "observations": [{"strings": [f"s{i}"]} for i in range(1010)],
        "learn_at_end": False}).json()
    assert body["final_stm_length"] == 1010
    stm = client.get(f"/sessions/{sid}/stm").json()
    assert stm["length"] == 1000 and stm["stm"][-1] == ["s1009"]


def test_sessions_of_one_node_share_patterns_not_stm(client, session):
    s1, s2 = session("shared"), session("shared")
    _observe(client, s1, ["x"], ["y"], ["z"])
    assert client.get(f"/sessions/{s2}/stm").json()["length"] == 0
    client.post(f"/sessions/{s1}/learn")
    _observe(client, s2, ["x"], ["y"])
    assert client.get(f"/sessions/{s2}/predictions").json()["predictions"][0]["future"] == [["z"]]
    assert client.get(f"/sessions/{s1}/stm").json()["length"] == 0


def test_different_nodes_share_nothing(client, session):
    s1, s2 = session("left"), session("right")
    _observe(client, s1, ["x"], ["y"], ["z"])
    name = client.post(f"/sessions/{s1}/learn").json()["pattern_name"]
    _observe(client, s2, ["x"], ["y"])
    assert client.get(f"/sessions/{s2}/predictions").json()["predictions"] == []
    other = client.get(f"/pattern/{name[5:]}", params={"node_id": "right"}).json()
    assert other["pattern"]["status"] == "error"


def test_symbols_and_deprecated_stubs(client, session):
    sid = session("sym")
    client.post(f"/sessions/{sid}/observe", json={"strings": ["a"], "emotives": {"joy": 1.0}})
    client.post(f"/sessions/{sid}/observe", json={"strings": ["b"]})
    client.post(f"/sessions/{sid}/learn")
    headers = {"X-Node-ID": "sym"}
    assert client.get("/symbols/affinity", headers=headers).json()["affinities"]["a"] == {"joy": 1.0}
    assert client.get("/symbols/a/affinity", headers=headers).json()["affinity"] == {"joy": 1.0}
    assert client.get("/symbols/zzz/affinity", headers=headers).json()["affinity"] == {}
    stats = client.get("/symbols/stats", headers=headers).json()["symbols"]
    assert stats["a"] == {"name": "a", "frequency": 1, "pattern_member_frequency": 1}
    assert client.get("/percept-data", headers={"x-test-id": "abc"}).json()["node_id"] == "test_abc_kato"
    assert client.get("/cognition-data").json()["node_id"] == "default_node_kato"
