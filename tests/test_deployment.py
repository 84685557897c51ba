"""Deployment files and operations scripts: compose files validate, the shell scripts
pass shellcheck, and start.sh / kato-manager.sh drive real local processes.

docker-compose and shellcheck are required (scripts/test.sh installs them): a
missing tool fails these tests. No Docker daemon is needed or used; without one,
the scripts must refuse clearly unless --local is given.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
START = ROOT / "start.sh"
MANAGER = ROOT / "kato-manager.sh"
KEY_A, KEY_B = "alpha-test-key", "beta-test-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shell_scripts() -> list[Path]:
    skip = {"build", "var", ".venv", ".git", "node_modules"}
    return sorted(p for p in ROOT.rglob("*.sh") if not skip.intersection(p.relative_to(ROOT).parts))


def test_every_compose_file_validates():
    files = sorted(ROOT.glob("docker-compose*.yml"))
    assert {f.name for f in files} >= {"docker-compose.yml", "docker-compose-multi.yml"}
    for file in files:
        out = subprocess.run(["docker-compose", "-f", str(file), "config", "-q"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{file.name}: {out.stderr}"


def _compose(name: str) -> dict:
    """The file as docker-compose resolves it (anchors, extends and defaults applied)."""
    out = subprocess.run(["docker-compose", "-f", name, "config"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return yaml.safe_load(out)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose-multi.yml"])
def test_compose_services_are_healthchecked_limited_rotated_and_ordered(name):
    config = _compose(name)
    services = config["services"]
    assert {"redis", "clickhouse", "qdrant", "kato"} <= set(services)
    assert {"redis-data", "clickhouse-data", "qdrant-data"} <= set(config["volumes"])
    for sname, service in services.items():
        assert service["networks"] == {"kato-network": None} or list(service["networks"]) == ["kato-network"], sname
        assert service["healthcheck"]["test"], sname
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "3"}, sname
        limits = service["deploy"]["resources"]["limits"]
        assert limits["cpus"] and limits["memory"], sname
        for dep, cond in service.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"}, (sname, dep)
    for store in ("redis", "clickhouse", "qdrant"):
        assert services["kato"]["depends_on"][store] == {"condition": "service_healthy"}
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    env = services["kato"]["environment"]
    assert env["KATO_STORAGE"] == "external" and env["CLICKHOUSE_HOST"] == "clickhouse"
    assert env["QDRANT_HOST"] == "qdrant" and env["REDIS_URL"].endswith("@redis:6379/0")


def test_multi_compose_has_processors_behind_nginx():
    services = _compose("docker-compose-multi.yml")["services"]
    by_id = {s["environment"].get("PROCESSOR_ID"): s for s in services.values() if "environment" in s}
    assert [p["published"] for p in by_id["sentiment"]["ports"]] == [8001]
    assert [p["published"] for p in by_id["classifier"]["ports"]] == [8002]
    names = {by_id[p]["environment"]["SERVICE_NAME"] for p in ("sentiment", "classifier", "primary")}
    assert len(names) == 3  # separate knowledge bases per processor
    assert services["kato"]["deploy"]["replicas"] >= 2 and "ports" not in services["kato"]
    assert services["nginx"]["depends_on"] == {"kato": {"condition": "service_healthy"}}
    conf = (ROOT / "deploy" / "nginx" / "kato.conf").read_text()
    assert "upstream kato_replicas" in conf and "proxy_pass http://kato_replicas" in conf
    assert "Upgrade" in conf  # /ws/events goes through the front too


def test_dockerfile_compiles_in_a_builder_and_runs_non_root_under_tini():
    """No Docker daemon here, so the image's structure is checked as text."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) == 2 and lines[stages[0]].endswith(" AS builder")
    builder, runtime = "\n".join(lines[stages[0]:stages[1]]), "\n".join(lines[stages[1]:])
    assert "build-essential" in builder and "pip wheel" in builder
    assert "build-essential" not in runtime and "gcc" not in runtime
    assert "COPY --from=builder /wheels" in runtime and "--no-index" in runtime
    assert "USER kato" in runtime and 'ENTRYPOINT ["/usr/bin/tini", "--"]' in runtime
    assert "HEALTHCHECK" in runtime and "http://127.0.0.1:8000/health" in runtime
    assert 'CMD ["kato", "serve"]' in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "var", "build", "**/*.so"} <= set(ignored) and "README.md" not in ignored


