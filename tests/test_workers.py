"""``kato serve --workers 2`` on the embedded default: one service behind one port.

A real two-worker server (subprocess, loopback). Each test opens connections until
it holds one to each worker (the kernel hands accepted connections to either
worker; /proc tells which process owns the server end of a connection), then
checks a cross-worker guarantee: a session made through one worker works through
the other, learns are visible at once everywhere and give the numbers one worker
gives, concurrent re-learns count exactly, one session's requests are serialised
across workers, sessions and patterns survive a restart, vectors work.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest

from bench.http import listeners
from tests.conftest import ServerProcess

WORKERS = {"KATO_WORKERS": "2"}


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry))
    return out


def _owner(client_port: int, pids: set[int]) -> int | None:
    """The process among ``pids`` holding the server end of the connection from ``client_port``."""
    inodes = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[int(target[8:-1])] = pid
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == client_port and int(fields[9]) in inodes:
            return inodes[int(fields[9])]
    return None


_OPEN: list["Conn"] = []


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    while _OPEN:
        _OPEN.pop().http.close()


class Conn:
    """One keep-alive connection (so one worker) to the server; closed after the test."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        _OPEN.append(self)
        self.http.connect()
        self.port = self.http.sock.getsockname()[1]

    def call(self, method: str, path: str, body=None, status: int = 200):
        self.http.request(method, path, body=None if body is None else json.dumps(body),
                          headers={"Content-Type": "application/json"})
        resp = self.http.getresponse()
        data = resp.read()
        assert resp.status == status, (method, path, resp.status, data[:300])
        return json.loads(data) if data else None


def _one_per_worker(server: ServerProcess) -> tuple[Conn, Conn]:
    """A connection to each of the two workers (a missing worker fails the test)."""
    deadline = time.monotonic() + 60
    while listeners(server.port) < 2:   # /health answered once the first worker was up
        assert time.monotonic() < deadline, "the second worker never listened"
        time.sleep(0.05)
    workers = _children(server.proc.pid)
    by_worker: dict[int, Conn] = {}
    spare = []
    for _ in range(64):
        conn = Conn(server.port)
        conn.call("GET", "/health")   # the connection is accepted by now
        owner = _owner(conn.port, workers)
        if owner is not None and owner not in by_worker:
            by_worker[owner] = conn
            if len(by_worker) == 2:
                break
        else:
            spare.append(conn)
    for conn in spare:
        conn.http.close()
    assert len(by_worker) == 2, f"connections reached only workers {sorted(by_worker)} of {sorted(workers)}"
    return tuple(by_worker.values())  # type: ignore[return-value]


@pytest.fixture
def two_workers(start_server):
    server = start_server(WORKERS)
    a, b = _one_per_worker(server)
    return server, a, b


EPISODES = [[["a"], ["b"], ["c"]], [["a"], ["b"], ["d"]], [["x", "y"], ["b"], ["c"]], [["a"], ["b"], ["c"]]]


def _train_alternating(conns, node: str) -> tuple[list, list]:
    """The same script as one-worker ``_train_one``, each request on the next connection."""
    turn = iter(range(10 ** 6))

    def pick():
        return conns[next(turn) % len(conns)]

    sid = pick().call("POST", "/sessions", {"node_id": node})["session_id"]
    names, observed = [], []
    for i, episode in enumerate(EPISODES):
        for strings in episode:
            observed.append(pick().call("POST", f"/sessions/{sid}/observe",
                                        {"strings": strings, "emotives": {"joy": float(i)}})["stm_length"])
        names.append(pick().call("POST", f"/sessions/{sid}/learn")["pattern_name"])
    pick().call("POST", f"/sessions/{sid}/observe", {"strings": ["a"]})
    pick().call("POST", f"/sessions/{sid}/observe", {"strings": ["b"]})
    return names, [observed, pick().call("GET", f"/sessions/{sid}/predictions")["predictions"]]


