"""Real processes: what a hostile audit broke (issue 14), each reproduced with real signals."""

from __future__ import annotations

import os
import signal

import httpx
import pexpect
import psutil
import pytest

from mlxctl import exit_codes
from tests.e2e.test_supervisor_e2e import alive, processes_of, running_status, start
from tests.fixtures_supervisor import MLXCTL

pytestmark = pytest.mark.slow


def spam(ctl, lines: int, timeout: float = 20.0, url: str | None = None) -> int:
    return httpx.get(f"{url or ctl.url}/spam?lines={lines}", timeout=timeout).status_code


def test_deleting_the_live_worker_log_never_takes_the_service_down(make_ctl):
    ctl = make_ctl(log_max=4096)
    start(ctl)
    before = running_status(ctl)
    log = ctl.home / "logs" / "worker.log"
    log.unlink()
    for _ in range(5):  # far past the rotation size, and past a pipe's 64 KiB
        assert spam(ctl, 300) == 200
    ctl.wait_for(log.exists, timeout=10, what="worker.log recreated")
    after = running_status(ctl)
    assert (after["worker_pid"], after["restarts"]) == (before["worker_pid"], 0)
    assert alive(after["supervisor_pid"])
    assert "was removed; recreated" in ctl.supervisor_log()


def test_a_paused_supervisor_costs_log_lines_never_requests(fake_ctl):
    ctl = fake_ctl
    start(ctl)
    st = running_status(ctl)
    os.kill(st["supervisor_pid"], signal.SIGSTOP)
    try:
        # 300 KiB of output with nobody reading: a pipe would block the worker here. (Straight
        # to the worker: the front door is a thread of the paused supervisor.)
        assert spam(ctl, 3000, timeout=15, url=st["worker_url"]) == 200
    finally:
        os.kill(st["supervisor_pid"], signal.SIGCONT)
    assert "spam line 002999" in ctl.worker_log()
    assert running_status(ctl)["worker_pid"] == st["worker_pid"]


def test_the_real_worker_owns_its_log_and_recreates_it(make_ctl):
    # No command override: the worker gets --log-file and rotates/reopens the file itself.
    ctl = make_ctl(real=True, env={"MLXCTL_WORKER_COMMAND": ""}, log_max=4096)
    start(ctl)
    before = running_status(ctl)
    log = ctl.home / "logs" / "worker.log"
    log.unlink()
    ctl.wait_for(log.exists, timeout=10, what="the worker recreating its log")
    for _ in range(40):  # 404 lines in the access log, past the rotation size
        assert httpx.get(f"{ctl.url}/nothing-here" + "x" * 100, timeout=10).status_code == 404
    rotated = ctl.home / "logs" / "worker.log.1"
    ctl.wait_for(rotated.exists, timeout=10, what="a rotation")
    # Written after the deletion, so they are in files anyone can read.
    assert "/nothing-here" in log.read_text() + rotated.read_text()
    assert running_status(ctl)["worker_pid"] == before["worker_pid"]


