"""`stop` that finds the supervisor without a readable state file or config, `start
--foreground` under the start limit, and `status` of a FATAL service."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess

import psutil
import pytest

from mlxctl import exit_codes

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def killed_afterwards(*pids: int):
    """Whatever the test's outcome, these processes (by pid, checked alive) end with it."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
    except psutil.NoSuchProcess:
        return True


def running(ctl) -> dict:
    ctl.run("start", check=True)
    status, code = ctl.status()
    assert code == 0, status
    return status


def right_after_a_state_write(ctl) -> None:
    # The daemon rewrites state.json every 5 s: act just after one, not just before.
    written = ctl.state_file()["updated_at"]
    ctl.wait_for(lambda: ctl.state_file()["updated_at"] != written, timeout=10, what="a write")


def test_stop_finds_the_supervisor_by_its_lock_when_the_state_file_is_corrupt(make_ctl):
    ctl = make_ctl()
    before = running(ctl)
    with killed_afterwards(before["supervisor_pid"], before["worker_pid"]):
        right_after_a_state_write(ctl)
        (ctl.home / "run" / "state.json").write_text('{"state": "RUNN')
        result = ctl.run("stop", "--timeout", "3")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("stopped"), result.stdout
        assert f"supervisor pid {before['supervisor_pid']}" in result.stdout
        assert gone(before["supervisor_pid"]) and gone(before["worker_pid"])
        assert ctl.status()[0]["state"] == "STOPPED"


def test_stop_stops_with_a_config_file_that_is_not_toml(make_ctl):
    ctl = make_ctl()
    before = running(ctl)
    with killed_afterwards(before["supervisor_pid"], before["worker_pid"]):
        config = ctl.home / "config.toml"
        config.write_text(config.read_text() + "\nport = = 3\n")
        result = ctl.run("stop")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("stopped"), result.stdout
        assert "not valid TOML" in result.stderr  # said, with the grace period it used
        assert gone(before["supervisor_pid"]) and gone(before["worker_pid"])


def failing_ctl(make_ctl):
    ctl = make_ctl(env={"FAKE_WORKER_EXIT_CODE": "7", "FAKE_WORKER_LOAD_SECONDS": "0.1"})
    ctl.run("config", "set", "restart.max_fast_failures", "0", check=True)
    for _ in range(3):  # restart.start_limit
        assert ctl.run("start").returncode == exit_codes.FAILURE
    return ctl


def test_start_foreground_obeys_the_start_limit(make_ctl):
    ctl = failing_ctl(make_ctl)
    began = ctl.popen("start", "--foreground", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = began.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        began.send_signal(signal.SIGINT)  # it ran the supervisor instead: stop it cleanly
        out, err = began.communicate(timeout=30)
        pytest.fail(f"start --foreground ran despite the start limit: {out!r} {err!r}")
    assert began.returncode == exit_codes.FAILURE
    assert b"starts ended FATAL" in err and b"reset-failed" in err


def test_status_of_a_fatal_service_shows_the_workers_last_lines(make_ctl):
    ctl = failing_ctl(make_ctl)
    shown = ctl.run("status")
    assert shown.returncode == exit_codes.NOT_RUNNING
    assert "FATAL" in shown.stdout
    assert "last lines of the worker log" in shown.stdout
    assert "fake worker: fatal error while loading" in shown.stdout
    report = json.loads(ctl.run("status", "--json").stdout)
    assert any("fatal error while loading" in line for line in report["log_tail"])
