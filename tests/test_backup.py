"""Backup and restore of a knowledge base as one file (``/kb/export``, ``/kb/import``,
``kato backup`` / ``kato restore``): a round trip reproduces identical predictions."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
from litestar.testing import TestClient

from engine import EngineConfig, KnowledgeBase, Observation, SessionState
from storage.qdrant import QdrantStore
from storage.snapshot import KbBackup, load_snapshot, restore_backup, take_snapshot
from storage.sqlite import SqlitePatternStore
from web.app import create_app
from web.settings import Settings

NODE = "backup-node"
EPISODES = [
    (["a"], ["b"], ["c"]),
    (["a"], ["b"], ["d"]),
    (["x", "y"], ["z"]),
    (["a"], ["b"], ["c"]),  # a re-learn: frequency 2, merged emotive window
    (["a", "q"], ["b"], ["e"]),
]


def _train(client: TestClient, node: str = NODE, finalize_after: int = 3) -> str:
    """Learn EPISODES (emotives, metadata, two vectors) on ``node``; returns the session."""
    sid = client.post("/sessions", json={"node_id": node}).json()["session_id"]
    for i, episode in enumerate(EPISODES):
        for j, strings in enumerate(episode):
            body = {"strings": list(strings), "emotives": {"joy": float(i + j), "fear": -0.5 * i},
                    "metadata": {"episode": i, "step": j}}
            if j == 0 and i in (1, 4):
                body["vectors"] = [[float(i), 1.0, 0.5, -float(j)]]
            assert client.post(f"/sessions/{sid}/observe", json=body).status_code == 200
        assert client.post(f"/sessions/{sid}/learn").json()["pattern_name"].startswith("PTRN|")
        if i == finalize_after:
            assert client.post(f"/sessions/{sid}/finalize-training").status_code == 200
    return sid


def _probe(client: TestClient, node: str = NODE) -> dict:
    """Predictions for a few STMs (with affinity weighting), patterns and symbol tables."""
    sid = client.post("/sessions", json={"node_id": node}).json()["session_id"]
    out: dict = {}
    for k, stm in enumerate(([["a"], ["b"]], [["x"]], [["a", "q"], ["b"]], [["b"], ["nothing"]])):
        client.post(f"/sessions/{sid}/clear-stm")
        if k == 2:
            client.post(f"/sessions/{sid}/config", json={"affinity_emotive": "joy"})
        for event in stm:
            client.post(f"/sessions/{sid}/observe", json={"strings": event})
        out[f"predictions{k}"] = client.get(f"/sessions/{sid}/predictions").json()["predictions"]
    # A vector observation: neighbours come from the restored vector index.
    client.post(f"/sessions/{sid}/clear-stm")
    client.post(f"/sessions/{sid}/observe", json={"strings": ["a"], "vectors": [[1.0, 1.0, 0.5, 0.0]]})
    out["vector_stm"] = client.get(f"/sessions/{sid}/stm").json()["stm"]
    params = {"node_id": node}
    out["affinity"] = client.get("/symbols/affinity", params=params).json()["affinities"]
    out["stats"] = client.get("/symbols/stats", params=params).json()["symbols"]
    client.delete(f"/sessions/{sid}")
    return out


def _app(tmp_path, name: str) -> TestClient:
    return TestClient(create_app(Settings(data_dir=str(tmp_path / name), log_level="WARNING")))


def test_round_trip_into_a_fresh_server_reproduces_identical_predictions(tmp_path):
    with _app(tmp_path, "a") as source:
        _train(source)
        before = _probe(source)
        exported = source.get("/kb/export", params={"node_id": NODE})
        assert exported.status_code == 200
        assert exported.headers["content-disposition"] == 'attachment; filename="backup_node_kato.kato-kb.json"'
    backup = exported.json()
    assert backup["format"] == "kato-kb-backup" and backup["version"] == 1
    assert backup["pattern_count"] == 4 and len(backup["patterns"]) == 4
    assert backup["vector_count"] == len(backup["vectors"]) == 2
    assert sum(p.get("finalized") is not None for p in backup["patterns"]) == 3  # finalized after the 4th learn

    with _app(tmp_path, "b") as target:
        reply = target.post("/kb/import", params={"node_id": NODE}, content=exported.content)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"status": "restored", "node_id": NODE, "kb_id": "backup_node_kato",
                                "patterns": 4, "vectors": 2, "replaced": 0}
        after = _probe(target)
        assert after == before
        assert before["predictions0"] and before["predictions2"]  # the probe really predicts
        # Exporting the restored knowledge base gives the same content back.
        again = target.get("/kb/export", params={"node_id": NODE}).json()
    for key in ("patterns", "affinity", "vectors"):
        assert again[key] == backup[key]


def test_restored_knowledge_base_survives_a_restart_and_keeps_learning(tmp_path):
    with _app(tmp_path, "a") as source:
        _train(source)
        file = source.get("/kb/export", params={"node_id": NODE}).content
        sid = source.post("/sessions", json={"node_id": NODE}).json()["session_id"]
        for strings in (["a"], ["b"], ["c"]):  # the same re-learn on both sides
            source.post(f"/sessions/{sid}/observe", json={"strings": strings, "emotives": {"joy": 9.0}})
        source.post(f"/sessions/{sid}/learn")
        expected = _probe(source)
    with _app(tmp_path, "b") as target:
        assert target.post("/kb/import", params={"node_id": NODE}, content=file).status_code == 200
    with _app(tmp_path, "b") as target:  # a restart rebuilds from the stores
        sid = target.post("/sessions", json={"node_id": NODE}).json()["session_id"]
        for strings in (["a"], ["b"], ["c"]):
            target.post(f"/sessions/{sid}/observe", json={"strings": strings, "emotives": {"joy": 9.0}})
        target.post(f"/sessions/{sid}/learn")
        assert _probe(target) == expected


def test_import_into_a_node_that_learned_needs_replace(tmp_path):
    with _app(tmp_path, "a") as app:
        _train(app, node="other")
        file = app.get("/kb/export", params={"node_id": "other"}).content
        _train(app)  # NODE learned something of its own
        own = _probe(app)
        refused = app.post("/kb/import", params={"node_id": NODE}, content=file)
        assert refused.status_code == 409
        assert "replace=true" in refused.json()["detail"]
        assert _probe(app) == own  # untouched
        replaced = app.post("/kb/import", params={"node_id": NODE, "replace": "true"}, content=file)
        assert replaced.status_code == 200 and replaced.json()["replaced"] == 4
        assert _probe(app) == _probe(app, node="other")  # a clone of "other"


def test_export_of_a_node_that_never_learned_is_an_empty_backup(client):
    backup = client.get("/kb/export", headers={"x-node-id": "blank"}).json()
    assert backup["kb_id"] == "blank_kato" and backup["node_id"] == "blank"
    assert (backup["patterns"], backup["affinity"], backup["vectors"]) == ([], {}, [])


@pytest.mark.parametrize("edit, field", [
    (lambda b: b.update(format="something-else"), "format"),
    (lambda b: b.update(version=2), "version"),
    (lambda b: b["patterns"].pop(), "pattern_count"),
    (lambda b: b["patterns"][0]["pattern_data"][0].append("tampered"), "patterns[0].name"),
    (lambda b: b["patterns"].append(dict(b["patterns"][0])) or b.update(pattern_count=5), "patterns[4].name"),
    (lambda b: b["vectors"][0].update(vector=[]), "vectors[0]"),
])
def test_a_file_that_cannot_be_restored_is_422_and_changes_nothing(client, edit, field):
    _train(client)
    backup = client.get("/kb/export", params={"node_id": NODE}).json()
    before = _probe(client, node="target")
    edit(backup)
    reply = client.post("/kb/import", params={"node_id": "target"}, json=backup)
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"][0]["loc"] == ["body", field]
    assert _probe(client, node="target") == before


def test_not_json_is_422(client):
    reply = client.post("/kb/import", content=b"PK\x03\x04 not a backup")
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["type"] == "json_invalid"


def test_store_level_restore_works_through_the_protocols(tmp_path):
    """restore_backup + rebuild, without the web layer: the path every backend takes."""
    config = EngineConfig()
    patterns = SqlitePatternStore(tmp_path / "p.sqlite3")
    vectors = QdrantStore(path=None, backend="qdrant_local")
    kb = KnowledgeBase("kb", vectors=vectors.index("kb"))
    state = SessionState()
    for i, episode in enumerate(EPISODES):
        for strings in episode:
            kb.observe(state, Observation(strings=list(strings), emotives={"joy": float(i)}), config)
        kb.learn(state, config)
    kb.finalize()
    snap = take_snapshot(kb)
    backup = KbBackup.build("kb", "n", snap, [], "test")
    backup = msgspec.json.decode(msgspec.json.encode(backup), type=KbBackup)  # through the file format

    async def restore_and_rebuild() -> KnowledgeBase:
        await restore_backup(patterns, vectors, "copy", backup)
        copy = KnowledgeBase("copy", vectors=vectors.index("copy"))
        await patterns.rebuild(copy)
        return copy

    copy = asyncio.run(restore_and_rebuild())
    stm = [["a"], ["b"]]
    assert copy.predict(stm, config) == kb.predict(stm, config)
    assert take_snapshot(copy) == snap
    fresh = KnowledgeBase("fresh")
    load_snapshot(fresh, snap)
    assert fresh.predict(stm, config) == kb.predict(stm, config)
    asyncio.run(patterns.close())
    asyncio.run(vectors.close())


def test_cli_backup_and_restore_offline(tmp_path, monkeypatch, capsys):
    """``kato backup`` / ``kato restore`` on a stopped embedded instance's data dir."""
    from web.cli import main

    with _app(tmp_path, "a") as source:
        _train(source)
        expected = _probe(source)
    out = tmp_path / "kb.json"
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    assert main(["backup", "--data-dir", str(tmp_path / "a"), "--node", NODE, "--output", str(out)]) == 0
    assert json.loads(out.read_text())["pattern_count"] == 4
    assert main(["restore", "--data-dir", str(tmp_path / "b"), "--node", NODE, "--input", str(out)]) == 0
    assert "restored 4 patterns and 2 vectors" in capsys.readouterr().out
    # A second restore onto a node that now holds patterns needs --replace.
    assert main(["restore", "--data-dir", str(tmp_path / "b"), "--node", NODE, "--input", str(out)]) == 1
    assert "--replace" in capsys.readouterr().err
    with _app(tmp_path, "b") as target:
        assert _probe(target) == expected