def test_a_model_that_fails_to_load_is_a_failed_start_with_its_reason(make_ctl, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no_such_architecture"}')
    (broken / "model.safetensors").write_bytes(b"not a tensor file")
    ctl = make_ctl(real=True)
    result = ctl.run("start", "--model", str(broken), timeout=90)
    assert result.returncode == exit_codes.FAILURE, result.stdout + result.stderr
    assert "model failed to load" in result.stderr, result.stderr
    st, code = ctl.status()
    assert (st["state"], code) == ("FATAL", exit_codes.NOT_RUNNING)
    assert "model failed to load" in st["fatal_reason"]
    assert processes_of(ctl)["worker"] == []


def test_foreground_supervisor_survives_its_terminal_closing(fake_ctl):
    ctl = fake_ctl
    child = pexpect.spawn(
        MLXCTL, ["start", "--foreground"], env=ctl.env, cwd=str(ctl.home), timeout=30
    )
    child.expect(r"worker entered RUNNING \(pid (\d+)\)")
    first = int(child.match.group(1))
    child.expect("export OPENAI_BASE_URL")
    sup_pid = running_status(ctl)["supervisor_pid"]
    child.close(force=True)  # the terminal goes away: SIGHUP, then writes fail with EIO
    assert alive(sup_pid)
    os.kill(first, signal.SIGKILL)  # the next event the supervisor logs
    st = running_status(ctl, restarts=1)
    assert st["supervisor_pid"] == sup_pid and st["worker_pid"] != first
    assert "terminal" in ctl.supervisor_log()
    result = ctl.run("stop", check=True)
    assert not alive(sup_pid), result.stdout
    assert ctl.state_file()["state"] == "STOPPED"


def test_next_start_sweeps_the_whole_tree_of_a_sigkilled_supervisor(make_ctl):
    # The worker dies with its supervisor (PDEATHSIG); its children, one in its group and one in
    # a session of its own, do not.
    ctl = make_ctl(env={"FAKE_WORKER_CHILD": "1"})
    start(ctl)
    st = running_status(ctl)
    children = [p.pid for p in psutil.Process(st["worker_pid"]).children()]
    assert len(children) == 2
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    ctl.wait_for(lambda: not alive(st["worker_pid"]), timeout=10, what="the worker's death")
    assert all(alive(pid) for pid in children)
    start(ctl)
    assert not any(alive(pid) for pid in children)
    assert "left behind" in ctl.supervisor_log()


def test_a_worker_dying_before_it_is_ever_healthy_is_retried(make_ctl, tmp_path):
    ctl = make_ctl(env={"FAKE_WORKER_EXIT_ONCE": str(tmp_path / "died-once")})
    start(ctl)
    st = running_status(ctl, restarts=1)
    assert "exited while loading (code 9)" in st["last_exit"]["reason"]


def test_temp_files_of_killed_state_writes_are_cleaned(fake_ctl):
    ctl = fake_ctl
    run = ctl.home / "run"
    run.mkdir()
    stale, fresh = run / ".state.json.k1ll3d.tmp", run / ".state.json.wr1t1ng.tmp"
    for tmp in (stale, fresh):
        tmp.write_text('{"state": "RUN')
    os.utime(stale, (1, 1))  # left long ago by a write that was killed
    start(ctl)
    assert not stale.exists() and fresh.exists()  # a live writer's temp file is kept
    assert "left by a write that was killed" in ctl.supervisor_log()


def test_repeated_failed_starts_are_capped_until_reset_failed(make_ctl):
    ctl = make_ctl(env={"FAKE_WORKER_EXIT_CODE": "7", "FAKE_WORKER_LOAD_SECONDS": "0.1"})
    ctl.run("config", "set", "restart.max_fast_failures", "0", check=True)
    for _ in range(3):  # restart.start_limit
        assert ctl.run("start").returncode == exit_codes.FAILURE
    refused = ctl.run("start")
    assert refused.returncode == exit_codes.FAILURE
    assert "starts ended FATAL" in refused.stderr and "reset-failed" in refused.stderr
    assert processes_of(ctl) == {"supervisor": [], "worker": []}  # nothing was spawned
    reset = ctl.run("reset-failed", check=True)
    assert "3 failed starts forgotten" in reset.stdout and "FATAL cleared" in reset.stdout
    assert ctl.status()[0]["state"] == "STOPPED"
    again = ctl.run("start")
    assert again.returncode == exit_codes.FAILURE and "code 7" in again.stderr


def hanging_worker(make_ctl, **config):
    # Our own worker command (no override), whose generation thread blocks for good in a step.
    ctl = make_ctl(real=True, env={"MLXCTL_WORKER_COMMAND": "", "MLXCTL_TEST_HANG_AT_BEAT": "1"})
    for key, value in config.items():
        ctl.run("config", "set", f"restart.{key}", str(value), check=True)
    start(ctl)
    return ctl, running_status(ctl)


def test_a_stuck_generation_thread_is_dumped_killed_and_restarted(make_ctl):
    ctl, first = hanging_worker(make_ctl, progress_timeout=2)
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    # Answered by nobody until the kill cuts it off; the front door gives it to the restarted
    # worker once (stuck again, killed again), then says so.
    reply = httpx.post(f"{ctl.url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 502 and "went away" in reply.json()["error"]["message"]
    st = running_status(ctl, restarts=2)
    assert st["worker_pid"] != first["worker_pid"]
    assert "stuck: generation made no progress" in st["last_exit"]["reason"]
    assert "stuck: generation made no progress" in ctl.status()[0]["last_exit"]["reason"]
    log = ctl.worker_log()
    assert "most recent call first" in log and "watchdog.py" in log  # faulthandler's dump


def test_a_dead_generation_thread_fails_its_request_and_the_worker_is_restarted(make_ctl):
    # Test hook: the generation thread dies at its first beat, past every guard on it.
    ctl = make_ctl(real=True, env={"MLXCTL_WORKER_COMMAND": "", "MLXCTL_TEST_DIE_AT_BEAT": "1"})
    start(ctl)
    first = running_status(ctl)
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    r = httpx.post(f"{ctl.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 503, r.text  # at once, not after a timeout
    st = running_status(ctl, restarts=1)
    assert st["worker_pid"] != first["worker_pid"]
    assert "stuck: generation thread died: TestDeath" in st["last_exit"]["reason"]


def test_an_idle_worker_whose_canary_gets_no_token_is_restarted(make_ctl):
    ctl, first = hanging_worker(make_ctl, progress_timeout=0, canary_interval=1, canary_timeout=3)
    st = running_status(ctl, restarts=1)
    assert st["last_exit"]["reason"] == "canary failed: no reply within 3s"
    assert not alive(first["worker_pid"])


def test_past_the_soft_memory_limit_the_worker_sheds_its_ram_cache(fake_ctl):
    ctl = fake_ctl
    ctl.run("config", "set", "memory.soft_limit", "1024", check=True)
    start(ctl)
    ctl.wait_for(lambda: "POST /v1/cache/shed?budget_s=5" in ctl.worker_log(), timeout=15)
    # The state file (what `status` reads) catches up within its 5 s refresh.
    st = ctl.wait_for(lambda: (ctl.status()[0].get("memory_limits") or {}).get("sheds"), timeout=15)
    st, code = ctl.status()
    assert code == 0 and st["restarts"] == 0 and st["memory_limits"]["soft_bytes"] == 1024
    assert "past the soft limit" in ctl.supervisor_log()


def test_past_the_hard_memory_limit_the_worker_is_restarted_gracefully(fake_ctl):
    ctl = fake_ctl
    ctl.run("config", "set", "memory.hard_limit", str(1 << 20), check=True)
    start(ctl)
    st = running_status(ctl, restarts=1)
    assert "past the hard limit 1 MiB" in st["last_exit"]["reason"]
    assert "fake worker: SIGTERM, shutting down" in ctl.worker_log()  # graceful, not SIGKILL
    assert ctl.status()[0]["memory_limits"]["hard_bytes"] == 1 << 20