def test_a_session_and_its_learns_work_through_every_worker(two_workers, client):
    server, a, b = two_workers
    names, result = _train_alternating([a, b], "shared")
    # The same requests through one in-process worker give the same numbers (another
    # node: that app opens the same data directory).
    one_names, one_result = _train_alternating([client_conn(client)], "single")
    assert names == one_names and result == one_result
    # Learned through either worker, visible from both at once.
    for conn in (a, b):
        record = conn.call("GET", f"/pattern/{names[0][5:]}?node_id=shared")
        assert record["pattern"]["pattern"]["frequency"] == 2


def client_conn(client):
    """The TestClient behind the Conn.call interface."""

    class Adapter:
        def call(self, method, path, body=None, status=200):
            resp = client.request(method, path, json=body)
            assert resp.status_code == status, resp.text
            return resp.json()

    return Adapter()


def test_concurrent_relearns_from_both_workers_count_exactly(two_workers):
    server, a, b = two_workers
    rounds = 25
    extra = [_one_per_worker(server) for _ in range(2)]
    conns = [a, b] + [c for pair in extra for c in pair]
    sids = [conn.call("POST", "/sessions", {"node_id": "race"})["session_id"] for conn in conns]
    errors: list[BaseException] = []

    learned: list[str] = []

    def learner(conn: Conn, sid: str) -> None:
        try:
            for _ in range(rounds):
                conn.call("POST", f"/sessions/{sid}/observe", {"strings": ["p"]})
                conn.call("POST", f"/sessions/{sid}/observe", {"strings": ["q"]})
                learned.append(conn.call("POST", f"/sessions/{sid}/learn")["pattern_name"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=learner, args=pair) for pair in zip(conns, sids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(learned)) == 1 and len(learned) == len(conns) * rounds
    for conn in (a, b):
        assert conn.call("GET", f"/pattern/{learned[0][5:]}?node_id=race")["pattern"]["pattern"]["frequency"] == len(learned)


def test_one_session_is_serialised_across_workers(two_workers):
    server, a, b = two_workers
    sid = a.call("POST", "/sessions", {"node_id": "serial"})["session_id"]
    per_conn = 40
    errors: list[BaseException] = []

    def observer(conn: Conn, tag: str) -> None:
        try:
            for i in range(per_conn):
                conn.call("POST", f"/sessions/{sid}/observe", {"strings": [f"{tag}{i}"]})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=observer, args=(conn, tag)) for conn, tag in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # No observe lost to another worker's concurrent save: every one is in the STM, in per-worker order.
    stm = a.call("GET", f"/sessions/{sid}/stm")["stm"]
    assert len(stm) == 2 * per_conn and b.call("GET", f"/sessions/{sid}")["session_id"] == sid
    for tag in "ab":
        assert [ev[0] for ev in stm if ev[0].startswith(tag)] == [f"{tag}{i}" for i in range(per_conn)]


def test_sessions_do_not_see_each_other(two_workers):
    server, a, b = two_workers
    s1 = a.call("POST", "/sessions", {"node_id": "iso-1"})["session_id"]
    s2 = b.call("POST", "/sessions", {"node_id": "iso-2"})["session_id"]
    for strings in (["m"], ["n"]):
        b.call("POST", f"/sessions/{s1}/observe", {"strings": strings})
    a.call("POST", f"/sessions/{s1}/learn")
    assert a.call("GET", f"/sessions/{s2}/stm")["stm"] == []
    a.call("POST", f"/sessions/{s2}/observe", {"strings": ["m"]})
    b.call("POST", f"/sessions/{s2}/observe", {"strings": ["n"]})
    assert b.call("GET", f"/sessions/{s2}/predictions")["predictions"] == []   # node iso-2 learned nothing
    assert b.call("GET", "/symbols/stats?node_id=iso-2")["symbols"] == {}