def test_shell_scripts_pass_shellcheck():
    scripts = _shell_scripts()
    assert {START, MANAGER, ROOT / "scripts" / "test.sh"} <= set(scripts)
    out = subprocess.run(["shellcheck", "-x", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def env(tmp_path):
    """Environment for the scripts: own state dir, this interpreter; every started process stopped after."""
    state = tmp_path / "instances"
    environ = {**os.environ, "KATO_STATE_DIR": str(state), "PYTHON": sys.executable}
    # The embedded default, whatever this shell names: no server storage, no key, no fixed port.
    for var in ("KATO_API_KEY", "KATO_LOCAL", "PROCESSOR_ID", "KATO_PORT", "KATO_DATA_DIR", "KATO_STORAGE",
                "SERVICE_NAME", "REDIS_URL", "REDIS_ENABLED", "CLICKHOUSE_HOST", "KATO_CLICKHOUSE_CHDB_PATH",
                "KATO_QDRANT_PATH"):
        environ.pop(var, None)
    yield environ
    subprocess.run([str(MANAGER), "--local", "stop", "--all"], env=environ, capture_output=True, timeout=60)
    for pid_file in state.glob("*/pid"):  # only what these tests started, by pid
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def run(env: dict, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _pid(env: dict, processor: str) -> int:
    return int((Path(env["KATO_STATE_DIR"]) / processor / "pid").read_text())


def _learn_and_predict(base: str, node: str, headers: dict | None = None) -> list:
    with httpx.Client(base_url=base, headers=headers or {}, timeout=10.0) as http:
        sid = http.post("/sessions", json={"node_id": node}).json()["session_id"]
        for strings in (["hello"], ["world"], ["foo", "bar"]):
            http.post(f"/sessions/{sid}/observe", json={"strings": strings, "emotives": {"joy": 1.5}})
        http.post(f"/sessions/{sid}/learn")
        http.post(f"/sessions/{sid}/observe", json={"strings": ["hello"]})
        return http.get(f"/sessions/{sid}/predictions").json()["predictions"]


def _predict(base: str, node: str, headers: dict | None = None) -> list:
    with httpx.Client(base_url=base, headers=headers or {}, timeout=10.0) as http:
        sid = http.post("/sessions", json={"node_id": node}).json()["session_id"]
        http.post(f"/sessions/{sid}/observe", json={"strings": ["hello"]})
        return http.get(f"/sessions/{sid}/predictions").json()["predictions"]


def test_without_docker_the_scripts_say_so_and_fail(env, tmp_path):
    # A daemon that is not there (the docker CLI may or may not be installed).
    no_daemon = {**env, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    # No docker command at all: a PATH with only what the scripts need before the check.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env"):
        (bin_dir / tool).symlink_to(subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                                                    text=True, check=True).stdout.strip())
    no_cli = {**env, "PATH": str(bin_dir)}
    daemon_reason = "not reachable" if shutil.which("docker") else "not installed"
    for environ, reason in ((no_daemon, daemon_reason), (no_cli, "not installed")):
        for args in ([START, "--id", "x"], [MANAGER, "list"], [MANAGER, "status"], [MANAGER, "stop", "--all"],
                     [MANAGER, "build"], [MANAGER, "backup"]):
            out = run(environ, "bash", *args)
            assert out.returncode == 3, (args, out.stdout, out.stderr)
            assert "Docker is not available" in out.stderr and reason in out.stderr, out.stderr
            assert "--local" in out.stderr
    assert not Path(env["KATO_STATE_DIR"]).exists()  # nothing was started


def test_local_processors_start_list_status_backup_restart_stop(env):
    p1, p2 = _free_port(), _free_port()
    started = run(env, START, "--local", "--id", "alpha", "--name", "Alpha", "--port", p1, "--log-level", "warning",
                  "--max-predictions", "7", "--recall-threshold", "0.25", "--persistence", "3",
                  "--max-seq-length", "0", "--indexer-type", "VI", "--stm-mode", "CLEAR", "--api-key", KEY_A)
    assert started.returncode == 0, started.stderr
    assert f"running on http://127.0.0.1:{p1}" in started.stdout
    # beta's key comes from the environment (the documented way): restart must keep it.
    started = run({**env, "KATO_API_KEY": KEY_B}, MANAGER, "--local", "start", "--id", "beta", "--name", "Beta",
                  "--port", p2)
    assert started.returncode == 0, started.stderr
    alpha, beta = f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"
    auth_a, auth = {"X-API-Key": KEY_A}, {"Authorization": f"Bearer {KEY_B}"}

    # Two processes, two ids, each answering its /{id}/ping (no key needed for pings).
    assert httpx.get(f"{alpha}/alpha/ping").json()["id"] == "alpha"
    assert httpx.get(f"{alpha}/kato-api/ping").json()["processor_name"] == "Alpha"
    assert httpx.get(f"{beta}/beta/ping").json()["id"] == "beta"
    assert httpx.get(f"{beta}/kato-api/ping").json()["id"] == "beta"
    assert _pid(env, "alpha") != _pid(env, "beta") and _alive(_pid(env, "alpha")) and _alive(_pid(env, "beta"))

    # The engine options became the processor's defaults; the key guards beta.
    with httpx.Client(base_url=alpha, headers=auth_a) as http:
        sid = http.post("/sessions", json={"node_id": "n"}).json()["session_id"]
        config = http.get(f"/sessions/{sid}/config").json()["config"]
    assert (config["max_predictions"], config["recall_threshold"], config["persistence"]) == (7, 0.25, 3)
    assert httpx.get(f"{beta}/status").status_code == 401
    assert httpx.get(f"{beta}/status", headers=auth_a).status_code == 401
    assert httpx.get(f"{beta}/status", headers=auth).status_code == 200
    assert httpx.get(f"{alpha}/status").status_code == 401

    listed = run(env, MANAGER, "--local", "list")
    assert listed.returncode == 0
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["alpha"][1:5] == ["Alpha", str(p1), str(_pid(env, "alpha")), "running"]
    assert rows["beta"][1:5] == ["Beta", str(p2), str(_pid(env, "beta")), "running"]
    status = run(env, MANAGER, "--local", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"alpha: running, health healthy, {alpha}" in status.stdout
    assert f"beta: running, health healthy, {beta}" in status.stdout

    # Refusals: the same id twice, a busy port.
    again = run(env, START, "--local", "--id", "alpha", "--port", _free_port())
    assert again.returncode == 1 and "already running" in again.stderr
    busy = run(env, START, "--local", "--id", "gamma", "--port", p1)
    assert busy.returncode == 1 and f"port {p1} is already in use" in busy.stderr

    # Backup from alpha, restore into beta (the manager sends each one's own key): same predictions.
    expected = _learn_and_predict(alpha, "shared node", auth_a)
    assert expected
    file = Path(env["KATO_STATE_DIR"]) / "backup.json"
    backup = run(env, MANAGER, "--local", "backup", "--id", "alpha", "--node", "shared node", "--output", file)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(file.read_text())["pattern_count"] == 1
    needs_one = run(env, MANAGER, "--local", "backup", "--node", "shared node")
    assert needs_one.returncode == 1 and "say which with --id" in needs_one.stderr
    restore = run(env, MANAGER, "--local", "restore", "--name", "Beta", "--node", "shared node", "--input", file)
    assert restore.returncode == 0, restore.stderr
    assert '"status":"restored"' in restore.stdout
    assert _predict(beta, "shared node", auth) == _predict(alpha, "shared node", auth_a) == expected
    conflict = run(env, MANAGER, "--local", "restore", "--id", "beta", "--node", "shared node", "--input", file)
    assert conflict.returncode == 1 and "HTTP 409" in conflict.stderr

    # Stop one: the other keeps answering.
    alpha_pid = _pid(env, "alpha")
    stopped = run(env, MANAGER, "--local", "stop", "--id", "alpha")
    assert stopped.returncode == 0 and f"stopped alpha (pid {alpha_pid})" in stopped.stdout
    assert not _alive(alpha_pid)
    assert httpx.get(f"{beta}/beta/ping").status_code == 200
    rows = {line.split()[0]: line.split() for line in run(env, MANAGER, "--local", "list").stdout.splitlines()[1:]}
    assert rows["alpha"][3:5] == ["-", "stopped"] and rows["beta"][4] == "running"
    status = run(env, MANAGER, "--local", "status")
    assert status.returncode == 1 and "alpha: stopped" in status.stdout

    # Restart keeps the options (the key, the port) and the knowledge base.
    beta_pid = _pid(env, "beta")
    restarted = run(env, MANAGER, "--local", "restart", "--id", "beta")
    assert restarted.returncode == 0, restarted.stderr
    assert _pid(env, "beta") != beta_pid and not _alive(beta_pid)
    assert httpx.get(f"{beta}/status").status_code == 401
    assert _predict(beta, "shared node", auth) == expected
    shell = subprocess.run([str(MANAGER), "--local", "shell", "--id", "beta"], env={**env, "SHELL": "/bin/bash"},
                           input='echo "url=$KATO_URL id=$KATO_ID cwd=$PWD"\n', capture_output=True, text=True,
                           timeout=30)
    assert f"url={beta} id=beta cwd={Path(env['KATO_STATE_DIR']) / 'beta'}" in shell.stdout, shell.stderr
    logs = run(env, MANAGER, "--local", "logs", "--id", "beta", "-n", "500")
    assert logs.returncode == 0 and "start.sh --local beta" in logs.stdout

    # Stop everything; clean forgets stopped processors.
    beta_pid = _pid(env, "beta")
    assert run(env, MANAGER, "--local", "stop", "--all").returncode == 0
    assert not _alive(beta_pid)
    assert run(env, MANAGER, "--local", "status").returncode == 1
    assert run(env, MANAGER, "--local", "clean").returncode == 0
    assert run(env, MANAGER, "--local", "list").stdout.splitlines()[1:] == []


def test_a_setting_the_service_refuses_fails_the_start_and_leaves_nothing(env):
    out = run(env, START, "--local", "--id", "bad", "--port", _free_port(), "--persistence", "1000")
    assert out.returncode == 1
    assert "PERSISTENCE must be between 1 and 100" in out.stderr
    assert not (Path(env["KATO_STATE_DIR"]) / "bad" / "pid").exists()


def test_usage_errors_exit_2(env):
    for args in ([START, "--local", "--id", "bad id"], [START, "--local", "--port", "70000"],
                 [START, "--local", "--frobnicate"], [MANAGER, "--local", "frobnicate"],
                 [MANAGER, "--local", "stop", "--id", "a", "--name", "b"], [MANAGER, "--local", "list", "--id", "a"]):
        out = run(env, *args)
        assert out.returncode == 2, (args, out.stderr)
    assert run(env, START, "--help").returncode == 0
    assert "backup" in run(env, MANAGER, "--help").stdout
