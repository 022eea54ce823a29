"""Real processes: the `mlxctl` CLI, the detached supervisor and a fake worker (fast).

The fake worker (tests/fixtures_supervisor.py) starts in milliseconds, so these tests exercise
process handling (signals, identity, locks, restarts) without loading a model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pexpect
import psutil
import pytest

from mlxctl import exit_codes
from tests.fixtures_supervisor import MLXCTL

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_of(ctl) -> dict[str, list[int]]:
    """Supervisors and workers whose environment names this test's home."""
    found: dict[str, list[int]] = {"supervisor": [], "worker": []}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.environ().get("MLXCTL_HOME") != str(ctl.home):
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if "mlxctl.supervisor.daemon" in cmd:
            found["supervisor"].append(proc.pid)
        elif "fake_worker.py" in cmd or "-m server" in cmd:
            found["worker"].append(proc.pid)
    return found


def start(ctl, *args, env=None):
    result = ctl.run("start", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def running_status(ctl, **expect):
    """Wait (reading the state file: faster than the CLI) until RUNNING with `expect`."""

    def check():
        try:
            st = ctl.state_file()
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        worker = st.get("worker") or {}
        st["worker_pid"] = worker.get("pid")
        st["supervisor_pid"] = (st.get("supervisor") or {}).get("pid")
        if st["state"] == "RUNNING" and all(st.get(k) == v for k, v in expect.items()):
            return st
        return None

    return ctl.wait_for(check, timeout=30, what=f"RUNNING with {expect}")


def test_start_status_stop(make_ctl):
    # Loading takes longer than the liveness timeout: still not a hang.
    ctl = make_ctl(env={"FAKE_WORKER_LOAD_SECONDS": "2.5"})
    st, code = ctl.status()
    assert (st["state"], code) == ("STOPPED", exit_codes.NOT_RUNNING)
    result = start(ctl)
    assert f"export ANTHROPIC_BASE_URL={ctl.url}" in result.stdout
    assert f"export OPENAI_BASE_URL={ctl.url}/v1" in result.stdout
    st, code = ctl.status()
    assert code == 0
    for key in (
        "state",
        "worker_pid",
        "supervisor_pid",
        "restarts",
        "uptime_seconds",
        "url",
        "model",
        "release",
        "worker_rss_bytes",
        "system_memory",
        "cache",
    ):
        assert key in st
    assert st["state"] == "RUNNING"
    assert st["url"] == ctl.url
    assert st["model"] == ctl.model
    assert st["restarts"] == 0
    assert st["worker_rss_bytes"] > 0
    assert st["system_memory"]["total_bytes"] >= st["system_memory"]["used_bytes"] > 0
    assert st["health"] == "ok"
    assert httpx.get(f"{ctl.url}/health", trust_env=False).status_code == 200
    assert "worker entered RUNNING (pid" in ctl.supervisor_log()
    assert "EXITED" not in ctl.supervisor_log()
    # Already running: says so, exit 0, nothing new spawned.
    again = start(ctl)
    assert "already running" in again.stdout
    other = start(ctl, "--model", "some-other-model")
    assert "restart --model some-other-model" in other.stderr  # a note, on stderr
    assert processes_of(ctl) == {"supervisor": [st["supervisor_pid"]], "worker": [st["worker_pid"]]}
    # A human table too.
    table = ctl.run("status")
    assert table.returncode == 0 and "RUNNING" in table.stdout
    stopped = ctl.run("stop", check=True)
    assert "stopped" in stopped.stdout
    assert not alive(st["worker_pid"]) and not alive(st["supervisor_pid"])
    st, code = ctl.status()
    assert (st["state"], code) == ("STOPPED", exit_codes.NOT_RUNNING)
    assert "not running" in ctl.run("stop", check=True).stdout


def test_status_is_unknown_with_a_corrupt_state_file(fake_ctl):
    (fake_ctl.home / "run").mkdir()
    (fake_ctl.home / "run" / "state.json").write_text("{not json")
    st, code = fake_ctl.status()
    assert (st["state"], code) == ("UNKNOWN", exit_codes.UNKNOWN)


def test_stop_leaves_no_descendants(make_ctl):
    ctl = make_ctl(env={"FAKE_WORKER_CHILD": "1", "FAKE_WORKER_IGNORE_TERM": "1"})
    start(ctl)
    worker = psutil.Process(ctl.status()[0]["worker_pid"])
    tree = [worker.pid] + [p.pid for p in worker.children(recursive=True)]
    assert len(tree) == 3
    began = time.monotonic()
    result = ctl.run("stop", "--timeout", "1", check=True)
    assert time.monotonic() - began < 10
    assert not any(alive(pid) for pid in tree), result.stdout
    assert "sending SIGKILL" in ctl.supervisor_log()


def test_worker_dying_while_loading_fails_start_with_its_exit_code(make_ctl):
    ctl = make_ctl(env={"FAKE_WORKER_EXIT_CODE": "7", "FAKE_WORKER_LOAD_SECONDS": "0.4"})
    result = ctl.run("start")
    assert result.returncode == exit_codes.FAILURE
    assert "code 7" in result.stderr
    assert "fatal error while loading" in result.stderr  # the log tail
    st, code = ctl.status()
    assert (st["state"], code) == ("FATAL", exit_codes.NOT_RUNNING)
    assert processes_of(ctl) == {"supervisor": [], "worker": []}


def test_sigkilled_worker_is_restarted_and_no_zombies_pile_up(fake_ctl):
    ctl = fake_ctl
    start(ctl)
    for round_ in range(1, 3):
        st = running_status(ctl, restarts=round_ - 1)
        os.kill(st["worker_pid"], signal.SIGKILL)
        st = running_status(ctl, restarts=round_)
    assert "exited unexpectedly (killed by SIGKILL)" in ctl.supervisor_log()
    children = psutil.Process(st["supervisor_pid"]).children()
    assert [c.pid for c in children] == [st["worker_pid"]]
    assert all(c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_sigstopped_worker_is_killed_and_restarted(fake_ctl):
    ctl = fake_ctl
    start(ctl)
    st = running_status(ctl)
    os.kill(st["worker_pid"], signal.SIGSTOP)
    new = running_status(ctl, restarts=1)
    assert new["worker_pid"] != st["worker_pid"]
    assert not alive(st["worker_pid"])
    assert "did not answer /health" in ctl.supervisor_log()


def test_sigkilled_supervisor_takes_its_worker_along(fake_ctl):
    ctl = fake_ctl
    start(ctl)
    st = ctl.status()[0]
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    ctl.wait_for(lambda: not alive(st["worker_pid"]), timeout=10, what="worker death")
    status, code = ctl.status()
    assert code == 3
    start(ctl)
    new = ctl.status()[0]
    assert len(processes_of(ctl)["worker"]) == 1
    assert new["worker_pid"] != st["worker_pid"]


def test_next_start_cleans_up_an_orphaned_worker(make_ctl):
    # A worker that ignores SIGTERM survives its supervisor's SIGKILL (PDEATHSIG is SIGTERM).
    ctl = make_ctl(env={"FAKE_WORKER_IGNORE_TERM": "1"})
    start(ctl)
    st = ctl.status()[0]
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    ctl.wait_for(lambda: not alive(st["supervisor_pid"]), timeout=5)
    time.sleep(0.5)
    assert alive(st["worker_pid"])
    status, code = ctl.status()
    assert (status["state"], code) == ("UNKNOWN", exit_codes.UNKNOWN)
    start(ctl)
    assert not alive(st["worker_pid"])
    assert len(processes_of(ctl)["worker"]) == 1
    assert "left by a dead supervisor" in ctl.supervisor_log()


def test_stale_state_file_never_signals_an_unrelated_process(fake_ctl):
    ctl = fake_ctl
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        create_time = psutil.Process(bystander.pid).create_time()
        (ctl.home / "run").mkdir()
        state = {
            "state": "RUNNING",
            # Same pid, other create time: the pid was reused.
            "supervisor": {"pid": bystander.pid, "create_time": create_time - 100, "nonce": "x"},
            # Same pid and create time, but not our nonce in its environment.
            "worker": {"pid": bystander.pid, "create_time": create_time, "nonce": "y"},
            "url": ctl.url,
        }
        (ctl.home / "run" / "state.json").write_text(json.dumps(state))
        st, code = ctl.status()
        assert code == 3 and st["worker_pid"] is None
        assert "not running" in ctl.run("stop", check=True).stdout
        start(ctl)
        ctl.run("stop", check=True)
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_ten_concurrent_starts_give_one_supervisor_and_one_worker(fake_ctl):
    ctl = fake_ctl
    starters = [
        ctl.popen("start", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(10)
    ]
    outputs = [p.communicate(timeout=120) for p in starters]
    assert [p.returncode for p in starters] == [0] * 10, outputs
    started = [out for out, _ in outputs if b"started" in out]
    assert len(started) == 1
    found = processes_of(ctl)
    assert len(found["supervisor"]) == 1 and len(found["worker"]) == 1
    assert ctl.status()[0]["worker_pid"] == found["worker"][0]


def test_port_in_use_fails_fast_naming_the_port(fake_ctl):
    ctl = fake_ctl
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ctl.port))
        sock.listen()
        began = time.monotonic()
        result = ctl.run("start")
        assert time.monotonic() - began < 10
    assert result.returncode == exit_codes.FAILURE
    assert f"port {ctl.port}" in result.stderr
    assert processes_of(ctl) == {"supervisor": [], "worker": []}


def test_logs_follow_shows_requests_survives_rotation_and_exits_130(make_ctl):
    ctl = make_ctl(log_max=2048)
    start(ctl)
    child = pexpect.spawn(
        MLXCTL,
        ["logs", "-f", "-n", "0"],
        env=ctl.env,
        cwd=str(ctl.home),
        timeout=20,
        encoding="utf-8",
    )
    try:
        child.expect("GET /health")  # following: the supervisor's probes show up
        httpx.get(f"{ctl.url}/first-request", trust_env=False)
        child.expect("GET /first-request")
        with httpx.Client(trust_env=False) as client:
            for index in range(150):  # > 2 KiB of log lines: at least one rotation
                client.get(f"{ctl.url}/filler-{index}")
        assert (ctl.home / "logs" / "worker.log.1").exists()
        httpx.get(f"{ctl.url}/after-rotation", trust_env=False)
        child.expect("GET /after-rotation")
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130
        assert "Traceback" not in (child.before or "")
    finally:
        child.close(force=True)
    assert len(list((ctl.home / "logs").glob("worker.log.*"))) <= 2  # bounded backups
    tail = ctl.run("logs", "-n", "20", check=True).stdout.splitlines()
    assert len(tail) == 20 and any("after-rotation" in line for line in tail)


def test_config_set_keeps_a_comment(fake_ctl):
    ctl = fake_ctl
    result = ctl.run("config", "set", "restart.backoff_max", "2.5", check=True)
    assert "2.5" in result.stdout
    text = (ctl.home / "config.toml").read_text()
    assert "# test config" in text and "backoff_max = 2.5" in text
    bad = ctl.run("config", "set", "port", "many")
    assert bad.returncode == exit_codes.FAILURE
    assert "'port'" in bad.stderr and "integer" in bad.stderr


def test_foreground_runs_until_ctrl_c(fake_ctl):
    ctl = fake_ctl
    child = pexpect.spawn(
        MLXCTL,
        ["start", "--foreground"],
        env=ctl.env,
        cwd=str(ctl.home),
        timeout=30,
        encoding="utf-8",
    )
    try:
        child.expect(r"worker entered RUNNING \(pid (\d+)\)")
        worker_pid = int(child.match.group(1))
        child.expect(f"export OPENAI_BASE_URL={ctl.url}/v1")
        assert ctl.status()[1] == 0
        child.sendintr()
        child.expect("worker entered STOPPED")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert not alive(worker_pid)
    finally:
        child.close(force=True)


def test_restart_replaces_the_worker_behind_the_same_supervisor(fake_ctl):
    ctl = fake_ctl
    start(ctl)
    before = running_status(ctl)
    result = ctl.run("restart", "--timeout", "2", check=True)
    assert "started" in result.stdout
    after = running_status(ctl)
    assert after["worker_pid"] != before["worker_pid"]
    # The supervisor serves the address (the front door): it stays, so the address never closes.
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert after["url"] == before["url"] and after["worker_port"] != before["worker_port"]
    ctl.wait_for(lambda: not alive(before["worker_pid"]), what="the replaced worker to stop")
    assert after["model"] == ctl.model
