"""A state write that fails (a full disk) is logged and retried; the service keeps serving."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow


def test_a_failing_state_write_leaves_the_service_serving(make_ctl):
    ctl = make_ctl()
    ctl.run("start", check=True)
    before, code = ctl.status()
    assert code == 0, before
    sup, worker = before["supervisor_pid"], before["worker_pid"]
    state = ctl.home / "run" / "state.json"
    try:
        # A directory where state.json goes: the rename onto it fails, even for root.
        state.unlink()
        state.mkdir()
        os.kill(worker, signal.SIGKILL)  # a crash: every transition after it writes the state
        ctl.wait_for(lambda: "state write failed" in ctl.supervisor_log(), timeout=30,
                     what="the failed write in the log")  # fmt: skip
        # Restarted and serving, with the supervisor in charge.
        ctl.wait_for(lambda: _healthy(ctl.url), timeout=30, what="the restarted worker")
        assert psutil.pid_exists(sup) and psutil.Process(sup).status() != psutil.STATUS_ZOMBIE
        assert "supervisor failed" not in ctl.supervisor_log()
        # Once writes work again the state catches up, by itself.
        state.rmdir()
        ctl.wait_for(state.is_file, timeout=30, what="the retried write")
        after, code = ctl.status()
        assert code == 0 and after["supervisor_pid"] == sup and after["restarts"] >= 1
        assert after["worker_pid"] != worker
        assert "state written again" in ctl.supervisor_log()
    finally:
        if state.is_dir():
            state.rmdir()  # the fixture's `stop` then finds the supervisor again


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