def test_vectors_learned_through_one_worker_match_through_the_other(two_workers):
    server, a, b = two_workers
    sid = a.call("POST", "/sessions", {"node_id": "vec"})["session_id"]
    a.call("POST", f"/sessions/{sid}/observe", {"strings": ["hello"], "vectors": [[1.0, 0.0, 0.0]]})
    a.call("POST", f"/sessions/{sid}/observe", {"strings": ["world"], "vectors": [[0.0, 1.0, 0.0]]})
    name = a.call("POST", f"/sessions/{sid}/learn")["pattern_name"]
    learned = a.call("GET", f"/pattern/{name[5:]}?node_id=vec")["pattern"]["pattern"]["pattern_data"]
    vector_symbols = [s for event in learned for s in event if s.startswith("VCTR|")]
    assert len(vector_symbols) == 2
    # A nearby vector observed through the other worker finds the learned vector symbol.
    other = b.call("POST", "/sessions", {"node_id": "vec"})["session_id"]
    b.call("POST", f"/sessions/{other}/observe", {"strings": ["hello"], "vectors": [[0.9, 0.1, 0.0]]})
    stm = b.call("GET", f"/sessions/{other}/stm")["stm"]
    assert vector_symbols[0] in stm[0]


def test_a_restart_keeps_sessions_patterns_and_vectors(start_server):
    server = start_server(WORKERS)
    a, b = _one_per_worker(server)
    sid = a.call("POST", "/sessions", {"node_id": "durable"})["session_id"]
    b.call("POST", f"/sessions/{sid}/observe", {"strings": ["r"], "vectors": [[0.5, 0.5]]})
    a.call("POST", f"/sessions/{sid}/observe", {"strings": ["s"]})
    name = b.call("POST", f"/sessions/{sid}/learn")["pattern_name"]
    a.call("POST", f"/sessions/{sid}/observe", {"strings": ["r"]})
    before = a.call("GET", f"/pattern/{name[5:]}?node_id=durable")["pattern"]["pattern"]
    stm = b.call("GET", f"/sessions/{sid}/stm")["stm"]
    server.stop()

    again = start_server(WORKERS)
    c, d = _one_per_worker(again)
    for conn in (c, d):
        assert conn.call("GET", f"/pattern/{name[5:]}?node_id=durable")["pattern"]["pattern"] == before
        assert conn.call("GET", f"/sessions/{sid}/stm")["stm"] == stm
    d.call("POST", f"/sessions/{sid}/observe", {"strings": ["s"]})
    predictions = c.call("GET", f"/sessions/{sid}/predictions")["predictions"]
    assert [p["name"] for p in predictions] == [name.removeprefix("PTRN|")]
    other = c.call("POST", "/sessions", {"node_id": "durable"})["session_id"]
    c.call("POST", f"/sessions/{other}/observe", {"strings": [], "vectors": [[0.5, 0.5]]})
    assert c.call("GET", f"/sessions/{other}/stm")["stm"] == [[s for s in before["pattern_data"][0]
                                                               if s.startswith("VCTR|")]]


def test_workers_setting_is_checked():
    from web.settings import Settings, SettingsError

    assert Settings.from_env({"KATO_WORKERS": "3"}).workers == 3
    assert Settings.from_env({}).workers == 1
    for bad in ({"KATO_WORKERS": "0"}, {"KATO_WORKERS": "2", "KATO_DATA_DIR": ":memory:"}):
        with pytest.raises(SettingsError, match="KATO_WORKERS"):
            Settings.from_env(bad)


def test_a_worker_that_cannot_start_stops_the_others_and_fails_the_command(tmp_path):
    import subprocess
    import sys

    from tests.servers.redis_server import free_port

    data_dir = tmp_path / "a-file"
    data_dir.write_text("not a directory")   # every worker's start-up fails opening its stores
    proc = subprocess.run([sys.executable, "-m", "web.cli", "serve", "--workers", "2", "--host", "127.0.0.1",
                           "--port", str(free_port()), "--data-dir", str(data_dir)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, timeout=120)
    assert proc.returncode != 0, proc.stdout[-2000:]


def test_clear_all_through_one_worker_empties_the_node_in_every_worker(two_workers):
    server, a, b = two_workers
    sid = a.call("POST", "/sessions", {"node_id": "wipe"})["session_id"]
    for strings in (["u"], ["v"]):
        a.call("POST", f"/sessions/{sid}/observe", {"strings": strings, "vectors": [[1.0, 2.0]]})
    name = a.call("POST", f"/sessions/{sid}/learn")["pattern_name"][5:]
    assert b.call("GET", f"/pattern/{name}?node_id=wipe")["pattern"]["status"] == "okay"
    b.call("POST", f"/sessions/{sid}/clear-all")
    for conn in (a, b):
        assert conn.call("GET", f"/pattern/{name}?node_id=wipe")["pattern"]["status"] == "error"
        assert conn.call("GET", "/symbols/stats?node_id=wipe")["symbols"] == {}
    # Learning again after the clear counts from one, in both workers.
    for strings in (["u"], ["v"]):
        b.call("POST", f"/sessions/{sid}/observe", {"strings": strings})
    again = a.call("POST", f"/sessions/{sid}/learn")["pattern_name"][5:]
    for conn in (a, b):
        assert conn.call("GET", f"/pattern/{again}?node_id=wipe")["pattern"]["pattern"]["frequency"] == 1


def test_a_restore_through_one_worker_is_what_every_worker_serves(two_workers):
    server, a, b = two_workers
    sid = a.call("POST", "/sessions", {"node_id": "restore"})["session_id"]

    def learn(conn, events):
        for strings in events:
            conn.call("POST", f"/sessions/{sid}/observe", {"strings": strings})
        return conn.call("POST", f"/sessions/{sid}/learn")["pattern_name"][5:]

    kept = learn(a, [["k1"], ["k2"]])
    learn(b, [["k1"], ["k2"]])
    backup = a.call("GET", "/kb/export?node_id=restore")
    later = learn(b, [["l1"], ["l2"]])
    b.call("POST", "/kb/import?node_id=restore&replace=true", backup)
    for conn in (a, b):
        assert conn.call("GET", f"/pattern/{kept}?node_id=restore")["pattern"]["pattern"]["frequency"] == 2
        assert conn.call("GET", f"/pattern/{later}?node_id=restore")["pattern"]["status"] == "error"
    # Learns after the restore build on it in every worker.
    learn(a, [["k1"], ["k2"]])
    assert b.call("GET", f"/pattern/{kept}?node_id=restore")["pattern"]["pattern"]["frequency"] == 3


def test_a_vector_of_another_dimension_is_counted_not_logged(tmp_path):
    import asyncio

    from storage.sqlite import _VECTORS, LoggedVectorStore, SqlitePatternStore

    async def main() -> None:
        patterns = SqlitePatternStore(tmp_path / "patterns.sqlite3")
        vectors = LoggedVectorStore(patterns)
        kb = patterns.knowledge_base("kbd", vectors.index("kbd"))
        await patterns.rebuild(kb)
        index = vectors.index("kbd")
        index.upsert([("VCTR|a", [1.0, 0.0])])
        for _ in range(3):   # every learn that carries it again
            index.upsert([("VCTR|long", [1.0, 2.0, 3.0])])
        logged = patterns._db.execute("SELECT COUNT(*) FROM learn_log WHERE kb_id = ? AND kind = ?",
                                      ("kbd", _VECTORS)).fetchone()[0]
        assert logged == 1 and vectors.unindexed() == 3
        assert await vectors.points("kbd") == [("VCTR|a", [1.0, 0.0])]
        await patterns.close()

    asyncio.run(main())
